//! How fast one source may open connections: a token bucket per address, and one eight times
//! larger per /24 (IPv4) or /64 (IPv6) network, over SSH and VNC together.
//!
//! The admission pools bound how many connections wait at once, not how fast they come; each
//! new SSH connection costs the gateway a key exchange (an X25519 or ML-KEM operation and a
//! signature) before anything is known about it. A connection over the rate is closed as soon
//! as it is accepted, before any byte is read or written, so a flood costs an accept and a
//! close. An honest user opens one connection per `ssh` command; the default (10 a second, 20 at
//! once) leaves room for scripts that run many, and a user elsewhere is never affected.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::admission::Prefix;

/// Sources remembered at most, per table. A bucket that has refilled is the same as none, so
/// those go first when the table is full; if all are busy (a flood from more addresses than
/// this), the table starts afresh, which only lets each of those sources have its burst again.
const MAX_TRACKED: usize = 65_536;
/// A network's bucket is this many times an address's.
const PREFIX_FACTOR: f64 = 8.0;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    rate: f64,
    burst: f64,
    table: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, table: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key` at `now`, if it has one.
    fn take(&self, key: K, now: Instant) -> bool {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_TRACKED && !table.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            table.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
            if table.len() >= MAX_TRACKED {
                table.clear();
            }
        }
        let bucket = table.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The new-connection rate of every source.
pub(crate) struct RateLimit {
    addresses: Buckets<IpAddr>,
    networks: Buckets<Prefix>,
}

impl RateLimit {
    /// `per_second` new connections a second from one address, `burst` at once.
    pub(crate) fn new(per_second: f64, burst: f64) -> Self {
        Self {
            addresses: Buckets::new(per_second, burst),
            networks: Buckets::new(per_second * PREFIX_FACTOR, burst * PREFIX_FACTOR),
        }
    }

    /// Whether a new connection from `ip` is within the rate (and counts it).
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let (ip, now) = (ip.to_canonical(), Instant::now());
        // The network's token is taken only if the address has one: a flooding address must
        // not drain its neighbours' share.
        self.addresses.take(ip, now) && self.networks.take(Prefix::of(ip), now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_address_and_per_network() {
        let buckets = Buckets::new(10.0, 20.0);
        let start = Instant::now();
        assert_eq!((0..25).filter(|_| buckets.take(1u8, start)).count(), 20);
        // A tenth of a second later, one more.
        assert!(buckets.take(1, start + Duration::from_millis(100)));
        assert!(!buckets.take(1, start + Duration::from_millis(100)));
        // Another source is not affected.
        assert!(buckets.take(2, start));

        let limit = RateLimit::new(1.0, 2.0);
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        assert!(limit.allows(ip(1)) && limit.allows(ip(1)) && !limit.allows(ip(1)));
        // The network's share (16) runs out over many addresses of it.
        let allowed = (2..=40).flat_map(|a| [a, a]).filter(|&a| limit.allows(ip(a))).count();
        assert_eq!(allowed, 16 - 2);
        assert!(limit.allows(IpAddr::from([10, 0, 1, 1])));
    }

    #[test]
    fn the_table_stays_bounded() {
        let buckets = Buckets::new(1.0, 1.0);
        let now = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 10) {
            buckets.take(n, now);
        }
        assert!(buckets.tracked() <= MAX_TRACKED);
    }
}
