/* Moves a process's wall clock by ASSENT_TEST_CLOCK_SKEW_SECONDS, for tests
 * of replicas whose clocks disagree: loaded with LD_PRELOAD, it wraps
 * clock_gettime for the real-time clocks. Monotonic clocks (timers,
 * timeouts) are left alone, as a skewed host's are. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static long skew;

__attribute__((constructor)) static void load(void) {
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    const char *seconds = getenv("ASSENT_TEST_CLOCK_SKEW_SECONDS");
    skew = seconds ? atol(seconds) : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int result = real_clock_gettime(id, ts);
    if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        ts->tv_sec += skew;
    }
    return result;
}
