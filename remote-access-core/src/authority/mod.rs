//! The credential authority: issues a build's credentials, verifies them, drives the build's
//! session through the store, and carries out what the session decides. Cheap to clone; its
//! work is split by concern, each file one `impl Authority` block:
//!
//! - `issue`: [`BuildRequest`], issuing, and the platform's reports (steps completed, cancel,
//!   revoke);
//! - `verify`: checking SSH keys and VNC passwords, counting guesses;
//! - `certificates`: OpenSSH user and host certificates, the key revocation list;
//! - `failures`: runs of failed logins counted in the store, for the whole fleet;
//! - `connection`: recording user connections, [`LiveConnection`], ends that wait for the store;
//! - `connection_info`: what a client needs to connect, from what the authority keeps;
//! - `apply`: feeding an input to a session and saving it by compare-and-swap;
//! - `contact`: pinging the store, failing closed;
//! - `fleet`: notices from other gateways, detaching dead gateways' connections;
//! - `housekeeping`: the background loop, deadlines, purging.

mod apply;
mod certificates;
mod connection;
mod connection_info;
mod contact;
mod failures;
mod fleet;
mod fleet_events;
mod housekeeping;
mod issue;
mod verify;

pub use connection::LiveConnection;
pub(crate) use connection::{Admitted, End};
pub use fleet_events::{FleetEvent, FleetEvents};
pub use issue::BuildRequest;
pub(crate) use verify::{Attempt, Role};

use std::sync::Arc;
use std::time::Duration;

use rand_core::Rng;
use time::OffsetDateTime;

use crate::build::BuildId;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::{EventBus, Subscription};
use crate::session::{CutSignals, Event, EventKind, Input, Policy};
use crate::store::{MemoryStore, Store};

/// Options for an [`Authority`]; every field has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorityOptions {
    /// The time rules for builds whose request names none.
    pub policy: Policy,
    /// How long a revoked or expired credential is kept as a tombstone (default 30 days).
    /// Until then the same key or password is refused and never issued again.
    pub tombstone_retention: Duration,
    /// The gateway ports users' VNC clients connect to, one per live session with VNC (none by
    /// default: VNC then goes only through the build's SSH tunnel, see `docs/vnc.md`). Each
    /// port identifies its session; the password then proves the user.
    pub vnc_ports: Vec<u16>,
    /// How long the store may be out of reach before every live connection is cut (default
    /// 30 s). Meanwhile new logins are refused: nothing is authorised without the store. Only
    /// [`Authority::run_housekeeping`] watches contact, so run it.
    pub max_store_outage: Duration,
    /// How many events each [`Authority::subscribe`] subscription may hold unread (default
    /// 10,000; from 1 to 1,000,000). A subscriber that falls further behind misses events and
    /// is told how many by an [`crate::EventKind::Lagged`] event: a logged-in user can cause
    /// events at will, and a stalled consumer must not make the authority grow without limit.
    pub event_queue: usize,
    /// Where sessions, credentials and tombstones live: in this process's memory (the
    /// default), or in a Redis that several gateways share.
    pub store: StoreOptions,
    /// An SSH certificate authority for users (none by default): each build's key is then
    /// also issued an OpenSSH user certificate ([`crate::Credentials::certificate`]), valid
    /// until the build's latest possible end, so builders trust the CA once
    /// (`TrustedUserCAKeys`) instead of each build's `authorized_keys` line, and
    /// [`Authority::revoked_keys`] lists the keys of ended builds for their `RevokedKeys`.
    pub user_ca: Option<crate::credential::SshCa>,
    /// Where builders see the gateways' connections come from, as addresses or CIDR blocks
    /// (`10.0.0.5`, `10.0.0.0/24`, `fd00::/64`): required with `user_ca`. Each user
    /// certificate carries them as its `source-address` option, so a build's certificate is
    /// good only through the gateways (which take each user to their own builder), not from one
    /// builder to another that trusts the same CA with the same login user. Reverse-tunnel
    /// builds add loopback, where their agent connects from.
    pub certificate_source_addresses: Vec<String>,
    /// An SSH certificate authority for builders' host keys (none by default):
    /// [`Authority::certify_host`] signs a builder's host key, and `issue` signs the request's
    /// `Builder::host_key`. Users' scripts then trust this CA for the builder's address
    /// (`ScriptOptions::builder_host_ca`) instead of a builder key on first use. Keep it apart
    /// from `user_ca`.
    pub host_ca: Option<crate::credential::SshCa>,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            tombstone_retention: Duration::from_secs(30 * 24 * 3600),
            vnc_ports: Vec::new(),
            max_store_outage: Duration::from_secs(30),
            event_queue: 10_000,
            store: StoreOptions::Memory,
            user_ca: None,
            certificate_source_addresses: Vec::new(),
            host_ca: None,
        }
    }
}

/// Where an [`Authority`] keeps sessions, credentials and tombstones.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum StoreOptions {
    /// In this process's memory: one gateway, and everything is lost when it stops.
    #[default]
    Memory,
    /// In a Redis shared by several gateways and the platform's own processes, so a revocation
    /// through any of them reaches all and a restarted gateway finds its sessions (feature
    /// `redis`; see `docs/scaling.md`). It runs on the system clock: Redis expires records in
    /// real time.
    #[cfg(feature = "redis")]
    Redis(crate::store::RedisOptions),
}

/// Issues, verifies and revokes per-build credentials and enforces each build's time rules.
///
/// Cheap to clone; clones share everything. It spawns nothing by itself: run
/// [`Authority::run_housekeeping`] on your runtime (or call [`Authority::expire_due`]) so deadlines
/// are enforced while nothing else happens.
///
/// ```
/// use remote_access_core::{Authority, AuthorityOptions, BuildId, BuildRequest, Error, Trigger};
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let authority = Authority::new(AuthorityOptions::default())?;
/// let build = BuildId::new("build-1001")?;
///
/// // Issue: the platform gets the key pair, username and VNC password once.
/// let credentials = authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await?;
///
/// // Verify: what the gateway asks when a user presents them.
/// let verified = authority.verify_ssh(credentials.username(), credentials.public_key()).await?;
/// assert_eq!(verified, build);
///
/// // Revoke: the credentials are refused from now on, forever.
/// authority.revoke(&build, "user lost access").await?;
/// let refused = authority.verify_ssh(credentials.username(), credentials.public_key()).await;
/// assert!(matches!(refused, Err(Error::AccessDenied { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: AuthorityOptions,
    events: EventBus,
    /// This authority's events on their way to the fleet's log, held by the housekeeping that
    /// sends them (one at a time; a later one takes over when it stops).
    outbox: tokio::sync::Mutex<crate::events::Subscription>,
    /// The cut signals of the builds with live connections here.
    cut_signals: CutSignals,
    /// Since when the store has not answered a ping, and whether connections were cut for it.
    contact: std::sync::Mutex<contact::Contact>,
    /// Disconnects the store could not take, to be recorded once it answers again.
    unreported: std::sync::Mutex<std::collections::VecDeque<(BuildId, Input)>>,
    /// Connection ends on their way to the store, per build (see `record_end`).
    ending: std::sync::Mutex<std::collections::HashMap<BuildId, connection::Ending>>,
    /// This authority's id in a shared store: the high 32 bits of its connection ids, and the
    /// name of its heartbeat. A new one is drawn when an outage cuts every connection, so
    /// that others detaching the old id's connections never touch those admitted after.
    instance: std::sync::atomic::AtomicU32,
    /// Set when the store answers again after an outage: every build gets checked.
    resync: std::sync::atomic::AtomicBool,
    /// How long the store took to answer each ping (with the heartbeat), for the metrics.
    store_round_trip: crate::metrics::Histogram,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority on the store that `options.store` names, on the system clock.
    pub fn new(options: AuthorityOptions) -> Result<Self> {
        match &options.store {
            StoreOptions::Memory => Self::with_clock(options, Arc::new(SystemClock)),
            #[cfg(feature = "redis")]
            StoreOptions::Redis(redis) => {
                let store = crate::store::RedisStore::new(redis.clone())?;
                Self::with_parts(options, Arc::new(store), Arc::new(SystemClock))
            }
        }
    }

    /// An authority on a clock of the caller's, such as a [`crate::ManualClock`] that makes
    /// tests of the time rules exact. Only with the in-memory store: Redis expires records in
    /// real time, so any other clock would disagree with it.
    pub fn with_clock(options: AuthorityOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        let store: Arc<dyn Store> = match &options.store {
            StoreOptions::Memory => {
                if options.user_ca.is_some() {
                    // The KRL's list lives only as long as this process.
                    tracing::warn!(
                        "a user CA with the in-memory store: after a restart the KRL no longer lists the keys of builds that ended before it, while their certificates stay valid until each build's latest end; use Redis"
                    );
                }
                Arc::new(MemoryStore::new())
            }
            #[cfg(feature = "redis")]
            StoreOptions::Redis(_) => {
                return Err(Error::invalid(
                    "clock",
                    "a manual clock cannot drive a Redis store (Redis expires records in real time); use the system clock, or the in-memory store",
                ));
            }
        };
        Self::with_parts(options, store, clock)
    }

    /// An authority on a given store and clock: see [`crate::unstable::authority`].
    pub(crate) fn with_parts(
        options: AuthorityOptions,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        options.policy.validate()?;
        if options.vnc_ports.contains(&0) || options.vnc_ports.len() > 10_000 {
            return Err(Error::invalid("vnc_ports", "ports must be non-zero, at most 10,000 of them"));
        }
        let distinct: std::collections::HashSet<_> = options.vnc_ports.iter().collect();
        if distinct.len() != options.vnc_ports.len() {
            return Err(Error::invalid("vnc_ports", "a port is listed twice"));
        }
        if options.tombstone_retention > Policy::MAX_DURATION * 10 {
            return Err(Error::invalid("tombstone_retention", "longer than ten years"));
        }
        if options.max_store_outage < Duration::from_secs(1)
            || options.max_store_outage > Duration::from_secs(3600)
        {
            return Err(Error::invalid("max_store_outage", "between 1 s and 1 hour"));
        }
        // Each queued event holds a few hundred bytes: a million is already hundreds of MB per
        // subscriber.
        crate::credential::check_source_addresses(
            options.user_ca.is_some(),
            &options.certificate_source_addresses,
        )?;
        if let (Some(user), Some(host)) = (&options.user_ca, &options.host_ca)
            && user.fingerprint() == host.fingerprint()
        {
            return Err(Error::invalid("host_ca", "the same key as user_ca: keep the two CAs apart"));
        }
        if !(1..=1_000_000).contains(&options.event_queue) {
            return Err(Error::invalid("event_queue", "from 1 to 1,000,000 events"));
        }
        let events = EventBus::new(options.event_queue);
        // From the start, so that the fleet's log misses nothing published before the
        // housekeeping runs.
        let outbox = tokio::sync::Mutex::new(events.subscribe());
        // Never blocks (`free` is never reached): only the run's length is used.
        let inner = Inner {
            store,
            clock,
            options,
            events,
            outbox,
            cut_signals: CutSignals::default(),
            contact: Default::default(),
            store_round_trip: Default::default(),
            unreported: Default::default(),
            ending: Default::default(),
            instance: russh::keys::key::safe_rng().next_u32().into(),
            resync: false.into(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The options in force.
    pub fn options(&self) -> &AuthorityOptions {
        &self.inner.options
    }

    /// The current time by the authority's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.inner.clock.now().to_offset(time::UtcOffset::UTC)
    }

    /// Subscribes to every event from now on. Each subscription has its own queue of at most
    /// [`AuthorityOptions::event_queue`] events, and publishing never waits for a reader: a
    /// subscriber that falls that far behind misses the events published meanwhile, and gets
    /// one [`crate::EventKind::Lagged`] event with their count in their place as soon as it
    /// reads again. Read it promptly, or drop it.
    pub fn subscribe(&self) -> Subscription {
        self.inner.events.subscribe()
    }

    /// Publishes one event about a build.
    pub(super) fn publish(&self, build_id: &BuildId, kind: EventKind, reason: String) {
        let event = Event { build_id: build_id.clone(), at: self.now(), kind, reason };
        self.inner.events.publish(vec![event]);
    }

    /// Publishes that a builder agent registered the build's reverse tunnel.
    pub(crate) fn tunnel_registered(&self, build_id: &BuildId, reason: String) {
        self.publish(build_id, EventKind::TunnelRegistered, reason);
    }

    /// Publishes a refusal of something a logged-in user asked for.
    pub(crate) fn refused(&self, build_id: &BuildId, reason: String) {
        self.publish(build_id, EventKind::Refused, reason);
    }
}
