//! The credential authority: issues a build's credentials, verifies them, drives the build's
//! session through the store, and carries out what the session decides.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rand_core::Rng;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::audit::{Event, EventBus, EventKind, Subscription};
use crate::build::{BuildId, BuildRequest, Builder};
use crate::clock::{Clock, SystemClock, later};
use crate::credential::{self, Credentials, Generated};
use crate::error::{DenialReason, Error, Result};
use crate::secret::Secret;
use crate::session::{
    Action, ConnectionId, CutSignal, Input, Policy, Protocol, Registry, Session, Transition,
};
use crate::store::{Conflict, CredentialRecord, Insert, MemoryStore, Notice, Revocation, Store};
use crate::throttle::Throttle;

/// How often a session may be re-read after losing a compare-and-swap race before giving up.
const MAX_CAS_RETRIES: usize = 64;
/// How often fresh credentials are drawn when one clashes with an earlier build's.
const MAX_GENERATE_ATTEMPTS: usize = 8;
/// The expiry task looks at the clock at least this often, so new sessions and clock jumps
/// are noticed without a wake-up channel.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The expiry task never spins: a deadline it could not act on is retried after this.
const EXPIRY_MIN_WAIT: Duration = Duration::from_millis(20);
/// Usernames longer than this are refused without a store lookup.
const MAX_USERNAME_LEN: usize = 64;
/// Revocation reasons end up in events and logs; keep them short.
const MAX_REASON_LEN: usize = 256;
/// How often every build with connections here is checked against the store: the safety net
/// under a shared store's notices, which can be lost.
const RECHECK_EVERY_ROUNDS: u32 = 5;
/// Disconnects that could not be recorded (the store was out of reach) wait for it to come
/// back, up to this many; beyond that the oldest are dropped and the session's grace period
/// ends it instead of the logout.
const MAX_UNREPORTED: usize = 100_000;
/// An authority whose heartbeat is older than its `max_store_outage` plus this has cut its
/// connections (or died with them): others may detach them from the sessions.
const SILENCE_SLACK: Duration = Duration::from_secs(5);
/// How often the store is pinged (and the heartbeat written), and how long a ping may take
/// before it counts as no answer: a slow store is an absent one.
const CONTACT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a claim on a silent authority lasts; a claimer that fails or dies leaves it to be
/// claimed again after this.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

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
    /// default: VNC off). Each port identifies its session; the password then proves the user.
    pub vnc_ports: Vec<u16>,
    /// How long the store may be out of reach before every live connection is cut (default
    /// 30 s). Meanwhile new logins are refused: nothing is authorised without the store. Only
    /// [`Authority::run_expiry`] watches contact, so run it.
    pub max_store_outage: Duration,
    /// How many events each [`Authority::subscribe`] subscription may hold unread (default
    /// 10,000; from 1 to 1,000,000). A subscriber that falls further behind misses events and
    /// is told how many by an [`crate::EventKind::Lagged`] event: a logged-in user can cause
    /// events at will, and a stalled consumer must not make the authority grow without limit.
    pub event_queue: usize,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            tombstone_retention: Duration::from_secs(30 * 24 * 3600),
            vnc_ports: Vec::new(),
            max_store_outage: Duration::from_secs(30),
            event_queue: 10_000,
        }
    }
}

/// Issues, verifies and revokes per-build credentials and enforces each build's time rules.
///
/// Cheap to clone; clones share everything. It spawns nothing by itself: run
/// [`Authority::run_expiry`] on your runtime (or call [`Authority::expire_due`]) so deadlines
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
    registry: Registry,
    /// Failed logins in a row per build and credential (a wrong key, a wrong VNC password):
    /// counted to tell the platform, never to refuse.
    guesses: Throttle<(BuildId, Guessed)>,
    /// Since when the store has not answered a ping, and whether connections were cut for it.
    contact: std::sync::Mutex<Contact>,
    /// Disconnects the store could not take, to be recorded once it answers again.
    unreported: std::sync::Mutex<std::collections::VecDeque<(BuildId, Input)>>,
    /// This authority's id in a shared store: the high 32 bits of its connection ids, and the
    /// name of its heartbeat. A new one is drawn when an outage cuts every connection, so
    /// that others detaching the old id's connections never touch those admitted after.
    instance: std::sync::atomic::AtomicU32,
    /// Set when the store answers again after an outage: every build gets checked.
    resync: std::sync::atomic::AtomicBool,
}

/// What the authority knows of its contact with the store.
struct Contact {
    /// When the store last answered a ping.
    last_answer: tokio::time::Instant,
    /// Whether the last ping failed: logins are refused until one succeeds.
    lost: bool,
    /// Whether this outage has already cut the connections.
    cut: bool,
}

impl Default for Contact {
    fn default() -> Self {
        Self { last_answer: tokio::time::Instant::now(), lost: false, cut: false }
    }
}

/// Failed logins in a row against one build's credential before the platform hears of it
/// (a `guessing` event), and again each time the run doubles. They never lock the credential:
/// strangers' guesses must not keep its owner out. What slows guessers is the gateway's
/// backoff per source (address and prefix), which the owner does not share.
const GUESSING_EVENT_AFTER: u32 = 10;
/// A run of failures is forgotten after this long without one.
const GUESS_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Which of a build's credentials a failed login tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Guessed {
    Key,
    VncPassword,
}

impl Guessed {
    fn as_str(self) -> &'static str {
        match self {
            Self::Key => "SSH key",
            Self::VncPassword => "VNC password",
        }
    }
}

/// An SSH key offered without a signature (a probe), or signed: both count as failures when
/// wrong, only a signed one proves the owner (and ends the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Probe,
    Signed,
}

/// Who an SSH credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The user: may open channels to the builder.
    User,
    /// The builder's agent: may only register the build's reverse tunnel.
    Agent,
}

/// An SSH login the gateway let in.
pub(crate) enum Admitted {
    /// A user connection, counted in the session.
    User(Session, LiveConnection),
    /// The build's agent, with the signal that ends it with the session.
    Agent(Session, CutSignal),
}

/// A user connection that the session has accepted. Its [`CutSignal`] fires when access ends;
/// report its end with [`Authority::disconnected`].
///
/// It is also a guard: dropped without that report (a panic, a cancelled task), it reports the
/// disconnect itself on the current tokio runtime, so a lost connection can never hold a
/// session open and block the logout.
pub struct LiveConnection {
    build_id: BuildId,
    id: ConnectionId,
    protocol: Protocol,
    cut: CutSignal,
    /// Set until the disconnect has been recorded.
    reporter: Option<Authority>,
    /// Report a drop as a detach (gateway stopping), not as the user leaving.
    detach: bool,
}

impl std::fmt::Debug for LiveConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConnection")
            .field("build_id", &self.build_id)
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        let Some(authority) = self.reporter.take() else {
            return;
        };
        let (build_id, connection, detach) = (self.build_id.clone(), self.id, self.detach);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let input = authority.end_of(connection, detach);
                    if let Err(err) = authority.record_end(&build_id, input).await {
                        tracing::warn!(%build_id, %err, "recording a dropped connection's disconnect failed");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(%build_id, %connection, "connection dropped outside a tokio runtime; its disconnect is not recorded");
            }
        }
    }
}

impl LiveConnection {
    /// The build it belongs to.
    pub fn build_id(&self) -> &BuildId {
        &self.build_id
    }

    /// Its id within the session.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// SSH or VNC.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The signal that fires when the connection must be cut.
    pub fn cut_signal(&self) -> CutSignal {
        self.cut.clone()
    }

    /// From now on, a drop without a report counts as the gateway letting go of the connection
    /// (not a logout): for a gateway that is stopping.
    pub fn detach_on_drop(&mut self) {
        self.detach = true;
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority with the in-memory store and the system clock.
    pub fn new(options: AuthorityOptions) -> Result<Self> {
        Self::with_parts(options, Arc::new(MemoryStore::new()), Arc::new(SystemClock))
    }

    /// An authority on a given store and clock.
    pub fn with_parts(
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
        if !(1..=1_000_000).contains(&options.event_queue) {
            return Err(Error::invalid("event_queue", "from 1 to 1,000,000 events"));
        }
        let events = EventBus::new(options.event_queue);
        // Never blocks (`free` is never reached): only the run's length is used.
        let guesses = Throttle::new(u32::MAX, Duration::ZERO, Duration::ZERO, GUESS_MEMORY);
        let inner = Inner {
            store,
            clock,
            options,
            events,
            registry: Registry::default(),
            guesses,
            contact: Default::default(),
            unreported: Default::default(),
            instance: russh::keys::key::safe_rng().next_u32().into(),
            resync: false.into(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// An authority on a Redis store shared with other gateways and the platform's own
    /// processes (see [`crate::RedisStore`]), on the system clock: Redis expires records in
    /// real time, so a manual clock cannot drive it.
    #[cfg(feature = "redis")]
    pub fn with_redis(options: AuthorityOptions, redis: crate::store::RedisOptions) -> Result<Self> {
        let store = crate::store::RedisStore::new(redis)?;
        Self::with_parts(options, Arc::new(store), Arc::new(SystemClock))
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

    /// Generates and issues fresh credentials for a manually triggered build with remote access
    /// enabled, and opens its session.
    pub async fn issue(&self, request: BuildRequest) -> Result<Credentials> {
        self.issue_with(request, credential::generate).await
    }

    async fn issue_with(
        &self,
        request: BuildRequest,
        mut generate: impl FnMut() -> Result<Generated>,
    ) -> Result<Credentials> {
        request.check_eligible()?;
        let policy = request.policy.unwrap_or(self.inner.options.policy);
        let now = self.now();
        let started_at = request.started_at.unwrap_or(now);
        let builder = request.builder.map(Builder::validated).transpose()?;
        let builder_vnc_username = request.builder_vnc_username;
        if let Some(name) = &builder_vnc_username
            && (name.is_empty() || name.len() > 63 || name.chars().any(char::is_control))
        {
            return Err(Error::invalid("builder_vnc_username", "1 to 63 bytes, no control characters"));
        }
        let wants_vnc = builder.as_ref().is_some_and(|b| b.vnc_port.is_some());
        let ports = &self.inner.options.vnc_ports;
        if wants_vnc && ports.is_empty() {
            return Err(Error::invalid(
                "builder.vnc_port",
                "this authority has no VNC ports (AuthorityOptions::vnc_ports)",
            ));
        }
        // The builder's own password is per build unless the platform supplies one: the build's
        // user controls the builder's VNC port, so can capture whatever the gateway logs in
        // with, and a per-build password opens no other builder. A supplied one is kept for
        // compatibility, with a warning when several builds share it.
        let supplied = request.builder_vnc_password.is_some();
        let builder_vnc_password = match request.builder_vnc_password {
            Some(password) => Some(check_builder_vnc_password(password)?),
            None if wants_vnc => Some(credential::generate_builder_password(builder_vnc_username.is_some())?),
            None if builder_vnc_username.is_some() => {
                return Err(Error::invalid(
                    "builder_vnc_username",
                    "needs builder.vnc_port (the account's password is then generated) or builder_vnc_password",
                ));
            }
            None => None,
        };
        let build_id = request.build_id;
        // VNC ports are tried from a random start, so sessions spread over the range.
        let first_port =
            if ports.is_empty() { 0 } else { russh::keys::key::safe_rng().next_u64() as usize % ports.len() };
        let mut port_tries = 0;
        let mut credential_draws = 0;
        let mut credentials: Option<Credentials> = None;
        loop {
            let creds = match credentials.take() {
                Some(creds) => creds,
                None if credential_draws < MAX_GENERATE_ATTEMPTS => {
                    credential_draws += 1;
                    let mut creds = Credentials::new(build_id.clone(), generate()?)?;
                    if builder.as_ref().is_some_and(|b| b.reverse_tunnel) {
                        creds.agent = Some(credential::generate_agent()?);
                    }
                    creds.builder_vnc_password = builder_vnc_password.clone();
                    creds.builder_vnc_account = builder_vnc_username.is_some();
                    creds
                }
                None => {
                    return Err(Error::KeyMaterial {
                        message: format!(
                            "{MAX_GENERATE_ATTEMPTS} fresh credential sets in a row clashed with earlier builds; the system RNG is suspect"
                        ),
                    });
                }
            };
            let vnc_port = wants_vnc.then(|| ports[(first_port + port_tries) % ports.len()]);
            let session = Session::new(build_id.clone(), policy, started_at, now)?
                .with_builder(builder.clone())
                .with_vnc_port(vnc_port);
            let record = CredentialRecord {
                build_id: build_id.clone(),
                username: creds.username.clone(),
                key_fingerprint: creds.fingerprint.clone(),
                password_digest: credential::password_digest(creds.vnc_password.expose()),
                vnc_password: creds.vnc_password.clone(),
                agent_username: creds.agent.as_ref().map(|a| a.username.clone()),
                agent_key_fingerprint: creds.agent.as_ref().map(|a| a.fingerprint.clone()),
                builder_vnc_password: builder_vnc_password.clone(),
                builder_vnc_username: builder_vnc_username.clone(),
                revoked: None,
            };
            // Kept by the store until the session's latest possible end plus the retention.
            let keep_until = later(session.deadline(), self.inner.options.tombstone_retention);
            match self.inner.store.insert(session, record, keep_until).await? {
                Insert::Done => {
                    // Noted once issued, so that a refused request (a retry for the same
                    // build) does not count as another build using the password.
                    if supplied && let Some(password) = &builder_vnc_password {
                        credential::note_supplied(&build_id, password);
                    }
                    let mut reason =
                        format!("credentials issued: user {} key {}", creds.username, creds.fingerprint);
                    if let Some(port) = vnc_port {
                        reason.push_str(&format!(" vnc port {port}"));
                    }
                    self.inner.events.publish(vec![Event {
                        build_id,
                        at: now,
                        kind: EventKind::Issued,
                        reason,
                    }]);
                    return Ok(creds);
                }
                Insert::Conflict(Conflict::BuildId) => return Err(Error::BuildExists { build_id }),
                Insert::Conflict(Conflict::VncPort) => {
                    port_tries += 1;
                    if port_tries >= ports.len() {
                        return Err(Error::NoCapacity {
                            message: format!(
                                "all {} VNC ports are in use by live sessions; add ports or wait",
                                ports.len()
                            ),
                        });
                    }
                    credentials = Some(creds); // the credentials were fine: try the next port
                }
                Insert::Conflict(clash) => {
                    tracing::warn!(build_id = %build_id, ?clash, "fresh credentials clashed with an earlier build's; drawing again");
                }
            }
        }
    }

    /// Reports that all of the build's steps have completed: the grace period starts, and the
    /// user's last logout from now on ends the session. Repeated reports change nothing.
    pub async fn steps_completed(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::StepsCompleted).await.map(drop)
    }

    /// Reports that the platform finished the build itself; access ends at once.
    pub async fn build_finished(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::BuildFinished).await.map(drop)
    }

    /// Reports that the build was cancelled; access ends at once.
    pub async fn cancel(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::Cancelled).await.map(drop)
    }

    /// Revokes the build's access at once: credentials become tombstones and every live
    /// connection is cut. Revoking an ended session changes nothing.
    pub async fn revoke(&self, build_id: &BuildId, reason: &str) -> Result<()> {
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::invalid("revoke reason", format!("longer than {MAX_REASON_LEN} bytes")));
        }
        if reason.chars().any(char::is_control) {
            return Err(Error::invalid("revoke reason", "contains control characters"));
        }
        self.apply(build_id, Input::Revoke { reason: reason.to_owned() }).await.map(drop)
    }

    /// Checks an SSH login: `username` and the public key (OpenSSH text, `ssh-ed25519 AAAA...`)
    /// must be a live session's. Returns the build they open.
    pub async fn verify_ssh(&self, username: &str, public_key: &str) -> Result<BuildId> {
        let key = russh::keys::PublicKey::from_openssh(public_key)
            .map_err(|_| Error::invalid("public key", "not an OpenSSH public key line"))?;
        let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        self.verify_ssh_fingerprint(username, &fingerprint).await
    }

    /// [`Authority::verify_ssh`] with the key's `SHA256:` fingerprint.
    pub(crate) async fn verify_ssh_fingerprint(&self, username: &str, fingerprint: &str) -> Result<BuildId> {
        match self.login(username, fingerprint, Attempt::Signed).await? {
            (build_id, Role::User) => Ok(build_id),
            // An agent's credential is no user's: it opens nothing.
            (_, Role::Agent) => Err(Error::denied(DenialReason::WrongKey)),
        }
    }

    /// Checks an SSH key a client offers, without a signature yet: a probe. A wrong key for a
    /// known username counts towards the `guessing` event like a signed one (a guesser never
    /// needs to sign); only a signed login ends the run.
    pub(crate) async fn verify_login(&self, username: &str, fingerprint: &str) -> Result<(BuildId, Role)> {
        self.login(username, fingerprint, Attempt::Probe).await
    }

    /// Checks an SSH login of either kind: the user's credential or the build agent's.
    async fn login(&self, username: &str, fingerprint: &str, attempt: Attempt) -> Result<(BuildId, Role)> {
        if username.len() > MAX_USERNAME_LEN {
            return Err(Error::denied(DenialReason::UnknownUser));
        }
        self.in_contact()?;
        let record = self
            .inner
            .store
            .credential_for_user(username)
            .await?
            .ok_or(Error::denied(DenialReason::UnknownUser))?;
        if record.revoked.is_some() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        let role = if record.username == username && record.key_fingerprint == fingerprint {
            Role::User
        } else if record.agent_username.as_deref() == Some(username)
            && record.agent_key_fingerprint.as_deref() == Some(fingerprint)
        {
            Role::Agent
        } else {
            // Probes count too: a guesser never needs to sign, and the owner's own client
            // offers the right key first (the scripts set IdentitiesOnly).
            self.guessed(&record.build_id, Guessed::Key);
            return Err(Error::denied(DenialReason::WrongKey));
        };
        if attempt == Attempt::Signed {
            self.inner.guesses.forget(&(record.build_id.clone(), Guessed::Key));
        }
        self.require_live(&record.build_id).await?;
        Ok((record.build_id, role))
    }

    /// The build's credential, unless it is a tombstone.
    async fn live_credential(&self, build_id: &BuildId) -> Result<CredentialRecord> {
        self.in_contact()?;
        let record = self
            .inner
            .store
            .credential_for_build(build_id)
            .await?
            .ok_or_else(|| Error::UnknownBuild { build_id: build_id.clone() })?;
        if record.revoked.is_some() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        Ok(record)
    }

    /// Checks a VNC password for the build's session, in constant time.
    pub async fn verify_vnc(&self, build_id: &BuildId, password: &str) -> Result<()> {
        let record = self.live_credential(build_id).await?;
        if !bool::from(password.as_bytes().ct_eq(record.vnc_password.expose().as_bytes())) {
            self.guessed(build_id, Guessed::VncPassword);
            return Err(Error::denied(DenialReason::WrongPassword));
        }
        self.inner.guesses.forget(&(build_id.clone(), Guessed::VncPassword));
        self.require_live(build_id).await
    }

    /// Records a new user connection. Refused with [`Error::SessionEnded`] once access is over.
    pub async fn connected(&self, build_id: &BuildId, protocol: Protocol) -> Result<LiveConnection> {
        self.connect(build_id, protocol).await.map(|(_, live)| live)
    }

    /// [`Authority::connected`], also returning the session as it was when the connection was
    /// admitted (the gateway needs its route).
    async fn connect(&self, build_id: &BuildId, protocol: Protocol) -> Result<(Session, LiveConnection)> {
        // The high half names this authority, so that if it dies others can tell its
        // connections apart in the shared sessions (see `detach_silent`).
        // The cut signal exists before the session counts the connection, so that an end
        // announced from elsewhere in between still reaches it; the id is read after it, so
        // that an outage cut in between (which draws a new id first) leaves this connection
        // either cut or under the new id.
        let cut = self.inner.registry.signal(build_id);
        let connection = ConnectionId(
            u64::from(self.instance()) << 32 | u64::from(russh::keys::key::safe_rng().next_u32()),
        );
        let (session, t) = match self.apply(build_id, Input::Connected { connection, protocol }).await {
            Ok(done) => done,
            Err(err @ Error::StoreUnavailable { .. }) => {
                // The store may have counted the connection with its answer lost: have it
                // uncounted once the store answers (a no-op if it never was).
                self.keep_unreported(build_id.clone(), Input::Detached { connection });
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        if let Some(reason) = t.refused {
            return Err(Error::SessionEnded { build_id: session.build_id().clone(), reason });
        }
        let live = LiveConnection {
            build_id: build_id.clone(),
            id: connection,
            protocol,
            cut,
            reporter: Some(self.clone()),
            detach: false,
        };
        Ok((session, live))
    }

    /// Verifies an SSH login and admits it as a live connection in one step: the gateway's
    /// path from a presented key to a connection that is cut when access ends.
    pub(crate) async fn admit_ssh(&self, username: &str, fingerprint: &str) -> Result<Admitted> {
        let (build_id, role) = self.login(username, fingerprint, Attempt::Signed).await?;
        match role {
            Role::User => {
                let (session, live) =
                    self.connect(&build_id, Protocol::Ssh).await.map_err(|err| match err {
                        Error::SessionEnded { .. } => Error::denied(DenialReason::Revoked),
                        other => other,
                    })?;
                Ok(Admitted::User(session, live))
            }
            // An agent is not a user connection: it never counts towards logout.
            Role::Agent => {
                let cut = self.inner.registry.signal(&build_id);
                let session = self.session(&build_id).await?;
                if session.is_ended() {
                    return Err(Error::denied(DenialReason::Revoked));
                }
                Ok(Admitted::Agent(session, cut))
            }
        }
    }

    /// Records that a connection was closed by its gateway shutting down: not a logout.
    pub async fn detached(&self, mut connection: LiveConnection) -> Result<()> {
        let input = Input::Detached { connection: connection.id };
        let result = self.record_end(&connection.build_id, input).await;
        connection.reporter = None;
        result.map(drop)
    }

    /// The live session that holds a gateway VNC port, with its session (a passed deadline is
    /// applied first).
    pub(crate) async fn vnc_route(&self, port: u16) -> Result<Option<Session>> {
        self.in_contact()?;
        let Some(build_id) = self.inner.store.session_for_vnc_port(port).await? else {
            return Ok(None);
        };
        match self.session(&build_id).await {
            Ok(session) if !session.is_ended() => Ok(Some(session)),
            Ok(_) | Err(Error::UnknownBuild { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Checks a VNC Authentication response against the build's password (constant time) and
    /// that the session is live; returns the builder's own VNC password for the upstream login.
    pub(crate) async fn verify_vnc_response(
        &self,
        build_id: &BuildId,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<(Secret<String>, Option<String>)>> {
        let record = self.live_credential(build_id).await?;
        if !crate::vnc::check_response(record.vnc_password.expose().as_bytes(), challenge, response) {
            self.guessed(build_id, Guessed::VncPassword);
            return Err(Error::denied(DenialReason::WrongPassword));
        }
        self.inner.guesses.forget(&(build_id.clone(), Guessed::VncPassword));
        self.require_live(build_id).await?;
        Ok(record.builder_vnc_password.map(|password| (password, record.builder_vnc_username)))
    }

    /// Publishes that a builder agent registered the build's reverse tunnel.
    pub(crate) fn tunnel_registered(&self, build_id: &BuildId, reason: String) {
        let event =
            Event { build_id: build_id.clone(), at: self.now(), kind: EventKind::TunnelRegistered, reason };
        self.inner.events.publish(vec![event]);
    }

    /// Counts a failed login against a build's credential; when the run reaches
    /// [`GUESSING_EVENT_AFTER`], and each time it doubles after that, the platform hears of it.
    /// The credential itself stays usable by its owner.
    fn guessed(&self, build_id: &BuildId, credential: Guessed) {
        let (count, _) = self.inner.guesses.failed(&(build_id.clone(), credential), None);
        let what = credential.as_str();
        if count < GUESSING_EVENT_AFTER
            || !count.is_multiple_of(GUESSING_EVENT_AFTER)
            || !(count / GUESSING_EVENT_AFTER).is_power_of_two()
        {
            return;
        }
        tracing::warn!(%build_id, count, credential = what, "failed logins in a row against a build's credential");
        let reason = format!(
            "{count} failed logins in a row (wrong {what}); the sources are being slowed down, the owner is not; consider revoking if it goes on"
        );
        let event = Event { build_id: build_id.clone(), at: self.now(), kind: EventKind::Guessing, reason };
        self.inner.events.publish(vec![event]);
    }

    /// Publishes a refusal of something a logged-in user asked for.
    pub(crate) fn refused(&self, build_id: &BuildId, reason: String) {
        let event = Event { build_id: build_id.clone(), at: self.now(), kind: EventKind::Refused, reason };
        self.inner.events.publish(vec![event]);
    }

    /// Records that a connection closed. After the steps completed, the last one to close is a
    /// logout: the session ends and the build is finished.
    pub async fn disconnected(&self, mut connection: LiveConnection) -> Result<()> {
        let input = self.end_of(connection.id, false);
        // If this future is dropped mid-way, `connection` drops with its reporter still set and
        // reports the disconnect itself; a second report of the same id changes nothing.
        let result = self.record_end(&connection.build_id, input).await;
        connection.reporter = None;
        result
    }

    /// Records a connection's end. If the store is out of reach, the report waits for it to
    /// answer again, so that an outage never leaves a session counting a connection that is
    /// gone (which would keep the user's logout from ending it).
    async fn record_end(&self, build_id: &BuildId, input: Input) -> Result<()> {
        match self.apply(build_id, input.clone()).await {
            Err(err @ Error::StoreUnavailable { .. }) => {
                self.keep_unreported(build_id.clone(), input);
                Err(err)
            }
            other => other.map(drop),
        }
    }

    /// Keeps a connection's end to be recorded once the store answers again.
    fn keep_unreported(&self, build_id: BuildId, input: Input) {
        let mut unreported = self.inner.unreported.lock().unwrap_or_else(PoisonError::into_inner);
        if unreported.len() >= MAX_UNREPORTED {
            unreported.pop_front();
        }
        unreported.push_back((build_id, input));
    }

    /// Records the connection ends that waited for the store, in order; stops at the first
    /// that the store cannot take (it keeps its place, and the rest theirs).
    async fn report_unreported(&self) {
        loop {
            let next = self.inner.unreported.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some((build_id, input)) = next else { return };
            match self.apply(&build_id, input.clone()).await {
                Ok(_) | Err(Error::UnknownBuild { .. }) => {}
                Err(Error::StoreUnavailable { .. }) => {
                    self.inner
                        .unreported
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_front((build_id, input));
                    return;
                }
                Err(err) => tracing::warn!(%build_id, %err, "recording a connection's end failed"),
            }
        }
    }

    /// Refuses at once while the store is out of reach: nothing is authorised without it.
    fn in_contact(&self) -> Result<()> {
        let contact = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
        if !contact.lost {
            return Ok(());
        }
        Err(Error::StoreUnavailable {
            message: format!(
                "no answer from the session store for {} s; logins are refused until it answers (fail closed)",
                contact.last_answer.elapsed().as_secs()
            ),
            source: None,
        })
    }

    /// Pings the store (within a second) and writes the heartbeat. Once an outage passes
    /// `max_store_outage`, cuts every connection; when the store answers again, has the
    /// housekeeping resynchronise.
    async fn check_contact(&self) {
        let sent = tokio::time::Instant::now();
        // The heartbeat is part of the answer: a store that cannot take it (read-only, out of
        // memory) is as absent as a silent one, and others would take this gateway for dead.
        let exchange = async {
            self.inner.store.ping().await?;
            self.inner.store.heartbeat(self.instance(), self.now()).await
        };
        let answer = match tokio::time::timeout(CONTACT_INTERVAL, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::StoreUnavailable {
                message: format!("no answer to a ping within {CONTACT_INTERVAL:?}"),
                source: None,
            }),
        };
        let (regained, cut_now) = {
            let mut contact = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
            match &answer {
                Ok(()) => {
                    let regained = contact.lost;
                    *contact = Contact { last_answer: sent, lost: false, cut: false };
                    (regained, false)
                }
                Err(err) => {
                    if !contact.lost {
                        tracing::warn!(%err, "lost contact with the session store; refusing logins (fail closed)");
                    }
                    contact.lost = true;
                    let over = contact.last_answer.elapsed() >= self.inner.options.max_store_outage;
                    let cut_now = over && !contact.cut;
                    contact.cut |= cut_now;
                    (false, cut_now)
                }
            }
        };
        if cut_now {
            self.cut_for_outage();
        }
        if regained {
            tracing::info!("the session store answers again; logins resume");
            // The housekeeping loop records what waited and rechecks every build: slow work
            // that must not hold up the next ping.
            self.inner.resync.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Cuts every connection here because the store has been out of reach too long, and
    /// draws a new instance id: others will detach the old id's connections from the
    /// sessions once its heartbeat is old, and must not take new connections with them.
    fn cut_for_outage(&self) {
        // The new id first: a connection racing this cut is then either cut or under it.
        let fresh = russh::keys::key::safe_rng().next_u32();
        self.inner.instance.store(fresh, std::sync::atomic::Ordering::SeqCst);
        let builds = self.inner.registry.cut_all();
        let secs = self.inner.options.max_store_outage.as_secs();
        tracing::warn!(
            builds = builds.len(),
            "no answer from the session store for {secs} s; cut every connection (fail closed)"
        );
        let at = self.now();
        let events = builds
            .into_iter()
            .map(|build_id| Event {
                build_id,
                at,
                kind: EventKind::StoreUnreachable,
                reason: format!(
                    "no answer from the session store for {secs} s: this build's connections were cut (fail closed); the session goes on, and users can reconnect once the store answers"
                ),
            })
            .collect();
        self.inner.events.publish(events);
    }

    /// Checks every build with connections here against the store and cuts those whose
    /// session ended elsewhere (or is gone from the store).
    async fn recheck(&self) {
        for build_id in self.inner.registry.live() {
            // `apply` cuts the build's connections when it finds the session ended.
            match self.apply(&build_id, Input::Tick).await {
                Ok(_) => {}
                Err(Error::UnknownBuild { .. }) => self.inner.registry.cut_if_known(&build_id),
                Err(err) => tracing::warn!(%build_id, %err, "could not check a session against the store"),
            }
        }
    }

    /// Detaches, from the shared sessions, the connections of authorities that stopped
    /// heart-beating: killed or crashed (their connections died with them), or out of contact
    /// for longer than `max_store_outage` (they cut theirs). Without this a dead gateway's
    /// connections would count as live until the deadline, and the user's logout would not
    /// end the session. Every gateway of a fleet must share `max_store_outage`.
    async fn detach_silent(&self) -> Result<()> {
        let silence = self.inner.options.max_store_outage + SILENCE_SLACK;
        let now = self.now();
        let before = now.checked_sub(time::Duration::try_from(silence).unwrap_or(time::Duration::MAX));
        let until = later(now, CLAIM_LEASE);
        let mut instances = self
            .inner
            .store
            .claim_silent_instances(before.unwrap_or(OffsetDateTime::UNIX_EPOCH), until)
            .await?;
        // Never this authority's own current id (its heartbeat was late, it is not dead): the
        // next heartbeat takes the claim back.
        instances.retain(|&instance| instance != self.instance());
        if instances.is_empty() {
            return Ok(());
        }
        let mut detached = 0;
        let mut failed = false;
        for build_id in self.inner.store.live_sessions().await? {
            // One unreadable session must not hold back the others; a failure anywhere leaves
            // the claims to lapse, so that a later round finishes the job.
            let session = match self.session(&build_id).await {
                Ok(session) => session,
                Err(Error::UnknownBuild { .. }) => continue,
                Err(err) => {
                    tracing::warn!(%build_id, %err, "could not check a session for a silent gateway's connections");
                    failed = true;
                    continue;
                }
            };
            for (connection, _) in session.live_connections() {
                if instances.contains(&((connection.0 >> 32) as u32)) {
                    match self.apply(&build_id, Input::Detached { connection }).await {
                        Ok(_) => detached += 1,
                        Err(err) => {
                            tracing::warn!(%build_id, %err, "could not detach a silent gateway's connection");
                            failed = true;
                        }
                    }
                }
            }
        }
        if !failed {
            for &instance in &instances {
                self.inner.store.forget_instance(instance, until).await?;
            }
        }
        tracing::warn!(
            gateways = instances.len(),
            connections = detached,
            "detached the connections of gateways that stopped answering"
        );
        Ok(())
    }

    /// Acts on what a shared store reports another process changed.
    async fn noticed(&self, notice: Notice) {
        match notice {
            Notice::Ended(build_id) => self.inner.registry.cut_if_known(&build_id),
            Notice::Missed => self.recheck().await,
        }
    }

    /// The build's session as of now (a passed deadline is applied first).
    pub async fn session(&self, build_id: &BuildId) -> Result<Session> {
        self.apply(build_id, Input::Tick).await.map(|(session, _)| session)
    }

    /// Ends every session whose deadline has passed on the clock; returns how many ended.
    pub async fn expire_due(&self) -> Result<usize> {
        let due = self.inner.store.due_sessions(self.now()).await?;
        let mut ended = 0;
        let mut failure = None;
        for build_id in due {
            // One failing build must not hold back the others' deadlines.
            match self.apply(&build_id, Input::Tick).await {
                Ok((_, t)) if t.actions.contains(&Action::RevokeCredentials) => ended += 1,
                Ok(_) | Err(Error::UnknownBuild { .. }) => {}
                Err(err) => {
                    tracing::warn!(%build_id, %err, "could not expire session");
                    failure = Some(err);
                }
            }
        }
        match failure {
            Some(err) if ended == 0 => Err(err),
            _ => Ok(ended),
        }
    }

    /// The earliest time at which a live session's deadline falls.
    pub async fn next_deadline(&self) -> Result<Option<OffsetDateTime>> {
        self.inner.store.next_deadline().await
    }

    /// Forgets sessions, and their tombstones, that ended longer ago than the retention.
    /// Returns how many builds were forgotten.
    pub async fn purge(&self) -> Result<usize> {
        let retention = time::Duration::try_from(self.inner.options.tombstone_retention)
            .map_err(|_| Error::invalid("tombstone_retention", "out of range"))?;
        let cutoff = self.now().checked_sub(retention).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let purged = self.inner.store.purge(cutoff).await?;
        // Signals nobody holds go too (the purged builds' among them).
        self.inner.registry.sweep();
        Ok(purged.len())
    }

    /// Enforces deadlines, purges old tombstones, follows a shared store's notices of sessions
    /// ended elsewhere (with a periodic check of every build with connections here as the
    /// safety net) and watches contact with the store (fail closed), until `shutdown`
    /// resolves. Spawn it on your runtime; a [`Gateway`](crate::Gateway) runs its own. Store
    /// errors are logged and retried.
    pub async fn run_expiry(&self, shutdown: impl Future<Output = ()>) {
        // Four loops in one task, each waiting on its own: a slow store call in one never
        // holds up the others, above all the contact check that enforces `max_store_outage`.
        let (sender, mut notices) = tokio::sync::mpsc::channel(1024);
        let watch = async {
            self.inner.store.watch(sender).await;
            std::future::pending::<()>().await;
        };
        let follow = async {
            while let Some(notice) = notices.recv().await {
                self.noticed(notice).await;
            }
            std::future::pending::<()>().await;
        };
        let contact = async {
            loop {
                self.check_contact().await;
                tokio::time::sleep(CONTACT_INTERVAL).await;
            }
        };
        let housekeeping = async {
            let mut rounds: u32 = 0;
            loop {
                let wait = self.round(rounds).await;
                rounds = rounds.wrapping_add(1);
                tokio::time::sleep(wait).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = watch => {}
            () = follow => {}
            () = contact => {}
            () = housekeeping => {}
        }
    }

    /// One round of [`Authority::run_expiry`]; returns how long to wait for the next.
    async fn round(&self, rounds: u32) -> Duration {
        if self.in_contact().is_err() {
            return EXPIRY_CHECK_INTERVAL; // nothing to do without the store
        }
        self.report_unreported().await;
        if self.inner.resync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.recheck().await;
        }
        if let Err(err) = self.expire_due().await {
            tracing::warn!(%err, "expiring sessions failed; retrying");
        }
        if rounds % 60 == 59
            && let Err(err) = self.purge().await
        {
            tracing::warn!(%err, "purging tombstones failed; retrying");
        }
        if rounds.is_multiple_of(RECHECK_EVERY_ROUNDS) {
            self.recheck().await;
            if let Err(err) = self.detach_silent().await {
                tracing::warn!(%err, "detaching the connections of silent gateways failed; retrying");
            }
        }
        match self.next_deadline().await {
            Ok(Some(at)) => Duration::try_from(at - self.now())
                .unwrap_or(Duration::ZERO)
                .clamp(EXPIRY_MIN_WAIT, EXPIRY_CHECK_INTERVAL),
            _ => EXPIRY_CHECK_INTERVAL,
        }
    }

    /// Applies a passed deadline and refuses if the session is over.
    async fn require_live(&self, build_id: &BuildId) -> Result<()> {
        let (session, _) = self.apply(build_id, Input::Tick).await?;
        if session.is_ended() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        Ok(())
    }

    /// Feeds one input to the build's session and saves it by compare-and-swap, together with
    /// the tombstone when the session ends. Once saved, the cut and the events happen without
    /// another await, so dropping this future can never lose them.
    async fn apply(&self, build_id: &BuildId, input: Input) -> Result<(Session, Transition)> {
        let store = &self.inner.store;
        for _ in 0..MAX_CAS_RETRIES {
            let current = store
                .session(build_id)
                .await?
                .ok_or_else(|| Error::UnknownBuild { build_id: build_id.clone() })?;
            let mut session = current.value;
            if session.is_ended() {
                // Another authority on a shared store may have ended it: cut here too.
                self.inner.registry.cut_if_known(build_id);
            }
            let t = session.handle(input.clone(), self.now());
            if t.changed() {
                let revocation = t
                    .actions
                    .contains(&Action::RevokeCredentials)
                    .then(|| session.end().map(|(reason, at)| Revocation { at, reason: reason.to_string() }))
                    .flatten();
                match store.replace_session(session.clone(), current.version, revocation).await {
                    Ok(true) => {}
                    Ok(false) => continue, // another caller changed the session first: redo on its version
                    // The answer was lost: the write may have landed all the same, and then its
                    // events and cuts must not be lost with the answer.
                    Err(err) if !self.landed(build_id, &session, current.version).await => return Err(err),
                    Err(_) => {}
                }
                if t.actions.contains(&Action::CutConnections) {
                    self.inner.registry.cut_if_known(build_id);
                }
                // FinishBuild is carried out by the platform when it reads the event.
                self.inner.events.publish(t.events.clone());
            }
            return Ok((session, t));
        }
        Err(Error::StoreUnavailable {
            message: format!(
                "session of build {build_id} kept changing; gave up after {MAX_CAS_RETRIES} attempts"
            ),
            source: None,
        })
    }
}

impl Authority {
    /// Whether a session update whose answer was lost landed after all: the store then holds
    /// exactly what was written, one version on.
    async fn landed(&self, build_id: &BuildId, written: &Session, version: u64) -> bool {
        matches!(
            self.inner.store.session(build_id).await,
            Ok(Some(now)) if now.version == version.wrapping_add(1) && now.value == *written
        )
    }

    /// How a connection's end is recorded: a logout candidate, or let go by the gateway
    /// (stopping, or `detach`). A connection admitted under an earlier instance id was cut by
    /// a store outage (the only thing that draws a new id), so the gateway let it go too.
    fn end_of(&self, connection: ConnectionId, detach: bool) -> Input {
        if detach || (connection.0 >> 32) as u32 != self.instance() {
            Input::Detached { connection }
        } else {
            Input::Disconnected { connection }
        }
    }

    /// This authority's current id in a shared store.
    fn instance(&self) -> u32 {
        self.inner.instance.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A builder's own VNC password: what its server expects, injected by the gateway. VNC ignores
/// bytes past 8 and libvncserver stops at NUL, so NUL is refused and non-ASCII too (clients
/// disagree on its encoding).
fn check_builder_vnc_password(password: Secret<String>) -> Result<Secret<String>> {
    let text = password.expose();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Error::invalid(
            "builder_vnc_password",
            "1 to 64 printable ASCII characters (only 8 count)",
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Trigger;
    use crate::clock::ManualClock;

    /// A generator that replays an earlier build's key and password before drawing fresh ones:
    /// the store's uniqueness check must catch the replay and the authority must draw again.
    #[tokio::test]
    async fn a_clashing_key_or_password_is_never_issued_again() {
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        let authority =
            Authority::with_parts(AuthorityOptions::default(), Arc::new(MemoryStore::new()), Arc::new(clock))
                .unwrap();
        let first = credential::generate().unwrap();
        let (first_key, first_password) = (first.key.clone(), first.vnc_password.clone());
        let mut first = Some(first);
        let creds = authority
            .issue_with(BuildRequest::new(BuildId::new("one").unwrap(), Trigger::Manual, true), || {
                Ok(first.take().unwrap())
            })
            .await
            .unwrap();
        authority.revoke(creds.build_id(), "done").await.unwrap();

        for replay in ["key", "password", "username"] {
            let mut calls = 0;
            let build = BuildId::new(format!("two-{replay}")).unwrap();
            let second = authority
                .issue_with(BuildRequest::new(build, Trigger::Manual, true), || {
                    calls += 1;
                    let mut fresh = credential::generate()?;
                    if calls == 1 {
                        match replay {
                            "key" => {
                                fresh.key = first_key.clone();
                                fresh.fingerprint = creds.fingerprint().to_owned();
                            }
                            "password" => fresh.vnc_password = first_password.clone(),
                            _ => fresh.username = creds.username().to_owned(),
                        }
                    }
                    Ok(fresh)
                })
                .await
                .unwrap();
            assert_eq!(calls, 2, "the clash with a tombstone was caught and credentials drawn again");
            assert_ne!(second.fingerprint(), creds.fingerprint());
            assert_ne!(second.vnc_password().expose(), creds.vnc_password().expose());
            assert_ne!(second.username(), creds.username());
        }

        // A generator that only ever replays gives up with a clear error instead of looping.
        let replaying = || {
            let mut g = credential::generate()?;
            g.username = creds.username().to_owned();
            Ok(g)
        };
        let stuck = authority
            .issue_with(BuildRequest::new(BuildId::new("three").unwrap(), Trigger::Manual, true), replaying)
            .await;
        assert!(matches!(stuck, Err(Error::KeyMaterial { .. })));
    }
}
