//! Who may start a connection (SSH or VNC), what one build may hold, and what the gateway
//! holds right now.
//!
//! **Before authentication** a connection waits in a pool: one for SSH and one for VNC, so a
//! flood of one cannot fill the other. A pool is shared fairly rather than first come, first
//! served, because a full pool that refuses newcomers is a lock anyone can hold: each source
//! address, and each /24 (IPv4) or /64 (IPv6) prefix, has a share; a newcomer past its
//! address's or prefix's share replaces that address's (prefix's) oldest waiting connection,
//! and a newcomer to a full pool replaces the oldest connection of the prefix holding the most.
//! So whoever floods competes with themselves, and a user from anywhere else always gets a
//! slot; the connection they evict is one that has waited longest, which an honest client
//! (authenticating within a second or two) never is under a flood.
//!
//! **Failed logins** (and connections cut at the pre-auth or silence deadline) are counted per
//! prefix, tagged with what they were against (a username, a VNC port). Past
//! `failures_before_backoff` in a row, the prefix's new connections are closed at once for a
//! backoff that doubles with each further failure (1 s up to 5 min). A successful login takes
//! back only the failures against the same target: logging in to one's own build does not
//! clear guesses against another. Connections that just close (port scans, load balancers'
//! health checks) do not count.
//!
//! **After authentication** a build may hold at most `max_connections_per_build` user
//! connections and `max_channels_per_build` builder channels on this gateway: what one build's
//! user can make the gateway hold is bounded, whatever they do.
//!
//! The counts are what [`crate::GatewayStats`] reports, so tests and operators can see that
//! nothing is left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::GatewayOptions;
use super::rate_limit::RateLimit;
use crate::build::BuildId;
use crate::throttle::Throttle;

const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// A run of failures from a prefix is forgotten after this long without one.
const MEMORY: Duration = Duration::from_secs(15 * 60);
/// Usernames longer than this are nobody's; failures with them are not tagged.
const MAX_TAGGED_USERNAME: usize = 64;

/// What the gateway holds right now; every count returns to zero when its connections are
/// gone (but `evicted`, which only grows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GatewayStats {
    /// SSH connections being served (authenticated or not).
    pub ssh_connections: usize,
    /// VNC connections being served (in the handshake or spliced).
    pub vnc_connections: usize,
    /// Connections of either kind that have not authenticated yet.
    pub unauthenticated: usize,
    /// Connections to builders that SSH users opened (`direct-tcpip`).
    pub builder_channels: usize,
    /// Source prefixes with recent failed logins being remembered.
    pub addresses_with_failures: usize,
    /// Unauthenticated connections closed to make room for a newcomer, since the start.
    pub evicted: u64,
    /// New connections closed at once because their source opened them too fast
    /// (`new_connections_per_second`), since the start.
    pub rate_limited: u64,
}

/// The two pools of unauthenticated connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    Ssh,
    Vnc,
}

/// The share of the pools a source gets: its /24 (IPv4) or /64 (IPv6). An IPv4 address
/// written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Prefix(IpAddr);

impl Prefix {
    pub(crate) fn of(ip: IpAddr) -> Self {
        Self(match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        })
    }

    /// The key the store counts this network's failed logins under.
    pub(crate) fn run(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => format!("network:{v4}/24"),
            IpAddr::V6(v6) => format!("network:{v6}/64"),
        }
    }
}

/// What a failed login was against, so that a success takes back only its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An SSH username.
    User(String),
    /// A gateway VNC port (one session's).
    VncPort(u16),
}

impl Target {
    pub(crate) fn user(name: &str) -> Option<Self> {
        (name.len() <= MAX_TAGGED_USERNAME).then(|| Self::User(name.to_owned()))
    }

    /// The tag the store counts failures against this target under.
    pub(crate) fn tag(&self) -> String {
        match self {
            Self::User(name) => format!("user:{name}"),
            Self::VncPort(port) => format!("vnc:{port}"),
        }
    }
}

/// One connection waiting to authenticate.
struct Entry {
    ip: IpAddr,
    prefix: Prefix,
    evict: Arc<Notify>,
}

/// The unauthenticated connections of one kind, oldest first.
#[derive(Default)]
struct Waiters {
    by_age: BTreeMap<u64, Entry>,
    by_ip: HashMap<IpAddr, BTreeSet<u64>>,
    by_prefix: HashMap<Prefix, BTreeSet<u64>>,
}

impl Waiters {
    fn insert(&mut self, id: u64, entry: Entry) {
        self.by_ip.entry(entry.ip).or_default().insert(id);
        self.by_prefix.entry(entry.prefix).or_default().insert(id);
        self.by_age.insert(id, entry);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_age.remove(&id)?;
        forget(&mut self.by_ip, &entry.ip, id);
        forget(&mut self.by_prefix, &entry.prefix, id);
        Some(entry)
    }

    fn held_by_ip(&self, ip: &IpAddr) -> usize {
        self.by_ip.get(ip).map_or(0, BTreeSet::len)
    }

    fn held_by_prefix(&self, prefix: &Prefix) -> usize {
        self.by_prefix.get(prefix).map_or(0, BTreeSet::len)
    }

    /// Whom a newcomer to a full pool replaces: the oldest connection of the prefix that holds
    /// the most (of those, the one whose oldest has waited longest).
    fn victim(&self) -> Option<u64> {
        self.by_prefix
            .values()
            .filter_map(|ids| Some((ids.len(), ids.first().copied()?)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, oldest)| oldest)
    }
}

/// Removes `id` from `key`'s set, and the set once empty.
fn forget<K: std::hash::Hash + Eq>(sets: &mut HashMap<K, BTreeSet<u64>>, key: &K, id: u64) {
    if let Some(ids) = sets.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            sets.remove(key);
        }
    }
}

/// What one build holds on this gateway.
#[derive(Default, Clone, Copy)]
struct Load {
    connections: usize,
    channels: usize,
}

pub(crate) struct Admission {
    failures_before_backoff: u32,
    max_waiting: usize,
    max_per_ip: usize,
    max_per_prefix: usize,
    max_connections_per_build: usize,
    max_channels_per_build: usize,
    pools: [Mutex<Waiters>; 2],
    next_id: AtomicU64,
    evicted: AtomicU64,
    rate: RateLimit,
    rate_limited: AtomicU64,
    failures: Throttle<Prefix, Target>,
    builds: Mutex<HashMap<BuildId, Load>>,
    ssh: AtomicUsize,
    vnc: AtomicUsize,
    channels: AtomicUsize,
}

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    BackingOff,
    TooFast,
}

impl Refusal {
    /// A fixed code, for the metrics.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BackingOff => "backing_off",
            Self::TooFast => "too_fast",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BackingOff => "too many failed logins from this address's network; backing off",
            Self::TooFast => "new connections from this address (or its network) come too fast",
        })
    }
}

/// What a connection counts as while it is served.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Ssh,
    Vnc,
    Channel,
}

/// A connection waiting to authenticate: its slot is freed when this drops.
pub(crate) struct Waiting {
    admission: Arc<Admission>,
    pool: Pool,
    id: u64,
    evict: Arc<Notify>,
}

impl Waiting {
    /// Resolves once a newcomer has taken this connection's slot: close it.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Leaves the pool early (the connection authenticated): from now on nobody evicts it.
    pub(crate) fn leave(&self) {
        self.admission.pool(self.pool).remove(self.id);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.admission.pool(self.pool).remove(self.id);
    }
}

/// Counts one connection of a kind while it lives.
pub(crate) struct Counted {
    admission: Arc<Admission>,
    kind: Kind,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.admission.counter(self.kind).fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a build may hold at most on this gateway.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Held {
    Connection,
    Channel,
}

/// One connection or channel of a build, counted until it drops.
pub(crate) struct Holding {
    admission: Arc<Admission>,
    build_id: BuildId,
    what: Held,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut builds = self.admission.builds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = builds.get_mut(&self.build_id) {
            let count = match self.what {
                Held::Connection => &mut load.connections,
                Held::Channel => &mut load.channels,
            };
            *count = count.saturating_sub(1);
            if load.connections == 0 && load.channels == 0 {
                builds.remove(&self.build_id);
            }
        }
    }
}

impl Admission {
    pub(crate) fn new(options: &GatewayOptions) -> Self {
        let free = u32::try_from(options.failures_before_backoff).unwrap_or(u32::MAX);
        Self {
            failures_before_backoff: free,
            max_waiting: options.max_unauthenticated,
            max_per_ip: options.max_unauthenticated_per_ip,
            max_per_prefix: options.max_unauthenticated_per_prefix,
            max_connections_per_build: options.max_connections_per_build,
            max_channels_per_build: options.max_channels_per_build,
            pools: Default::default(),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            rate: RateLimit::new(
                f64::from(options.new_connections_per_second),
                f64::from(options.new_connections_burst),
            ),
            rate_limited: AtomicU64::new(0),
            failures: Throttle::new(free, BACKOFF.0, BACKOFF.1, MEMORY),
            builds: Mutex::new(HashMap::new()),
            ssh: AtomicUsize::new(0),
            vnc: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
        }
    }

    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Ssh => &self.ssh,
            Kind::Vnc => &self.vnc,
            Kind::Channel => &self.channels,
        }
    }

    fn pool(&self, pool: Pool) -> std::sync::MutexGuard<'_, Waiters> {
        let index = match pool {
            Pool::Ssh => 0,
            Pool::Vnc => 1,
        };
        self.pools[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection of `kind` until the guard drops.
    pub(crate) fn count(self: &Arc<Self>, kind: Kind) -> Counted {
        self.counter(kind).fetch_add(1, Ordering::SeqCst);
        Counted { admission: self.clone(), kind }
    }

    /// Lets a new connection from `ip` start authenticating, making room if it must (see the
    /// module docs); refused only when its source opens connections too fast, or while its
    /// prefix is backed off.
    pub(crate) fn admit(self: &Arc<Self>, pool: Pool, ip: IpAddr) -> Result<Waiting, Refusal> {
        let (ip, prefix) = (ip.to_canonical(), Prefix::of(ip));
        if !self.rate.allows(ip) {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooFast);
        }
        if self.failures.blocked(&prefix).is_some() {
            return Err(Refusal::BackingOff);
        }
        let mut waiters = self.pool(pool);
        let victim = if waiters.held_by_ip(&ip) >= self.max_per_ip {
            waiters.by_ip.get(&ip).and_then(|ids| ids.first().copied())
        } else if waiters.held_by_prefix(&prefix) >= self.max_per_prefix {
            waiters.by_prefix.get(&prefix).and_then(|ids| ids.first().copied())
        } else if waiters.by_age.len() >= self.max_waiting {
            waiters.victim()
        } else {
            None
        };
        if let Some(evicted) = victim.and_then(|id| waiters.remove(id)) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(ip = %evicted.ip, ?pool, "evicted the oldest unauthenticated connection for a newcomer");
            // Stored as a permit if the connection is not waiting on it yet.
            evicted.evict.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        waiters.insert(id, Entry { ip, prefix, evict: evict.clone() });
        Ok(Waiting { admission: self.clone(), pool, id, evict })
    }

    /// Whether `ip`'s network is backed off now. Checked again before each password or key is
    /// checked, not only when a connection arrives: a network that opened many connections
    /// before its failures were counted gets no guess checked from them either.
    pub(crate) fn backing_off(&self, ip: IpAddr) -> bool {
        self.failures.blocked(&Prefix::of(ip)).is_some()
    }

    /// Counts a failed login (or a connection cut for silence or slowness) from `ip`, against
    /// `target` when known, on this gateway (`gateway/failures.rs` then sets the fleet's count).
    pub(crate) fn failed(&self, ip: IpAddr, target: Option<&Target>) {
        let prefix = Prefix::of(ip);
        let (count, blocked) = self.failures.failed(&prefix, target);
        // Logged when the backoff starts and each time the run doubles after: a line per
        // failure would let a flood fill the logs.
        let over = count.saturating_sub(self.failures_before_backoff);
        if let Some(backoff) = blocked.filter(|_| over == 0 || over.is_power_of_two()) {
            tracing::info!(%ip, prefix = %prefix.0, count, ?backoff, "failed logins in a row from this network; backing off");
        }
    }

    /// A login from `ip` to `target` succeeded: the failures from its prefix against that
    /// target are taken back, and only those.
    pub(crate) fn succeeded(&self, ip: IpAddr, target: &Target) {
        self.failures.succeeded(&Prefix::of(ip), target);
    }

    /// Makes the run of `ip`'s network what the store counts: `(count, since the last)`, or
    /// none.
    pub(crate) fn set_failures(&self, ip: IpAddr, run: Option<(u32, Duration)>) {
        let (count, ago) = run.unwrap_or_default();
        self.failures.set(&Prefix::of(ip), count, ago);
    }

    /// Counts one connection or channel of `build_id`, or `None` if the build holds its
    /// maximum already.
    pub(crate) fn hold(self: &Arc<Self>, build_id: &BuildId, what: Held) -> Option<Holding> {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        let load = builds.entry(build_id.clone()).or_default();
        let (count, max) = match what {
            Held::Connection => (&mut load.connections, self.max_connections_per_build),
            Held::Channel => (&mut load.channels, self.max_channels_per_build),
        };
        if *count >= max {
            if load.connections == 0 && load.channels == 0 {
                builds.remove(build_id);
            }
            return None;
        }
        *count += 1;
        Some(Holding { admission: self.clone(), build_id: build_id.clone(), what })
    }

    /// The most a build may hold of `what`.
    pub(crate) fn max(&self, what: Held) -> usize {
        match what {
            Held::Connection => self.max_connections_per_build,
            Held::Channel => self.max_channels_per_build,
        }
    }

    pub(crate) fn stats(&self) -> GatewayStats {
        GatewayStats {
            ssh_connections: self.ssh.load(Ordering::SeqCst),
            vnc_connections: self.vnc.load(Ordering::SeqCst),
            unauthenticated: self.pool(Pool::Ssh).by_age.len() + self.pool(Pool::Vnc).by_age.len(),
            builder_channels: self.channels.load(Ordering::SeqCst),
            addresses_with_failures: self.failures.tracked(),
            evicted: self.evicted.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_ip: usize, per_prefix: usize) -> Arc<Admission> {
        let options = GatewayOptions {
            max_unauthenticated: max,
            max_unauthenticated_per_ip: per_ip,
            max_unauthenticated_per_prefix: per_prefix,
            failures_before_backoff: 3,
            ..GatewayOptions::default()
        };
        Arc::new(Admission::new(&options))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn is_evicted(waiting: &Waiting) -> bool {
        use std::future::Future;
        let mut evicted = std::pin::pin!(waiting.evicted());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        evicted.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_64() {
        assert_eq!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.2.250")));
        assert_ne!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.3.3")));
        assert_eq!(Prefix::of(ip("::ffff:10.1.2.3")), Prefix::of(ip("10.1.2.9")));
        assert_eq!(Prefix::of(ip("2001:db8:0:1::5")), Prefix::of(ip("2001:db8:0:1:ffff::1")));
        assert_ne!(Prefix::of(ip("2001:db8:0:1::5")), Prefix::of(ip("2001:db8:0:2::5")));
    }

    #[test]
    fn a_full_pool_evicts_the_oldest_of_the_biggest_holder_not_the_newcomer() {
        let admission = admission(6, 4, 4);
        let flood: Vec<Waiting> =
            (1..=4).map(|n| admission.admit(Pool::Ssh, ip(&format!("10.0.0.{n}"))).unwrap()).collect();
        let other: Vec<Waiting> =
            (1..=2).map(|n| admission.admit(Pool::Ssh, ip(&format!("10.0.1.{n}"))).unwrap()).collect();
        assert!(flood.iter().chain(&other).all(|w| !is_evicted(w)));
        // Full: a user from elsewhere gets in; the flood's oldest makes room.
        let user = admission.admit(Pool::Ssh, ip("192.0.2.7")).unwrap();
        assert!(is_evicted(&flood[0]));
        assert!(!flood[1..].iter().chain(&other).any(is_evicted));
        assert_eq!(admission.stats().unauthenticated, 6);
        assert_eq!(admission.stats().evicted, 1);
        // The flood going on evicts its own, never the user.
        let more: Vec<Waiting> =
            (0..8).map(|_| admission.admit(Pool::Ssh, ip("10.0.0.9")).unwrap()).collect();
        assert!(!is_evicted(&user));
        assert!(more.len() == 8 && admission.stats().unauthenticated <= 6);
    }

    #[test]
    fn shares_per_address_and_prefix_and_separate_pools() {
        let admission = admission(100, 2, 2);
        let a: Vec<Waiting> = (0..2).map(|_| admission.admit(Pool::Vnc, ip("10.0.0.1")).unwrap()).collect();
        let third = admission.admit(Pool::Vnc, ip("10.0.0.1")).unwrap();
        assert!(is_evicted(&a[0]), "past its address's share, an address replaces its own oldest");
        let neighbour = admission.admit(Pool::Vnc, ip("10.0.0.2")).unwrap();
        assert!(is_evicted(&a[1]), "past the prefix's share, the prefix's oldest goes");
        assert!(!is_evicted(&third) && !is_evicted(&neighbour));
        // The VNC flood holds nothing of the SSH pool.
        let ssh: Vec<Waiting> = (0..2).map(|_| admission.admit(Pool::Ssh, ip("10.0.0.1")).unwrap()).collect();
        assert!(!ssh.iter().any(is_evicted));
        drop((a, third, neighbour, ssh));
        assert_eq!(admission.stats().unauthenticated, 0);
    }

    #[test]
    fn backoff_is_per_prefix_and_a_success_takes_back_only_its_own() {
        let admission = admission(100, 10, 10);
        let target_b = Target::VncPort(5901);
        for _ in 0..3 {
            admission.failed(ip("10.0.0.1"), Some(&target_b));
        }
        assert_eq!(admission.admit(Pool::Ssh, ip("10.0.0.2")).err(), Some(Refusal::BackingOff));
        assert!(admission.admit(Pool::Ssh, ip("10.0.1.2")).is_ok(), "another /24");
        admission.succeeded(ip("10.0.0.3"), &Target::VncPort(5900));
        assert_eq!(admission.admit(Pool::Ssh, ip("10.0.0.2")).err(), Some(Refusal::BackingOff));
        admission.succeeded(ip("10.0.0.3"), &target_b);
        assert!(admission.admit(Pool::Ssh, ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn the_fleets_count_replaces_this_gateways() {
        let admission = admission(100, 10, 10);
        // One failure here, the fleet's third: backed off as if all three were here.
        admission.failed(ip("10.0.0.1"), None);
        admission.set_failures(ip("10.0.0.1"), Some((3, Duration::ZERO)));
        assert_eq!(admission.admit(Pool::Ssh, ip("10.0.0.2")).err(), Some(Refusal::BackingOff));
        // The store says the run is gone (taken back elsewhere): so it is here.
        admission.set_failures(ip("10.0.0.9"), None);
        assert!(admission.admit(Pool::Ssh, ip("10.0.0.2")).is_ok());
        // A run read from the store: 4 failures, the last 1.5 s ago (backoff 2 s).
        admission.set_failures(ip("10.0.0.9"), Some((4, Duration::from_millis(1500))));
        assert!(admission.backing_off(ip("10.0.0.7")));
        admission.set_failures(ip("10.0.0.9"), Some((4, Duration::from_secs(3))));
        assert!(!admission.backing_off(ip("10.0.0.7")), "its 2 s have passed");
        assert_eq!(Prefix::of(ip("10.0.0.9")).run(), "network:10.0.0.0/24");
        assert_eq!(Prefix::of(ip("2001:db8:0:1::5")).run(), "network:2001:db8:0:1::/64");
    }

    #[test]
    fn a_build_holds_at_most_its_share() {
        let options = GatewayOptions {
            max_connections_per_build: 2,
            max_channels_per_build: 1,
            ..GatewayOptions::default()
        };
        let admission = Arc::new(Admission::new(&options));
        let build = BuildId::new("b").unwrap();
        let first = admission.hold(&build, Held::Connection).unwrap();
        let _second = admission.hold(&build, Held::Connection).unwrap();
        assert!(admission.hold(&build, Held::Connection).is_none());
        let channel = admission.hold(&build, Held::Channel).unwrap();
        assert!(admission.hold(&build, Held::Channel).is_none());
        assert!(admission.hold(&BuildId::new("other").unwrap(), Held::Channel).is_some());
        drop((first, channel));
        assert!(admission.hold(&build, Held::Connection).is_some());
        assert!(admission.hold(&build, Held::Channel).is_some());
    }
}
