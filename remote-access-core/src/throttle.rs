//! Failed logins counted per key (a source prefix, a build's credential) with exponential
//! backoff.
//!
//! Credentials are random and long enough that guessing cannot succeed, but a guesser still
//! costs CPU and fills logs; and the platform should learn that someone is trying. After
//! `free` failures in a row, a key is blocked for `base`, doubling with each further failure up
//! to `max`. A key with no failure for `memory` is forgotten. Time is the monotonic clock, not
//! the authority's (which tests move by hand): backoff is about the attacker's real time.
//!
//! A failure may carry a tag (the build it was against). A success clears only the failures
//! with its own tag: a user who logs in to build A from an address must not wipe out what that
//! address's guesses against build B have earned it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys tracked at most; past it, the longest tracked one makes room (a flood of distinct keys must not grow memory without bound, nor switch counting off
/// for everyone else).
const MAX_TRACKED: usize = 65_536;
/// Tags remembered per key; failures beyond them still count but no success clears them.
const MAX_TAGS: usize = 4;

#[derive(Debug)]
pub(crate) struct Throttle<K, T = ()> {
    free: u32,
    base: Duration,
    max: Duration,
    memory: Duration,
    strikes: Mutex<Table<K, T>>,
}

/// The keys with failures, and the order they came in (to make room in).
#[derive(Debug)]
struct Table<K, T> {
    keys: HashMap<K, Strikes<T>>,
    /// Keys in the order they were added, each with the stamp it was added with; a key removed
    /// or added again since leaves a stale item here, skipped when it comes up.
    arrivals: std::collections::VecDeque<(K, u64)>,
    stamps: u64,
}

#[derive(Debug, Clone)]
struct Strikes<T> {
    stamp: u64,
    count: u32,
    last: Instant,
    /// How many of `count` each tag earned.
    tagged: Vec<(T, u32)>,
}

impl<T> Strikes<T> {
    fn blocked_until(&self, throttle_free: u32, base: Duration, max: Duration) -> Option<Instant> {
        let over = self.count.checked_sub(throttle_free)?;
        let backoff = base.saturating_mul(1u32 << over.min(20)).min(max);
        Some(self.last + backoff)
    }
}

impl<K: Hash + Eq + Clone, T: PartialEq + Clone> Throttle<K, T> {
    pub(crate) fn new(free: u32, base: Duration, max: Duration, memory: Duration) -> Self {
        let table = Table { keys: HashMap::new(), arrivals: Default::default(), stamps: 0 };
        Self { free, base, max, memory, strikes: Mutex::new(table) }
    }

    /// How long `key` is still blocked, if it is.
    pub(crate) fn blocked(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let until = table.keys.get(key)?.blocked_until(self.free, self.base, self.max)?;
        until.checked_duration_since(now).filter(|left| !left.is_zero())
    }

    /// Records a failure for `key`, against `tag` if known; returns its failures in a row and,
    /// once it is blocked, for how long.
    pub(crate) fn failed(&self, key: &K, tag: Option<&T>) -> (u32, Option<Duration>) {
        let now = Instant::now();
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let table = &mut *table;
        if !table.keys.contains_key(key) {
            // Full: the key that came first makes room (in constant time: a flood of keys must
            // not buy a scan of the table per failure).
            while table.keys.len() >= MAX_TRACKED {
                let Some((oldest, stamp)) = table.arrivals.pop_front() else { break };
                if table.keys.get(&oldest).is_some_and(|s| s.stamp == stamp) {
                    table.keys.remove(&oldest);
                }
            }
            table.stamps += 1;
            table.arrivals.push_back((key.clone(), table.stamps));
            if table.arrivals.len() > 2 * MAX_TRACKED {
                // Mostly stale items: keep only the live ones, in order.
                let keys = &table.keys;
                table.arrivals.retain(|(k, stamp)| keys.get(k).is_some_and(|s| s.stamp == *stamp));
            }
        }
        let stamp = table.stamps;
        let entry = table.keys.entry(key.clone()).or_insert(Strikes {
            stamp,
            count: 0,
            last: now,
            tagged: Vec::new(),
        });
        if now.duration_since(entry.last) >= self.memory {
            entry.count = 0;
            entry.tagged.clear();
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if let Some(tag) = tag {
            if let Some((_, n)) = entry.tagged.iter_mut().find(|(t, _)| t == tag) {
                *n = n.saturating_add(1);
            } else if entry.tagged.len() < MAX_TAGS {
                entry.tagged.push((tag.clone(), 1));
            }
        }
        let blocked = entry.blocked_until(self.free, self.base, self.max).map(|until| until - now);
        (entry.count, blocked)
    }

    /// A success for `tag` takes back the failures `key` earned against that tag, and only
    /// those.
    pub(crate) fn succeeded(&self, key: &K, tag: &T) {
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = table.keys.get_mut(key) else { return };
        if let Some(at) = entry.tagged.iter().position(|(t, _)| t == tag) {
            let (_, n) = entry.tagged.swap_remove(at);
            entry.count = entry.count.saturating_sub(n);
        }
        if entry.count == 0 {
            table.keys.remove(key);
        }
    }

    /// Makes `key`'s run what a shared count says: `count` failures, the last `ago` (0 forgets
    /// it). A fleet's count includes this process's own, so it replaces it; the tags stay, for
    /// when the shared count is out of reach again.
    pub(crate) fn set(&self, key: &K, count: u32, ago: Duration) {
        if count == 0 {
            self.forget(key);
            return;
        }
        let now = Instant::now();
        let last = now.checked_sub(ago).unwrap_or(now);
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.keys.get_mut(key) {
            entry.count = count;
            entry.last = last;
            return;
        }
        drop(table);
        // A new key: counted like a failure (making room if the table is full), then set.
        self.failed(key, None);
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.keys.get_mut(key) {
            entry.count = count;
            entry.last = last;
        }
    }

    /// `key`'s failures in a row and how long ago the last was, unless forgotten.
    pub(crate) fn strikes(&self, key: &K) -> Option<(u32, Duration)> {
        let table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let strikes = table.keys.get(key)?;
        let ago = strikes.last.elapsed();
        (ago < self.memory && strikes.count > 0).then_some((strikes.count, ago))
    }

    /// Forgets `key`'s failures altogether (a success of the key's owner itself).
    pub(crate) fn forget(&self, key: &K) {
        self.strikes.lock().unwrap_or_else(PoisonError::into_inner).keys.remove(key);
    }

    /// Keys tracked now (for tests and the gateway's counters).
    pub(crate) fn tracked(&self) -> usize {
        self.strikes.lock().unwrap_or_else(PoisonError::into_inner).keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_free_failures_and_doubles() {
        let throttle: Throttle<&str> =
            Throttle::new(2, Duration::from_secs(10), Duration::from_secs(25), Duration::from_secs(600));
        assert_eq!(throttle.failed(&"a", None), (1, None));
        assert!(throttle.blocked(&"a").is_none());
        let (count, first) = throttle.failed(&"a", None);
        assert_eq!(count, 2);
        assert_eq!(first, Some(Duration::from_secs(10)));
        assert!(throttle.blocked(&"a").is_some_and(|left| left <= Duration::from_secs(10)));
        assert_eq!(throttle.failed(&"a", None).1, Some(Duration::from_secs(20)));
        assert_eq!(throttle.failed(&"a", None).1, Some(Duration::from_secs(25)), "capped");
        assert!(throttle.blocked(&"b").is_none(), "per key");
        throttle.forget(&"a");
        assert!(throttle.blocked(&"a").is_none());
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn a_success_clears_only_its_own_tags_failures() {
        let throttle: Throttle<&str, &str> =
            Throttle::new(3, Duration::from_secs(10), Duration::from_secs(25), Duration::from_secs(600));
        throttle.failed(&"net", Some(&"build-b"));
        throttle.failed(&"net", Some(&"build-b"));
        throttle.failed(&"net", None); // an unknown user: nobody's success clears it
        assert!(throttle.blocked(&"net").is_some());
        throttle.succeeded(&"net", &"build-a");
        assert!(throttle.blocked(&"net").is_some(), "a success for A leaves B's failures");
        throttle.failed(&"net", Some(&"build-a"));
        throttle.succeeded(&"net", &"build-a");
        assert_eq!(throttle.failed(&"net", None).0, 4, "A's one failure was taken back, no more");
        throttle.succeeded(&"net", &"build-b");
        assert_eq!(throttle.failed(&"net", None).0, 3);
    }

    #[test]
    fn a_shared_count_replaces_the_local_one() {
        let throttle: Throttle<&str, &str> =
            Throttle::new(3, Duration::from_secs(10), Duration::from_secs(40), Duration::from_secs(600));
        throttle.failed(&"net", Some(&"a"));
        throttle.set(&"net", 5, Duration::from_secs(15));
        assert_eq!(throttle.strikes(&"net").map(|(count, _)| count), Some(5));
        // Five failures block for 10 s doubled twice, from the last one 15 s ago.
        let left = throttle.blocked(&"net").expect("blocked by the shared count");
        assert!(left > Duration::from_secs(20) && left <= Duration::from_secs(25), "{left:?}");
        throttle.set(&"other", 4, Duration::from_secs(100));
        assert!(throttle.blocked(&"other").is_none(), "its 20 s have passed");
        assert_eq!(throttle.strikes(&"other").map(|(count, _)| count), Some(4));
        throttle.set(&"net", 0, Duration::ZERO);
        assert!(throttle.strikes(&"net").is_none());
        assert!(throttle.blocked(&"net").is_none());
    }

    #[test]
    fn a_flood_of_keys_is_bounded_and_still_counts_newcomers() {
        let throttle: Throttle<usize> =
            Throttle::new(1, Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(600));
        for key in 0..MAX_TRACKED + 10 {
            throttle.failed(&key, None);
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED);
        assert!(throttle.blocked(&0).is_none(), "the longest tracked made room");
        assert!(throttle.blocked(&(MAX_TRACKED + 9)).is_some(), "a newcomer is counted");
        for round in 0..3 {
            for key in 0..MAX_TRACKED {
                throttle.failed(&(key + round), None);
            }
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED);
        assert!(throttle.strikes.lock().unwrap().arrivals.len() <= 2 * MAX_TRACKED + 1);
    }
}
