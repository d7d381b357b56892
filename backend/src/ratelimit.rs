//! Fixed-window rate limits: per client address for anything a caller could
//! try to guess (consent tokens, admin tokens), per requesting server and per
//! address for unbinds.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// How a key is counted. Client addresses count per address for IPv4 and
/// per /64 for IPv6, since one IPv6 host commonly holds a whole /64.
pub trait LimitKey: Hash + Eq + Clone {
    fn counted(self) -> Self;
}

impl LimitKey for IpAddr {
    fn counted(self) -> Self {
        match self.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        }
    }
}

impl LimitKey for Option<IpAddr> {
    fn counted(self) -> Self {
        self.map(LimitKey::counted)
    }
}

impl LimitKey for String {
    fn counted(self) -> Self {
        self
    }
}

impl<A: LimitKey, B: LimitKey> LimitKey for (A, B) {
    fn counted(self) -> Self {
        (self.0.counted(), self.1.counted())
    }
}

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

impl<K: LimitKey> RateLimiter<K> {
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
        let client = client.counted();
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
        let client = client.clone().counted();
        let windows = self.windows.lock().ok()?;
        let (start, count) = windows.by_key.get(&client)?;
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
    /// Unbinds refused for their signature (401/403) per (server they claim
    /// to come from, client address): each may have cost a key fetch. Only
    /// requests that would fetch a key are held to it.
    pub unbind_failures: RateLimiter<(String, Option<IpAddr>)>,
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

    #[test]
    fn ipv6_clients_count_per_64_and_ipv4_per_address() {
        let limiter = RateLimiter::new(2, 1_000);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limiter.hit(one, 0).unwrap();
        limiter.hit(same_64, 0).unwrap();
        assert!(limiter.hit(one, 0).is_err(), "one /64, one allowance");
        assert!(limiter.is_limited(&same_64, 0).is_some());
        limiter.hit(other_64, 0).unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v4_next: IpAddr = "192.0.2.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        limiter.hit(v4, 0).unwrap();
        limiter.hit(mapped, 0).unwrap();
        assert!(
            limiter.hit(v4, 0).is_err(),
            "IPv4 seen as IPv6 is the same client"
        );
        limiter.hit(v4_next, 0).unwrap();
    }
}
