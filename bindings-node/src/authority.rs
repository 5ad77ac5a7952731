//! The credential authority and what it deals in.

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, ClassInstance, PromiseRaw, This, Unknown};
use napi::{Env, JsString, Result};
use napi_derive::napi;
use remote_access_core as core;

use crate::convert::{build_id, ip, millis, millis_or, port, ports, rfc3339, secret, time, to_millis};
use crate::errors::{OrThrow, invalid, promise};
use crate::events::{EventListener, FleetEvents, Subscription};
use crate::gateway::{HostKey, SshCa};
use crate::keepalive::KeepAlive;
use crate::script::{ConnectionInfo, ScriptOptions};

/// How long access lasts (milliseconds): `graceMs` after the build steps complete (default 20
/// minutes), never past `maxBuildDurationMs` from the build's start (default 2 hours);
/// optionally ended early when nobody connected within `finishIfUnusedAfterMs` of the steps
/// completing. After the steps completed, a user whose last connection was lost to the
/// network (not logged out) may reconnect within `reconnectWindowMs` (default 2 minutes).
#[napi(object)]
#[derive(Clone, Default)]
pub struct Policy {
    pub grace_ms: Option<f64>,
    pub max_build_duration_ms: Option<f64>,
    pub finish_if_unused_after_ms: Option<f64>,
    pub reconnect_window_ms: Option<f64>,
}

impl Policy {
    pub(crate) fn to_core(&self, env: &Env) -> Result<core::Policy> {
        let defaults = core::Policy::default();
        let mut policy = core::Policy::default();
        policy.grace = millis_or(env, "graceMs", self.grace_ms, defaults.grace)?;
        policy.max_build_duration =
            millis_or(env, "maxBuildDurationMs", self.max_build_duration_ms, defaults.max_build_duration)?;
        policy.finish_if_unused_after =
            self.finish_if_unused_after_ms.map(|ms| millis(env, "finishIfUnusedAfterMs", ms)).transpose()?;
        policy.reconnect_window =
            millis_or(env, "reconnectWindowMs", self.reconnect_window_ms, defaults.reconnect_window)?;
        policy.validate().or_throw(env)?;
        Ok(policy)
    }

    /// The policy as `Session.toJSON()` has it (every duration set).
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "graceMs": self.grace_ms, "maxBuildDurationMs": self.max_build_duration_ms,
            "finishIfUnusedAfterMs": self.finish_if_unused_after_ms,
            "reconnectWindowMs": self.reconnect_window_ms,
        })
    }

    pub(crate) fn from_core(policy: &core::Policy) -> Self {
        Self {
            grace_ms: Some(to_millis(policy.grace)),
            max_build_duration_ms: Some(to_millis(policy.max_build_duration)),
            finish_if_unused_after_ms: policy.finish_if_unused_after.map(to_millis),
            reconnect_window_ms: Some(to_millis(policy.reconnect_window)),
        }
    }
}

/// Where a build's machine is and what the gateway may reach on it.
#[napi(object)]
#[derive(Clone)]
pub struct Builder {
    /// The builder's IP address (no host names: they could be re-pointed).
    pub address: String,
    pub ssh_port: Option<f64>,
    pub extra_ports: Option<Vec<f64>>,
    pub vnc_port: Option<f64>,
    pub user: Option<String>,
    /// The builder dials out through `runAgent` instead of being dialed.
    pub reverse_tunnel: Option<bool>,
    /// The builder's SSH host key (`ssh-ed25519 AAAA...`), pinned in the scripts when known.
    pub host_key: Option<String>,
}

impl Builder {
    fn to_core(&self, env: &Env) -> Result<core::Builder> {
        let mut builder = core::Builder::new(ip(env, "builder.address", &self.address)?);
        if let Some(p) = self.ssh_port {
            builder.ssh_port = port(env, "builder.sshPort", p)?;
        }
        builder.extra_ports =
            ports(env, "builder.extraPorts", self.extra_ports.as_deref().unwrap_or_default())?;
        builder.vnc_port = self.vnc_port.map(|p| port(env, "builder.vncPort", p)).transpose()?;
        if let Some(user) = &self.user {
            builder.user = user.clone();
        }
        builder.reverse_tunnel = self.reverse_tunnel.unwrap_or(false);
        builder.host_key = self.host_key.clone();
        Ok(builder)
    }

    /// The builder as `Session.toJSON()` has it (every field set).
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.address, "sshPort": self.ssh_port, "extraPorts": self.extra_ports,
            "vncPort": self.vnc_port, "user": self.user, "reverseTunnel": self.reverse_tunnel,
            "hostKey": self.host_key,
        })
    }

    fn from_core(builder: &core::Builder) -> Self {
        Self {
            address: builder.address.to_string(),
            ssh_port: Some(f64::from(builder.ssh_port)),
            extra_ports: Some(builder.extra_ports.iter().map(|&p| f64::from(p)).collect()),
            vnc_port: builder.vnc_port.map(f64::from),
            user: Some(builder.user.clone()),
            reverse_tunnel: Some(builder.reverse_tunnel),
            host_key: builder.host_key.clone(),
        }
    }
}

/// Options of an `Authority`; every field has a default.
#[napi(object)]
#[derive(Default)]
pub struct AuthorityOptions<'a> {
    pub policy: Option<Policy>,
    /// How long revoked and expired credentials stay refused tombstones (default 30 days).
    pub tombstone_retention_ms: Option<f64>,
    /// Gateway ports for VNC, one per live VNC session (default none: no VNC).
    pub vnc_ports: Option<Vec<f64>>,
    /// A Redis shared by several gateways (`redis://[user:password@]host:port/db`, `rediss://`
    /// for TLS, or `redis+sentinel://host:port,.../master/db`) instead of the in-memory store;
    /// see `docs/scaling.md`. May hold a password: treated as a secret.
    #[napi(ts_type = "string")]
    pub redis_url: Option<Unknown<'a>>,
    /// The prefix of every Redis key (default `remote-access`).
    pub redis_key_prefix: Option<String>,
    /// For `rediss://`: the CA certificates (PEM) that sign Redis's certificate, instead of
    /// the system's roots.
    pub redis_tls_ca: Option<String>,
    /// For `rediss://` to a Redis that asks for client certificates: this client's certificate
    /// chain and private key (PEM).
    pub redis_tls_client: Option<RedisTlsClient<'a>>,
    /// Replicas that must confirm each revocation and be in sync for logins to go on
    /// (default: 1 once a replica has been seen, else 0).
    pub redis_min_replicas: Option<f64>,
    /// How long the store may be out of reach before every live connection is cut (default
    /// 30 000 ms); meanwhile logins are refused.
    pub max_store_outage_ms: Option<f64>,
    /// How many events each subscription or `onEvent` listener may hold unread (default
    /// 10 000); one that falls further behind gets a `lagged` event counting those it missed.
    pub event_queue: Option<f64>,
    /// An SSH CA that signs each build's key (`credentials.certificate`), so builders trust it
    /// once (`TrustedUserCAKeys`); see `docs/ssh.md`, "Certificates".
    pub user_ca: Option<ClassInstance<'a, SshCa>>,
    /// Where builders see the gateways connect from (addresses or CIDR blocks), required with
    /// `userCa`: each certificate's `source-address`, so it opens no builder from elsewhere.
    pub certificate_source_addresses: Option<Vec<String>>,
    /// An SSH CA that signs builders' host keys (`certifyHost`).
    pub host_ca: Option<ClassInstance<'a, SshCa>>,
}

/// What `issue` needs besides the build id. `trigger` and `remoteAccessEnabled` have no
/// defaults, as in the core: the platform states them for every build.
#[napi(object)]
pub struct IssueOptions<'a> {
    /// `manual`, `webhook`, `scheduled` or `api`; only manual builds get access.
    #[napi(ts_type = "Trigger")]
    pub trigger: String,
    /// Whether the build asked for remote access.
    pub remote_access_enabled: bool,
    /// When the build started (RFC 3339; default now).
    pub started_at: Option<String>,
    /// This build's policy instead of the authority's.
    pub policy: Option<Policy>,
    pub builder: Option<Builder>,
    /// The builder VNC server's own password (the user never sees it).
    #[napi(ts_type = "string")]
    pub builder_vnc_password: Option<Unknown<'a>>,
    /// The macOS account for Apple's VNC authentication, if the builder uses it.
    pub builder_vnc_username: Option<String>,
}

/// A clock that only moves when told to: for tests of the time rules.
#[napi]
pub struct ManualClock(pub(crate) Arc<core::ManualClock>);

#[napi]
impl ManualClock {
    /// A clock standing at `start` (RFC 3339).
    #[napi(constructor)]
    pub fn new(env: Env, start: String) -> Result<Self> {
        Ok(Self(Arc::new(core::ManualClock::new(time(&env, "start", &start)?))))
    }

    #[napi]
    pub fn advance(&self, env: Env, ms: f64) -> Result<()> {
        self.0.advance(millis(&env, "ms", ms)?);
        Ok(())
    }

    #[napi]
    pub fn set(&self, env: Env, to: String) -> Result<()> {
        self.0.set(time(&env, "to", &to)?);
        Ok(())
    }

    #[napi]
    pub fn now(&self) -> String {
        rfc3339(core::Clock::now(self.0.as_ref()))
    }
}

/// One build's credentials. The private keys and the VNC passwords come only from the explicit
/// `privateKeyOpenssh()`, `agentPrivateKeyOpenssh()`, `vncPassword()` and
/// `builderVncPassword()` calls: never from `util.inspect`, `JSON.stringify` or an error.
#[napi]
pub struct Credentials(pub(crate) core::Credentials);

#[napi]
impl Credentials {
    #[napi(getter)]
    pub fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    #[napi(getter)]
    pub fn username(&self) -> String {
        self.0.username().to_owned()
    }
    #[napi(getter)]
    pub fn public_key(&self) -> String {
        self.0.public_key().to_owned()
    }
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_owned()
    }
    #[napi(getter)]
    pub fn agent_username(&self) -> Option<String> {
        self.0.agent_username().map(str::to_owned)
    }
    #[napi(getter)]
    pub fn agent_fingerprint(&self) -> Option<String> {
        self.0.agent_fingerprint().map(str::to_owned)
    }
    /// The OpenSSH user certificate of the build's key, when the authority has a user CA and
    /// the build a builder (public; the scripts use it).
    #[napi(getter)]
    pub fn certificate(&self) -> Option<String> {
        self.0.certificate().map(str::to_owned)
    }
    /// The builder's host certificate, when the authority has a host CA and the request gave
    /// the builder's host key: the builder sshd's `HostCertificate`.
    #[napi(getter)]
    pub fn builder_host_certificate(&self) -> Option<String> {
        self.0.builder_host_certificate().map(str::to_owned)
    }
    /// The line to put in the builder's `authorized_keys`.
    #[napi]
    pub fn authorized_keys_line(&self) -> String {
        self.0.authorized_keys_line()
    }
    /// The same line with OpenSSH restrictions.
    #[napi]
    pub fn authorized_keys_line_restricted(&self) -> String {
        self.0.authorized_keys_line_restricted()
    }
    /// The user's private key in OpenSSH format. A secret: hand it only to the user.
    #[napi]
    pub fn private_key_openssh<'env>(&self, env: &'env Env) -> Result<JsString<'env>> {
        env.create_string(self.0.private_key_openssh().or_throw(env)?.expose())
    }
    /// The builder agent's private key (reverse-tunnel builds). A secret.
    #[napi]
    pub fn agent_private_key_openssh<'env>(&self, env: &'env Env) -> Result<Option<JsString<'env>>> {
        let key = self.0.agent_private_key_openssh().or_throw(env)?;
        key.map(|key| env.create_string(key.expose())).transpose()
    }
    /// The VNC password the user types. A secret.
    #[napi]
    pub fn vnc_password<'env>(&self, env: &'env Env) -> Result<JsString<'env>> {
        env.create_string(self.0.vnc_password().expose())
    }
    /// The builder's own VNC password (or macOS account password), generated for this build
    /// unless one was supplied: install it on the builder. A secret; `null` without VNC.
    #[napi]
    pub fn builder_vnc_password<'env>(&self, env: &'env Env) -> Result<Option<JsString<'env>>> {
        self.0.builder_vnc_password().map(|password| env.create_string(password.expose())).transpose()
    }
    /// The public parts only, for `JSON.stringify`.
    #[napi(
        js_name = "toJSON",
        ts_return_type = "{ buildId: string; username: string; fingerprint: string; agentUsername: string | null }"
    )]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "buildId": self.build_id(), "username": self.username(), "fingerprint": self.fingerprint(),
            "agentUsername": self.agent_username(),
        })
    }
}

/// A snapshot of one build's remote access session.
#[napi]
pub struct Session(pub(crate) core::Session);

#[napi]
impl Session {
    #[napi(getter)]
    pub fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    /// `steps_running`, `steps_completed` or `ended`.
    #[napi(getter, ts_return_type = "Phase")]
    pub fn phase(&self) -> &'static str {
        self.0.phase().as_str()
    }
    #[napi(getter)]
    pub fn policy(&self) -> Policy {
        Policy::from_core(self.0.policy())
    }
    #[napi(getter)]
    pub fn builder(&self) -> Option<Builder> {
        self.0.builder().map(Builder::from_core)
    }
    #[napi(getter)]
    pub fn started_at(&self) -> String {
        rfc3339(self.0.started_at())
    }
    #[napi(getter)]
    pub fn steps_completed_at(&self) -> Option<String> {
        self.0.steps_completed_at().map(rfc3339)
    }
    /// When access ends at the latest, as things stand: `maxEnd` while the steps run, then
    /// the grace period's end (or `maxEnd`, if earlier).
    #[napi(getter)]
    pub fn deadline(&self) -> String {
        rfc3339(self.0.deadline())
    }
    /// The latest end whatever happens: the build's start plus its maximum duration.
    #[napi(getter)]
    pub fn max_end(&self) -> String {
        rfc3339(self.0.max_end())
    }
    /// While the session waits for a user whose last connection was lost (after the steps
    /// completed): until when the same credentials work again; null otherwise.
    #[napi(getter)]
    pub fn reconnect_by(&self) -> Option<String> {
        self.0.reconnect_by().map(rfc3339)
    }
    /// The build's rule in words, with its own numbers (the actual deadline once the steps
    /// completed, a reconnect window, or how it ended).
    #[napi(getter)]
    pub fn access_rule(&self) -> String {
        self.0.access_rule()
    }
    #[napi(getter)]
    pub fn is_ended(&self) -> bool {
        self.0.is_ended()
    }
    #[napi(getter)]
    pub fn end_reason(&self) -> Option<String> {
        self.0.end().map(|(reason, _)| reason.to_string())
    }
    /// Why the session ended, as a stable code: `grace_elapsed`, `max_duration_reached`,
    /// `nobody_connected`, `logged_out`, `connection_lost`, `revoked`, `cancelled` or
    /// `build_finished`.
    #[napi(getter, ts_return_type = "EndReasonCode | null")]
    pub fn end_reason_code(&self) -> Option<&'static str> {
        self.0.end().map(|(reason, _)| reason.code())
    }
    #[napi(getter)]
    pub fn ended_at(&self) -> Option<String> {
        self.0.end().map(|(_, at)| rfc3339(at))
    }
    #[napi(getter)]
    pub fn vnc_port(&self) -> Option<u32> {
        self.0.vnc_port().map(u32::from)
    }
    #[napi(getter)]
    pub fn ever_connected(&self) -> bool {
        self.0.ever_connected()
    }
    /// `[connection id, "ssh" | "vnc"]` for each live connection.
    #[napi(getter, ts_return_type = "Array<[string, Protocol]>")]
    pub fn live_connections(&self) -> Vec<Vec<String>> {
        self.0
            .live_connections()
            .map(|(id, protocol)| vec![id.to_string(), protocol.as_str().to_owned()])
            .collect()
    }
    /// The snapshot as a plain object.
    #[napi(
        js_name = "toJSON",
        ts_return_type = "{ buildId: string; phase: Phase; policy: { graceMs: number; maxBuildDurationMs: number; finishIfUnusedAfterMs: number | null; reconnectWindowMs: number }; builder: { address: string; sshPort: number; extraPorts: Array<number>; vncPort: number | null; user: string; reverseTunnel: boolean; hostKey: string | null } | null; startedAt: string; stepsCompletedAt: string | null; deadline: string; maxEnd: string; reconnectBy: string | null; accessRule: string; isEnded: boolean; endReason: string | null; endReasonCode: EndReasonCode | null; endedAt: string | null; vncPort: number | null; everConnected: boolean; liveConnections: Array<[string, Protocol]> }"
    )]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "buildId": self.build_id(), "phase": self.phase(), "policy": self.policy().to_json(),
            "builder": self.builder().map(|builder| builder.to_json()), "startedAt": self.started_at(),
            "stepsCompletedAt": self.steps_completed_at(), "deadline": self.deadline(),
            "maxEnd": self.max_end(), "reconnectBy": self.reconnect_by(), "accessRule": self.access_rule(),
            "isEnded": self.is_ended(), "endReason": self.end_reason(), "endReasonCode": self.end_reason_code(),
            "endedAt": self.ended_at(),
            "vncPort": self.vnc_port(), "everConnected": self.ever_connected(),
            "liveConnections": self.live_connections(),
        })
    }
}

/// A user connection the platform carries itself (a transport other than the built-in
/// gateway); see `Authority.connected`. One the garbage collector drops without a report is
/// recorded as lost (by the core): never taken for a logout.
#[napi]
pub struct LiveConnection(core::LiveConnection);

#[napi]
impl LiveConnection {
    #[napi(getter)]
    pub fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.0.id().to_string()
    }
    #[napi(getter, ts_return_type = "Protocol")]
    pub fn protocol(&self) -> &'static str {
        self.0.protocol().as_str()
    }
    /// Whether access has ended for this connection.
    #[napi(getter)]
    pub fn is_cut(&self) -> bool {
        self.0.is_cut()
    }
    /// Resolves when access ends (revoke, deadline, cancel): close the connection then. It
    /// also resolves, with `isCut` false, once the connection's end is recorded.
    #[napi]
    pub fn closed<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let closed = self.0.closed();
        let closed = async move {
            closed.await;
            Ok::<_, core::Error>(())
        };
        promise(env, closed, Ok)
    }
    /// Records that the connection closed because its user left (after the steps, the last
    /// one closing is a logout). Only the first report counts.
    #[napi]
    pub fn disconnect<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let connection = self.0.clone();
        promise(env, async move { connection.disconnect().await }, Ok)
    }
    /// Records that the connection was lost to the network (a reset, a timeout), not closed by
    /// its user: after the steps, the last one lost opens the policy's reconnect window (a
    /// `dropped` event, `Session.reconnectBy`) instead of logging out. Only the first report
    /// counts.
    #[napi]
    pub fn lost<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let connection = self.0.clone();
        promise(env, async move { connection.lost().await }, Ok)
    }
    /// Records that the connection went away because its carrier stopped (not a logout). Only
    /// the first report counts.
    #[napi]
    pub fn detach<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let connection = self.0.clone();
        promise(env, async move { connection.detach().await }, Ok)
    }
}

/// A client certificate for TLS to Redis (`redisTlsClient`).
#[napi(object)]
pub struct RedisTlsClient<'a> {
    /// The certificate chain (PEM).
    pub certificate: String,
    /// Its private key (PEM); treated as a secret.
    #[napi(ts_type = "string")]
    pub key: Unknown<'a>,
}

/// Issues, verifies and revokes per-build credentials and enforces each build's time rules.
/// The store is in memory unless `redisUrl` names a Redis that several gateways share.
#[napi]
pub struct Authority(pub(crate) core::Authority);

#[napi]
impl Authority {
    /// `clock`: a `ManualClock` for tests (default: the system clock; a Redis store needs it:
    /// the core refuses a manual clock with `redisUrl`).
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<AuthorityOptions<'_>>, clock: Option<&ManualClock>) -> Result<Self> {
        let options = options.unwrap_or_default();
        let mut core_options = core::AuthorityOptions::default();
        if let Some(policy) = &options.policy {
            core_options.policy = policy.to_core(&env)?;
        }
        core_options.tombstone_retention = millis_or(
            &env,
            "tombstoneRetentionMs",
            options.tombstone_retention_ms,
            core_options.tombstone_retention,
        )?;
        core_options.max_store_outage =
            millis_or(&env, "maxStoreOutageMs", options.max_store_outage_ms, core_options.max_store_outage)?;
        if let Some(n) = options.event_queue {
            core_options.event_queue =
                crate::convert::whole(&env, "eventQueue", n, u32::MAX.into())? as usize;
        }
        core_options.vnc_ports = ports(&env, "vncPorts", options.vnc_ports.as_deref().unwrap_or_default())?;
        core_options.user_ca = options.user_ca.as_ref().map(|ca| ca.0.clone());
        core_options.certificate_source_addresses = options.certificate_source_addresses.unwrap_or_default();
        core_options.host_ca = options.host_ca.as_ref().map(|ca| ca.0.clone());
        if let Some(url) = options.redis_url {
            let mut redis = core::RedisOptions::new(String::new());
            redis.url = secret(&env, "redisUrl", url)?;
            redis.key_prefix = options.redis_key_prefix.unwrap_or(redis.key_prefix);
            redis.tls_ca_pem = options.redis_tls_ca;
            if let Some(client) = options.redis_tls_client {
                redis.tls_client =
                    Some((client.certificate, secret(&env, "redisTlsClient.key", client.key)?));
            }
            if let Some(n) = options.redis_min_replicas {
                redis.min_replicas =
                    Some(crate::convert::whole(&env, "redisMinReplicas", n, 1_000.0)? as u32);
            }
            core_options.store = core::StoreOptions::Redis(redis);
        } else if options.redis_tls_ca.is_some() || options.redis_tls_client.is_some() {
            return Err(invalid(&env, "redisTlsCa", "TLS settings for Redis need redisUrl".into()));
        }
        match clock {
            Some(clock) => core::Authority::with_clock(core_options, clock.0.clone()),
            None => core::Authority::new(core_options),
        }
        .or_throw(&env)
        .map(Self)
    }

    #[napi(getter)]
    pub fn policy(&self) -> Policy {
        Policy::from_core(&self.0.options().policy)
    }
    #[napi(getter)]
    pub fn vnc_ports(&self) -> Vec<u32> {
        self.0.options().vnc_ports.iter().map(|&p| u32::from(p)).collect()
    }
    /// How long revoked and expired credentials stay refused tombstones.
    #[napi(getter)]
    pub fn tombstone_retention_ms(&self) -> f64 {
        to_millis(self.0.options().tombstone_retention)
    }
    /// How long the store may be out of reach before live connections are cut.
    #[napi(getter)]
    pub fn max_store_outage_ms(&self) -> f64 {
        to_millis(self.0.options().max_store_outage)
    }
    /// How many events each subscription may hold unread.
    #[napi(getter)]
    pub fn event_queue(&self) -> f64 {
        self.0.options().event_queue as f64
    }
    /// The authority's clock (RFC 3339).
    #[napi]
    pub fn now(&self) -> String {
        rfc3339(self.0.now())
    }

    /// The events of every authority on this store (the whole fleet with Redis), oldest
    /// first: `for await (const { id, event } of await authority.fleetEvents(after))`. After
    /// the event with id `after` (keep the last id handled, to resume after a restart), or
    /// without it those appended from now on. Authorities append their events as their
    /// housekeeping runs (a gateway runs its own); `lagged` events are not in the log.
    #[napi]
    pub fn fleet_events<'env>(
        &self,
        env: &'env Env,
        after: Option<String>,
    ) -> Result<PromiseRaw<'env, FleetEvents>> {
        let authority = self.0.clone();
        promise(env, async move { authority.fleet_events(after.as_deref()).await }, |events| {
            Ok(FleetEvents::new(events))
        })
    }

    /// Every event from now on: `for await (const event of authority.subscribe())`.
    #[napi]
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.0.subscribe())
    }

    /// Calls `callback(event)` for every event from now on, until `close()`. It does not keep
    /// the process alive.
    #[napi(ts_args_type = "callback: (event: Event) => void")]
    pub fn on_event(&self, callback: crate::events::EventCallback) -> EventListener {
        EventListener::start(self.0.subscribe(), callback)
    }

    /// Issues credentials for a build.
    #[napi]
    pub fn issue<'env>(
        &self,
        env: &'env Env,
        build_id: String,
        options: IssueOptions<'_>,
    ) -> Result<PromiseRaw<'env, Credentials>> {
        let builder_vnc_password =
            options.builder_vnc_password.map(|p| secret(env, "builderVncPassword", p)).transpose()?;
        let trigger = options.trigger.parse().or_throw(env)?;
        let mut request =
            core::BuildRequest::new(self::build_id(env, &build_id)?, trigger, options.remote_access_enabled);
        request.started_at = options.started_at.as_deref().map(|t| time(env, "startedAt", t)).transpose()?;
        request.policy = options.policy.as_ref().map(|p| p.to_core(env)).transpose()?;
        request.builder = options.builder.as_ref().map(|b| b.to_core(env)).transpose()?;
        request.builder_vnc_password = builder_vnc_password;
        request.builder_vnc_username = options.builder_vnc_username;
        let authority = self.0.clone();
        promise(env, async move { authority.issue(request).await }, |c| Ok(Credentials(c)))
    }

    /// Records that the build's steps completed: the grace period starts.
    #[napi]
    pub fn steps_completed<'env>(&self, env: &'env Env, build_id: String) -> Result<PromiseRaw<'env, ()>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.steps_completed(&id).await }, Ok)
    }

    /// Records that the platform finished the build itself: access ends.
    #[napi]
    pub fn build_finished<'env>(&self, env: &'env Env, build_id: String) -> Result<PromiseRaw<'env, ()>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.build_finished(&id).await }, Ok)
    }

    /// Records that the build was cancelled: access ends.
    #[napi]
    pub fn cancel<'env>(&self, env: &'env Env, build_id: String) -> Result<PromiseRaw<'env, ()>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.cancel(&id).await }, Ok)
    }

    /// Signs a builder's host key (`ssh-ed25519 AAAA...`) with the host CA for `addresses` (IP
    /// addresses), valid for `validForMs`: the builder sshd's `HostCertificate`.
    #[napi]
    pub fn certify_host(
        &self,
        env: Env,
        host_key: String,
        addresses: Vec<String>,
        valid_for_ms: f64,
    ) -> Result<String> {
        let addresses =
            addresses.iter().map(|address| ip(&env, "addresses", address)).collect::<Result<Vec<_>>>()?;
        let valid_for = millis(&env, "validForMs", valid_for_ms)?;
        self.0.certify_host(&host_key, &addresses, valid_for).or_throw(&env)
    }

    /// A KRL (OpenSSH key revocation list) of the keys of ended builds whose certificates are
    /// still valid, for the builder sshd's `RevokedKeys`.
    #[napi]
    pub fn revoked_keys<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Buffer>> {
        let authority = self.0.clone();
        promise(env, async move { authority.revoked_keys().await }, |krl| Ok(Buffer::from(krl)))
    }

    /// Revokes the build's credentials now and cuts its live connections.
    #[napi]
    pub fn revoke<'env>(
        &self,
        env: &'env Env,
        build_id: String,
        reason: String,
    ) -> Result<PromiseRaw<'env, ()>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.revoke(&id, &reason).await }, Ok)
    }

    /// The build's session.
    #[napi]
    pub fn session<'env>(&self, env: &'env Env, build_id: String) -> Result<PromiseRaw<'env, Session>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.session(&id).await }, |s| Ok(Session(s)))
    }

    /// The build's connection info as of now, in one call, from what the authority keeps (no
    /// `Credentials` needed; the scripts still need them): the same as `new
    /// ConnectionInfo(credentials, session, hostKey, options)`.
    #[napi]
    pub fn connection_info<'env>(
        &self,
        env: &'env Env,
        build_id: String,
        host_key: &HostKey,
        options: ScriptOptions,
    ) -> Result<PromiseRaw<'env, ConnectionInfo>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        let (host_key, options) = (host_key.0.clone(), options.into_core(env)?);
        promise(env, async move { authority.connection_info(&id, &host_key, &options).await }, |info| {
            Ok(ConnectionInfo(info))
        })
    }

    /// Checks an SSH login; resolves to the build id it belongs to.
    #[napi]
    pub fn verify_ssh<'env>(
        &self,
        env: &'env Env,
        username: String,
        public_key: String,
    ) -> Result<PromiseRaw<'env, String>> {
        let authority = self.0.clone();
        promise(env, async move { authority.verify_ssh(&username, &public_key).await }, |id| {
            Ok(id.to_string())
        })
    }

    /// Checks a VNC password for a build.
    #[napi]
    pub fn verify_vnc<'env>(
        &self,
        env: &'env Env,
        build_id: String,
        #[napi(ts_arg_type = "string")] password: Unknown<'_>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let password = secret(env, "VNC password", password)?;
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        promise(env, async move { authority.verify_vnc(&id, password.expose()).await }, Ok)
    }

    /// Records a user connection (`protocol`: `ssh` or `vnc`); rejects with `session_ended`
    /// once access is over.
    #[napi]
    pub fn connected<'env>(
        &self,
        env: &'env Env,
        build_id: String,
        #[napi(ts_arg_type = "Protocol")] protocol: String,
    ) -> Result<PromiseRaw<'env, LiveConnection>> {
        let (authority, id) = (self.0.clone(), self::build_id(env, &build_id)?);
        let protocol: core::Protocol = protocol.parse().or_throw(env)?;
        promise(env, async move { authority.connected(&id, protocol).await }, |c| Ok(LiveConnection(c)))
    }

    /// Enforces the deadlines, follows the store and purges until `stop()`: for platforms that
    /// carry connections themselves (`connected`); a running gateway does this by itself.
    #[napi]
    pub fn run_housekeeping(&self, env: Env) -> Result<RunningHousekeeping> {
        let keep_alive = KeepAlive::new(&env)?;
        let stop = crate::errors::stop_signal();
        let (authority, signal, held) = (self.0.clone(), stop.clone(), keep_alive.clone());
        napi::bindgen_prelude::spawn(async move {
            authority.run_housekeeping(crate::errors::stopped(signal)).await;
            held.release();
        });
        Ok(RunningHousekeeping { stop, keep_alive })
    }

    /// Ends every session whose deadline has passed; resolves to how many. A running gateway
    /// does this by itself.
    #[napi]
    pub fn expire_due<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, u32>> {
        let authority = self.0.clone();
        promise(
            env,
            async move { authority.expire_due().await },
            |n| Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        )
    }

    /// The earliest deadline of any live session (RFC 3339), or null.
    #[napi]
    pub fn next_deadline<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<String>>> {
        let authority = self.0.clone();
        promise(env, async move { authority.next_deadline().await }, |at| Ok(at.map(rfc3339)))
    }

    /// Forgets tombstones older than the retention; resolves to how many.
    #[napi]
    pub fn purge<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, u32>> {
        let authority = self.0.clone();
        promise(env, async move { authority.purge().await }, |n| Ok(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// The housekeeping loop started by `Authority.runHousekeeping()`; only `stop()` stops it
/// (not the garbage collector). Like a `setInterval` timer, it keeps Node running until
/// stopped, unless `unref()` is called.
#[napi]
pub struct RunningHousekeeping {
    stop: crate::errors::Stop,
    keep_alive: KeepAlive,
}

#[napi]
impl RunningHousekeeping {
    /// Stops the housekeeping (deadlines are no longer enforced).
    #[napi]
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether `stop()` was called.
    #[napi(getter)]
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Keeps Node running until `stop()` (the default).
    #[napi(js_name = "ref", ts_return_type = "this")]
    pub fn keep_ref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, true)?;
        Ok(this)
    }

    /// Lets Node exit while the housekeeping runs, if nothing else keeps it running.
    #[napi(ts_return_type = "this")]
    pub fn unref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, false)?;
        Ok(this)
    }

    /// Whether the housekeeping keeps Node running now: until `unref()` or its end.
    #[napi]
    pub fn has_ref(&self) -> bool {
        self.keep_alive.has_ref()
    }
}
