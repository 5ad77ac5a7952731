//! Failed logins counted per key (a build, a source address) with exponential backoff.
//!
//! Credentials are random and long enough that guessing cannot succeed, but a guesser still
//! costs CPU and fills logs; and the platform should learn that someone is trying. After
//! `free` failures in a row, a key is blocked for `base`, doubling with each further failure up
//! to `max`. A key with no failure for `memory` is forgotten. Time is the monotonic clock, not
//! the authority's (which tests move by hand): backoff is about the attacker's real time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys tracked at most; past it, forgotten ones are pruned, then new keys go uncounted (a
/// flood of distinct keys must not grow memory without bound).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
pub(crate) struct Throttle<K> {
    free: u32,
    base: Duration,
    max: Duration,
    memory: Duration,
    strikes: Mutex<HashMap<K, Strikes>>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

impl Strikes {
    fn blocked_until(&self, throttle_free: u32, base: Duration, max: Duration) -> Option<Instant> {
        let over = self.count.checked_sub(throttle_free)?;
        let backoff = base.saturating_mul(1u32 << over.min(20)).min(max);
        Some(self.last + backoff)
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub(crate) fn new(free: u32, base: Duration, max: Duration, memory: Duration) -> Self {
        Self { free, base, max, memory, strikes: Mutex::new(HashMap::new()) }
    }

    /// How long `key` is still blocked, if it is.
    pub(crate) fn blocked(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let strikes = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let until = strikes.get(key)?.blocked_until(self.free, self.base, self.max)?;
        until.checked_duration_since(now).filter(|left| !left.is_zero())
    }

    /// Records a failure for `key`; returns its failures in a row and, once it is blocked, for
    /// how long.
    pub(crate) fn failed(&self, key: &K) -> (u32, Option<Duration>) {
        let now = Instant::now();
        let mut strikes = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        if strikes.len() >= MAX_TRACKED && !strikes.contains_key(key) {
            strikes.retain(|_, s| now.duration_since(s.last) < self.memory);
            if strikes.len() >= MAX_TRACKED {
                return (0, None);
            }
        }
        let entry = strikes.entry(key.clone()).or_insert(Strikes { count: 0, last: now });
        if now.duration_since(entry.last) >= self.memory {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let blocked = entry.blocked_until(self.free, self.base, self.max).map(|until| until - now);
        (entry.count, blocked)
    }

    /// A success ends the run of failures for `key`.
    pub(crate) fn succeeded(&self, key: &K) {
        self.strikes.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Keys tracked now (for tests and the gateway's counters).
    pub(crate) fn tracked(&self) -> usize {
        self.strikes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_free_failures_and_doubles() {
        let throttle =
            Throttle::new(2, Duration::from_secs(10), Duration::from_secs(25), Duration::from_secs(600));
        assert_eq!(throttle.failed(&"a"), (1, None));
        assert!(throttle.blocked(&"a").is_none());
        let (count, first) = throttle.failed(&"a");
        assert_eq!(count, 2);
        assert_eq!(first, Some(Duration::from_secs(10)));
        assert!(throttle.blocked(&"a").is_some_and(|left| left <= Duration::from_secs(10)));
        assert_eq!(throttle.failed(&"a").1, Some(Duration::from_secs(20)));
        assert_eq!(throttle.failed(&"a").1, Some(Duration::from_secs(25)), "capped");
        assert!(throttle.blocked(&"b").is_none(), "per key");
        throttle.succeeded(&"a");
        assert!(throttle.blocked(&"a").is_none());
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn a_flood_of_keys_is_bounded() {
        let throttle =
            Throttle::new(1, Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(600));
        for key in 0..MAX_TRACKED + 10 {
            throttle.failed(&key);
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED);
    }
}
