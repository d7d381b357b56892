//! Fixed-window rate limits: per client address for anything a caller could
//! try to guess (consent tokens, admin tokens), per requesting server and per
//! address for unbinds.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

pub struct RateLimiter<K = IpAddr> {
    limit: u32,
    window_ms: i64,
    windows: Mutex<Windows<K>>,
}

struct Windows<K> {
    by_key: HashMap<K, (i64, u32)>,
    /// Size at which stale windows are dropped next: doubles with the live
    /// entries, so pruning costs O(1) per hit on average.
    prune_at: usize,
}

/// Entries kept before stale windows are dropped.
const PRUNE_AT: usize = 10_000;

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(limit: u32, window_ms: i64) -> Self {
        RateLimiter {
            limit,
            window_ms,
            windows: Mutex::new(Windows {
                by_key: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// Counts one attempt by `client`; `Err(retry_after_ms)` when over the limit.
    pub fn hit(&self, client: K, now_ms: i64) -> Result<(), i64> {
        let mut windows = match self.windows.lock() {
            Ok(windows) => windows,
            Err(poisoned) => poisoned.into_inner(),
        };
        if windows.by_key.len() >= windows.prune_at {
            let window_ms = self.window_ms;
            windows
                .by_key
                .retain(|_, (start, _)| now_ms - *start < window_ms);
            windows.prune_at = (windows.by_key.len() * 2).max(PRUNE_AT);
        }
        let (start, count) = windows.by_key.entry(client).or_insert((now_ms, 0));
        if now_ms - *start >= self.window_ms {
            *start = now_ms;
            *count = 0;
        }
        if *count >= self.limit {
            return Err((*start + self.window_ms - now_ms).max(1));
        }
        *count += 1;
        Ok(())
    }

    /// Whether `client` is over the limit, without counting an attempt.
    pub fn is_limited(&self, client: &K, now_ms: i64) -> Option<i64> {
        let windows = self.windows.lock().ok()?;
        let (start, count) = windows.by_key.get(client)?;
        (now_ms - start < self.window_ms && *count >= self.limit)
            .then(|| (start + self.window_ms - now_ms).max(1))
    }
}

/// The limits the server applies.
pub struct Limits {
    /// Consent-token lookups per client address.
    pub consent: RateLimiter,
    /// Refused admin tokens per client address.
    pub admin_failures: RateLimiter,
    /// Unbinds refused for their signature (401/403) per client address:
    /// each may have cost a key fetch.
    pub unbind_failures: RateLimiter,
    /// Signed unbinds per requesting server. (New holds per address are
    /// counted in the database, which remembers every address anyway.)
    pub origin: RateLimiter<String>,
    /// Unbinds with a validation session per (requesting server the Matrix
    /// ID names, client address): nothing is verified about them before the
    /// identity server checks the session, so the server name alone would
    /// let anyone use up another server's allowance.
    pub owner_proven: RateLimiter<(String, Option<IpAddr>)>,
    /// The same per client address, whatever server it names: four times
    /// the per-server allowance.
    pub owner_proven_clients: RateLimiter<Option<IpAddr>>,
}

impl Limits {
    pub fn new(config: &crate::config::LimitsConfig) -> Self {
        Limits {
            consent: RateLimiter::new(60, 60_000),
            admin_failures: RateLimiter::new(10, 60_000),
            unbind_failures: RateLimiter::new(config.failed_unbinds_per_client_per_minute, 60_000),
            origin: RateLimiter::new(config.unbinds_per_origin_per_minute, 60_000),
            owner_proven: RateLimiter::new(config.owner_proven_per_server_per_minute, 60_000),
            owner_proven_clients: RateLimiter::new(
                config.owner_proven_per_server_per_minute.saturating_mul(4),
                60_000,
            ),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(&crate::config::LimitsConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_limit_waits_for_the_next_window_and_others_do_not() {
        let limiter = RateLimiter::new(3, 1_000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            limiter.hit(a, 100).unwrap();
        }
        assert_eq!(limiter.hit(a, 400), Err(700));
        assert_eq!(limiter.is_limited(&a, 400), Some(700));
        limiter.hit(b, 400).unwrap();
        assert_eq!(limiter.is_limited(&b, 400), None);
        limiter.hit(a, 1_100).unwrap();
        assert_eq!(limiter.is_limited(&a, 1_100), None);
    }
}
