//! Where sessions, credentials and tombstones live.
//!
//! [`Store`] is object-safe and asynchronous so that a networked store (Redis) can stand in for
//! the in-memory default without changing any caller. Sessions are replaced by compare-and-swap
//! on a version number, which both a mutex and a Redis script can provide, so two gateways
//! driving the same session never lose each other's inputs.
//!
//! A shared store also tells each authority what other processes changed ([`Store::watch`]),
//! and answers [`Store::ping`], which the authority uses to fail closed when it loses contact.

mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "redis")]
mod redis_nodes;

use std::future::Future;
use std::pin::Pin;

use std::time::Duration;

use time::OffsetDateTime;

use crate::build::BuildId;
use crate::error::Result;
use crate::secret::Secret;
use crate::session::Session;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisStore};

/// The future every [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// About how many events the fleet's event log keeps (the oldest go first).
pub const EVENT_LOG_LEN: usize = 100_000;

/// How long the store remembers a run of failed logins after its last failure.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// A run of failed logins the store counts for the whole fleet (see [`Store::add_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failures {
    /// Failures in the run.
    pub count: u32,
    /// How long ago the last one was.
    pub ago: Duration,
}

impl Failures {
    /// A run of `count` failures, the last `ago`.
    pub fn new(count: u32, ago: Duration) -> Self {
        Self { count, ago }
    }
}

/// What the store keeps of a build's credentials. The user's private key is not here: it is
/// handed to the platform once, at issue, and never stored. `Debug` leaves out the password and
/// its digest.
#[derive(Clone)]
#[non_exhaustive]
pub struct CredentialRecord {
    /// The build.
    pub build_id: BuildId,
    /// The SSH username on the gateway.
    pub username: String,
    /// `SHA256:` fingerprint of the build's public key.
    pub key_fingerprint: String,
    /// The VNC password the user types (the gateway needs it to check VNC Authentication).
    pub vnc_password: Secret<String>,
    /// SHA-256 of the VNC password, the index that keeps passwords unique across builds.
    pub password_digest: [u8; 32],
    /// The builder agent's username, for builds reached by a reverse tunnel.
    pub agent_username: Option<String>,
    /// The builder agent's key fingerprint.
    pub agent_key_fingerprint: Option<String>,
    /// The builder's own VNC password, which the gateway injects upstream; users never see it.
    pub builder_vnc_password: Option<Secret<String>>,
    /// A macOS username for Apple's type-30 login to the builder (with the password above).
    pub builder_vnc_username: Option<String>,
    /// Set once revoked or expired: the record is then a tombstone, refused forever.
    pub revoked: Option<Revocation>,
}

impl std::fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("build_id", &self.build_id)
            .field("username", &self.username)
            .field("key_fingerprint", &self.key_fingerprint)
            .field("agent_username", &self.agent_username)
            .field("vnc_password", &self.vnc_password)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// When and why a credential was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revocation {
    /// When.
    pub at: OffsetDateTime,
    /// Why (the session's end reason).
    pub reason: String,
}

/// A value with the version that a compare-and-swap must name.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: u64,
}

impl CredentialRecord {
    /// A live record with no agent and no builder VNC login.
    pub fn new(
        build_id: BuildId,
        username: String,
        key_fingerprint: String,
        vnc_password: Secret<String>,
        password_digest: [u8; 32],
    ) -> Self {
        Self {
            build_id,
            username,
            key_fingerprint,
            vnc_password,
            password_digest,
            agent_username: None,
            agent_key_fingerprint: None,
            builder_vnc_password: None,
            builder_vnc_username: None,
            revoked: None,
        }
    }
}

impl Revocation {
    /// Revoked `at`, for `reason`.
    pub fn new(at: OffsetDateTime, reason: impl Into<String>) -> Self {
        Self { at, reason: reason.into() }
    }
}

impl<T> Versioned<T> {
    /// `value` at `version`.
    pub fn new(value: T, version: u64) -> Self {
        Self { value, version }
    }
}

/// The outcome of [`Store::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Insert {
    /// Stored.
    Done,
    /// Nothing was stored because a live record or tombstone already holds this value.
    Conflict(Conflict),
}

/// Which unique value clashed on insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// The build already has a session.
    BuildId,
    /// The username is taken.
    Username,
    /// The public key was issued before.
    Key,
    /// The VNC password was issued before.
    Password,
    /// The session's VNC port is in use by another live session.
    VncPort,
}

/// What a shared store reports that another process changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The build's session ended (revoked, expired, logged out): cut its connections here too.
    Ended(BuildId),
    /// Notices may have been lost (the store's feed reconnected): check every live build.
    Missed,
}

/// Storage for sessions, credentials and tombstones.
pub trait Store: Send + Sync + 'static {
    /// Stores a new session and its credentials atomically, unless the build id, username, key
    /// fingerprint or password digest is already present (live or tombstone). A store that
    /// expires records by itself keeps these at least until `keep_until` (the latest the session
    /// can end plus the tombstone retention).
    fn insert(
        &self,
        session: Session,
        credential: CredentialRecord,
        keep_until: OffsetDateTime,
    ) -> StoreFuture<'_, Insert>;

    /// The build's session and its version.
    fn session<'a>(&'a self, build_id: &'a BuildId) -> StoreFuture<'a, Option<Versioned<Session>>>;

    /// Replaces the session if its version is still `version`; returns whether it did. With
    /// `revocation`, the build's credential becomes a tombstone in the same atomic step (the
    /// first revocation stays), so a session is never saved as ended with a live credential.
    fn replace_session(
        &self,
        session: Session,
        version: u64,
        revocation: Option<Revocation>,
    ) -> StoreFuture<'_, bool>;

    /// The credential issued with this username, live or tombstone.
    fn credential_for_user<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<CredentialRecord>>;

    /// The credential of this build, live or tombstone.
    fn credential_for_build<'a>(&'a self, build_id: &'a BuildId)
    -> StoreFuture<'a, Option<CredentialRecord>>;

    /// The live session that holds this VNC port.
    fn session_for_vnc_port(&self, port: u16) -> StoreFuture<'_, Option<BuildId>>;

    /// Builds whose live session has a deadline at or before `now`.
    fn due_sessions(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>>;

    /// The earliest deadline of any live session.
    fn next_deadline(&self) -> StoreFuture<'_, Option<OffsetDateTime>>;

    /// Removes ended sessions, and their tombstones, that ended before `ended_before`; returns
    /// the builds removed.
    fn purge(&self, ended_before: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>>;

    /// Every build whose session is live.
    fn live_sessions(&self) -> StoreFuture<'_, Vec<BuildId>>;

    /// The key fingerprints of every build whose session has ended but whose latest possible
    /// end (`Session::max_end`, when its certificate expires) is after `now`: what the KRL
    /// lists. Kept apart from the session and credential records, so that a purge of either
    /// (after the tombstone retention, which may be shorter than a build's maximum duration)
    /// does not take a key off the list while its certificate is still valid.
    fn revoked_fingerprints(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<String>>;

    /// Records that the authority `instance` (the high 32 bits of its connection ids) is alive
    /// at `at`, so that others can tell when it stops. The in-memory store is shared only
    /// within one process, which cannot outlive itself: by default nothing is recorded.
    fn heartbeat(&self, instance: u32, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        let _ = (instance, at);
        Box::pin(async { Ok(()) })
    }

    /// Claims the instances whose last heartbeat is before `before` until `until`: each is
    /// returned to one caller only, which detaches its connections and then forgets it. A
    /// claim that is not followed through lapses at `until`, and the instance is silent again.
    fn claim_silent_instances(
        &self,
        before: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<u32>> {
        let _ = (before, until);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Forgets an instance claimed until `until`, unless it has written a heartbeat since.
    fn forget_instance(&self, instance: u32, until: OffsetDateTime) -> StoreFuture<'_, ()> {
        let _ = (instance, until);
        Box::pin(async { Ok(()) })
    }

    /// Appends events (JSON) to the fleet's event log, which keeps the latest ones (about
    /// 100,000 in Redis) for every process of the fleet to read. By default none is kept.
    fn append_events<'a>(&'a self, events: &'a [String]) -> StoreFuture<'a, ()> {
        let _ = events;
        Box::pin(async { Ok(()) })
    }

    /// The id of the latest event in the log (`"0-0"` when it is empty): where a reader that
    /// wants only new events starts.
    fn last_event_id(&self) -> StoreFuture<'_, String> {
        Box::pin(async { Ok("0-0".to_owned()) })
    }

    /// Up to `count` events after `after` in the log, oldest first, as (id, JSON); waits up to
    /// `wait` for one when there are none yet, then returns none.
    fn read_events(
        &self,
        after: String,
        count: usize,
        wait: Duration,
    ) -> StoreFuture<'_, Vec<(String, String)>> {
        let _ = (after, count);
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            Ok(Vec::new())
        })
    }

    /// Adds a failed login to the run counted under `key` (a network, or one of a build's
    /// credentials) for every process sharing the store, against `tag` (what it tried) when
    /// known; returns the run's count with it. A run is forgotten [`FAILURE_MEMORY`] after its
    /// last failure. At most 4 tags are kept per key; failures beyond still count.
    fn add_failure<'a>(&'a self, key: &'a str, tag: Option<&'a str>) -> StoreFuture<'a, u32>;

    /// The run counted under `key`, if there is one.
    fn failures<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Failures>>;

    /// Takes back the failures of `key`'s run that were against `tag` (what has just logged in
    /// from there), or the whole run with `None`; returns what is left of it.
    fn take_back_failures<'a>(
        &'a self,
        key: &'a str,
        tag: Option<&'a str>,
    ) -> StoreFuture<'a, Option<Failures>>;

    /// Ends of sessions written here that the store's replicas have not confirmed yet (kept,
    /// and settled with each ping). A store without replicas has none.
    fn unconfirmed_ends(&self) -> usize {
        0
    }

    /// One round trip to the store: fails when it cannot be reached. The authority calls it
    /// every second and cuts live connections when it has failed for too long.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Sends [`Notice`]s of changes made by other processes until `notices` closes. The
    /// in-memory store has no other process to hear from, so by default this never sends.
    fn watch(
        &self,
        notices: tokio::sync::mpsc::Sender<Notice>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        drop(notices);
        Box::pin(std::future::pending())
    }
}
