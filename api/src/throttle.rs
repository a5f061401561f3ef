//! Abuse limits: how many failed logins per account and per client address,
//! how many declined payments per card, and how many orders per customer, before
//! the next try answers 429 with `Retry-After`. Counted with `governor`'s keyed GCRA limiters, in this
//! process's memory (each gateway process counts on its own).
//!
//! Only failures count, so an honest user who logs in often is never held up:
//! each failure takes a cell of its key's quota; the failure that finds the
//! quota spent closes the key until the quota has a cell again, and every try
//! meanwhile answers 429 before any work is done.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `burst` cells at once, then one more every `period / burst`.
fn quota(burst: u32, period: Duration) -> Quota {
    let burst = NonZeroU32::new(burst.max(1)).unwrap();
    let per_cell = (period / burst.get()).max(Duration::from_micros(1));
    Quota::with_period(per_cell).unwrap().allow_burst(burst)
}

/// Failures of one kind per key, and the keys closed for now.
pub struct FailureLimit<K: Hash + Eq + Clone> {
    quota: DefaultKeyedRateLimiter<K>,
    closed: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLimit<K> {
    /// `burst` failures at once, then one more every `period / burst`.
    pub fn new(burst: u32, period: Duration) -> Self {
        FailureLimit {
            quota: RateLimiter::keyed(quota(burst, period)),
            closed: Mutex::new(HashMap::new()),
        }
    }

    /// How long `key` stays closed, if it is.
    pub fn closed_for(&self, key: &K) -> Option<Duration> {
        let mut closed = self.closed.lock().unwrap();
        let now = Instant::now();
        match closed.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                closed.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts one failure of `key`; closes it when its quota is spent.
    pub fn failed(&self, key: &K) {
        if let Err(not_until) = self.quota.check_key(key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut closed = self.closed.lock().unwrap();
            if closed.len() > 100_000 {
                // Bounded memory under a flood of distinct keys: forget the expired.
                let now = Instant::now();
                closed.retain(|_, until| *until > now);
                self.quota.retain_recent();
            }
            closed.insert(key.clone(), Instant::now() + wait);
        }
    }
}

/// A plain rate: every try takes a cell of its key's quota, and a try that
/// finds none left is refused (nothing is done).
pub struct RateLimit<K: Hash + Eq + Clone> {
    quota: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// `burst` at once, then one more every `period / burst`.
    pub fn new(burst: u32, period: Duration) -> Self {
        RateLimit {
            quota: RateLimiter::keyed(quota(burst, period)),
        }
    }

    /// Takes a cell for `key`, or says how long until one is back.
    pub fn try_take(&self, key: &K) -> Result<(), Duration> {
        self.quota
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Every limit of the gateway.
pub struct Throttles {
    pub login_account: FailureLimit<String>,
    pub login_address: FailureLimit<IpAddr>,
    pub declines_per_card: FailureLimit<String>,
    pub orders_per_customer: RateLimit<String>,
}

impl Throttles {
    pub fn new(cfg: &baedal_activities::Config) -> Self {
        let minute = Duration::from_secs(60);
        Throttles {
            login_account: FailureLimit::new(cfg.login_failures_per_account, minute),
            login_address: FailureLimit::new(cfg.login_failures_per_address, minute),
            declines_per_card: FailureLimit::new(cfg.declines_per_card, 10 * minute),
            orders_per_customer: RateLimit::new(cfg.orders_per_customer, 10 * minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_closes_after_its_failures_and_only_that_key() {
        let l = FailureLimit::new(3, Duration::from_secs(60));
        let (a, b) = ("a".to_string(), "b".to_string());
        for _ in 0..3 {
            assert_eq!(l.closed_for(&a), None);
            l.failed(&a);
        }
        // The quota is spent but not yet exceeded: the next failure closes it.
        assert_eq!(l.closed_for(&a), None);
        l.failed(&a);
        let wait = l.closed_for(&a).expect("closed");
        assert!(
            wait <= Duration::from_secs(20) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(l.closed_for(&b), None);
    }

    #[test]
    fn a_rate_refuses_past_its_burst_per_key() {
        let r = RateLimit::new(2, Duration::from_secs(600));
        let (a, b) = ("a".to_string(), "b".to_string());
        assert!(r.try_take(&a).is_ok());
        assert!(r.try_take(&a).is_ok());
        let wait = r.try_take(&a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(300),
            "{wait:?}"
        );
        assert!(r.try_take(&b).is_ok());
    }

    #[test]
    fn a_closed_key_opens_again_once_a_cell_is_back() {
        let l = FailureLimit::new(1, Duration::from_millis(50));
        let k = "k".to_string();
        l.failed(&k);
        l.failed(&k);
        assert!(l.closed_for(&k).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.closed_for(&k), None);
    }
}
