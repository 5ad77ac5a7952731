//! The credential authority and what it deals in: policies, builders, credentials, sessions.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use remote_access_core as core;
use time::OffsetDateTime;

use crate::convert::{Seconds, build_id, ip};
use crate::errors::IntoPyResult;
use crate::events::NativeSubscription;
use crate::gateway::{HostKey, SshCa};
use crate::runtime::awaitable;
use crate::script::{PublicConnectionInfo, ScriptOptions};

/// How long access lasts: `grace` after the build steps complete, never past
/// `max_build_duration` from the build's start; optionally ended early when nobody connected
/// within `finish_if_unused_after` of the steps completing; `reconnect_window` for a user whose
/// last connection was lost after the steps completed to come back.
#[pyclass(module = "remote_access", frozen)]
#[derive(Clone)]
pub(crate) struct Policy(pub(crate) core::Policy);

#[pymethods]
impl Policy {
    #[new]
    #[pyo3(signature = (*, grace = None, max_build_duration = None, finish_if_unused_after = None, reconnect_window = None))]
    fn new(
        grace: Option<Seconds>,
        max_build_duration: Option<Seconds>,
        finish_if_unused_after: Option<Seconds>,
        reconnect_window: Option<Seconds>,
    ) -> PyResult<Self> {
        let mut policy = core::Policy::default();
        if let Some(Seconds(grace)) = grace {
            policy.grace = grace;
        }
        if let Some(Seconds(max)) = max_build_duration {
            policy.max_build_duration = max;
        }
        policy.finish_if_unused_after = finish_if_unused_after.map(|Seconds(d)| d);
        if let Some(Seconds(window)) = reconnect_window {
            policy.reconnect_window = window;
        }
        policy.validate().py()?;
        Ok(Self(policy))
    }

    #[getter]
    fn grace(&self) -> std::time::Duration {
        self.0.grace
    }

    #[getter]
    fn max_build_duration(&self) -> std::time::Duration {
        self.0.max_build_duration
    }

    #[getter]
    fn finish_if_unused_after(&self) -> Option<std::time::Duration> {
        self.0.finish_if_unused_after
    }

    #[getter]
    fn reconnect_window(&self) -> std::time::Duration {
        self.0.reconnect_window
    }

    /// The rules in words, for any build under this policy.
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn __repr__(&self) -> String {
        format!(
            "Policy(grace={:?}, max_build_duration={:?}, finish_if_unused_after={:?}, reconnect_window={:?})",
            self.0.grace, self.0.max_build_duration, self.0.finish_if_unused_after, self.0.reconnect_window
        )
    }
}

/// Where a build's machine is and what the gateway may reach on it.
#[pyclass(module = "remote_access", frozen)]
#[derive(Clone)]
pub(crate) struct Builder(pub(crate) core::Builder);

#[pymethods]
impl Builder {
    #[new]
    #[pyo3(signature = (address, *, ssh_port = 22, extra_ports = Vec::new(), vnc_port = None, user = None, reverse_tunnel = false, host_key = None))]
    fn new(
        address: &str,
        ssh_port: u16,
        extra_ports: Vec<u16>,
        vnc_port: Option<u16>,
        user: Option<String>,
        reverse_tunnel: bool,
        host_key: Option<String>,
    ) -> PyResult<Self> {
        let mut builder = core::Builder::new(ip("builder address", address)?);
        builder.ssh_port = ssh_port;
        builder.extra_ports = extra_ports;
        builder.vnc_port = vnc_port;
        if let Some(user) = user {
            builder.user = user;
        }
        builder.reverse_tunnel = reverse_tunnel;
        builder.host_key = host_key;
        Ok(Self(builder))
    }

    #[getter]
    fn address(&self) -> String {
        self.0.address.to_string()
    }
    #[getter]
    fn ssh_port(&self) -> u16 {
        self.0.ssh_port
    }
    #[getter]
    fn extra_ports(&self) -> Vec<u16> {
        self.0.extra_ports.clone()
    }
    #[getter]
    fn vnc_port(&self) -> Option<u16> {
        self.0.vnc_port
    }
    #[getter]
    fn user(&self) -> String {
        self.0.user.clone()
    }
    #[getter]
    fn reverse_tunnel(&self) -> bool {
        self.0.reverse_tunnel
    }
    #[getter]
    fn host_key(&self) -> Option<String> {
        self.0.host_key.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Builder({:?}, ssh_port={}, extra_ports={:?}, vnc_port={:?}, user={:?}, reverse_tunnel={})",
            self.0.address.to_string(),
            self.0.ssh_port,
            self.0.extra_ports,
            self.0.vnc_port,
            self.0.user,
            self.0.reverse_tunnel
        )
    }
}

/// A clock that only moves when told to: for tests of the time rules.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct ManualClock(pub(crate) Arc<core::ManualClock>);

#[pymethods]
impl ManualClock {
    #[new]
    fn new(start: OffsetDateTime) -> Self {
        Self(Arc::new(core::ManualClock::new(start)))
    }

    /// Moves the clock forward.
    fn advance(&self, by: Seconds) {
        self.0.advance(by.0);
    }

    /// Sets the clock.
    fn set(&self, to: OffsetDateTime) {
        self.0.set(to);
    }

    fn now(&self) -> OffsetDateTime {
        core::Clock::now(self.0.as_ref())
    }
}

/// One build's credentials. The private keys and the VNC passwords are only returned by the
/// explicit `*_private_key_openssh()`, `vnc_password()` and `builder_vnc_password()` calls:
/// never in `repr()`, `str()`, errors, or pickles (these objects cannot be pickled).
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Credentials(pub(crate) core::Credentials);

#[pymethods]
impl Credentials {
    #[getter]
    fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    #[getter]
    fn username(&self) -> String {
        self.0.username().to_owned()
    }
    #[getter]
    fn public_key(&self) -> String {
        self.0.public_key().to_owned()
    }
    #[getter]
    fn fingerprint(&self) -> String {
        self.0.fingerprint().to_owned()
    }
    #[getter]
    fn agent_username(&self) -> Option<String> {
        self.0.agent_username().map(str::to_owned)
    }
    #[getter]
    fn agent_fingerprint(&self) -> Option<String> {
        self.0.agent_fingerprint().map(str::to_owned)
    }

    /// The OpenSSH user certificate of the build's key, when the authority has a user CA and
    /// the build a builder (public; the scripts use it).
    #[getter]
    fn certificate(&self) -> Option<String> {
        self.0.certificate().map(str::to_owned)
    }
    /// The builder's host certificate, when the authority has a host CA and the request gave
    /// the builder's host key: the builder sshd's `HostCertificate`.
    #[getter]
    fn builder_host_certificate(&self) -> Option<String> {
        self.0.builder_host_certificate().map(str::to_owned)
    }

    /// The line to put in the builder's `authorized_keys`.
    fn authorized_keys_line(&self) -> String {
        self.0.authorized_keys_line()
    }

    /// The same line with OpenSSH restrictions (no agent or X11 forwarding, no port forwarding).
    fn authorized_keys_line_restricted(&self) -> String {
        self.0.authorized_keys_line_restricted()
    }

    /// The user's private key in OpenSSH format. A secret: hand it only to the user.
    fn private_key_openssh<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        Ok(PyString::new(py, self.0.private_key_openssh().py()?.expose()))
    }

    /// The builder agent's private key (reverse-tunnel builds), in OpenSSH format. A secret.
    fn agent_private_key_openssh<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        Ok(self.0.agent_private_key_openssh().py()?.map(|key| PyString::new(py, key.expose())))
    }

    /// The VNC password the user types. A secret.
    fn vnc_password<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.0.vnc_password().expose())
    }

    /// The builder's own VNC password (or macOS account password), generated for this build
    /// unless one was supplied: install it on the builder. A secret; `None` without VNC.
    fn builder_vnc_password<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        self.0.builder_vnc_password().map(|password| PyString::new(py, password.expose()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Credentials(build_id={:?}, username={:?}, fingerprint={:?}, secrets=<redacted>)",
            self.0.build_id().as_str(),
            self.0.username(),
            self.0.fingerprint()
        )
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err("Credentials hold secrets and cannot be pickled"))
    }
}

/// A snapshot of one build's remote access session.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Session(pub(crate) core::Session);

#[pymethods]
impl Session {
    #[getter]
    fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    /// `steps_running`, `steps_completed` or `ended`.
    #[getter]
    fn phase(&self) -> &'static str {
        self.0.phase().as_str()
    }
    #[getter]
    fn policy(&self) -> Policy {
        Policy(*self.0.policy())
    }
    #[getter]
    fn builder(&self) -> Option<Builder> {
        self.0.builder().cloned().map(Builder)
    }
    #[getter]
    fn started_at(&self) -> OffsetDateTime {
        self.0.started_at()
    }
    #[getter]
    fn steps_completed_at(&self) -> Option<OffsetDateTime> {
        self.0.steps_completed_at()
    }
    /// When access ends at the latest, as things stand.
    #[getter]
    fn deadline(&self) -> OffsetDateTime {
        self.0.deadline()
    }
    /// The latest end whatever happens: the build's start plus its maximum duration.
    #[getter]
    fn max_end(&self) -> OffsetDateTime {
        self.0.max_end()
    }
    /// While the session waits for a user whose last connection was lost: until when.
    #[getter]
    fn reconnect_by(&self) -> Option<OffsetDateTime> {
        self.0.reconnect_by()
    }
    /// The build's rule in words, with its own numbers (and the actual deadline once the
    /// steps completed).
    #[getter]
    fn access_rule(&self) -> String {
        self.0.access_rule()
    }
    #[getter]
    fn is_ended(&self) -> bool {
        self.0.is_ended()
    }
    /// Why the session ended, if it has.
    #[getter]
    fn end_reason(&self) -> Option<String> {
        self.0.end().map(|(reason, _)| reason.to_string())
    }
    /// Why the session ended, as a stable code: `grace_elapsed`, `max_duration_reached`,
    /// `nobody_connected`, `logged_out`, `connection_lost`, `revoked`, `cancelled` or
    /// `build_finished`.
    #[getter]
    fn end_reason_code(&self) -> Option<&'static str> {
        self.0.end().map(|(reason, _)| reason.code())
    }
    #[getter]
    fn ended_at(&self) -> Option<OffsetDateTime> {
        self.0.end().map(|(_, at)| at)
    }
    /// The gateway port for this build's VNC, if it has one.
    #[getter]
    fn vnc_port(&self) -> Option<u16> {
        self.0.vnc_port()
    }
    #[getter]
    fn ever_connected(&self) -> bool {
        self.0.ever_connected()
    }
    /// `(connection id, "ssh" | "vnc")` for each live connection.
    #[getter]
    fn live_connections(&self) -> Vec<(String, &'static str)> {
        self.0.live_connections().map(|(id, protocol)| (id.to_string(), protocol.as_str())).collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Session(build_id={:?}, phase={:?}, deadline={})",
            self.0.build_id().as_str(),
            self.0.phase().as_str(),
            self.0.deadline()
        )
    }
}

/// Issues, verifies and revokes per-build credentials and enforces each build's time rules.
/// Options are keyword arguments. The store is in memory unless `redis_url` names a Redis that
/// several gateways share (`docs/scaling.md`).
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Authority(pub(crate) core::Authority);

#[pymethods]
impl Authority {
    #[new]
    #[pyo3(signature = (*, policy = None, tombstone_retention = None, vnc_ports = Vec::new(), clock = None, redis_url = None, redis_key_prefix = None, redis_tls_ca = None, redis_tls_client = None, redis_min_replicas = None, max_store_outage = None, event_queue = None, user_ca = None, certificate_source_addresses = Vec::new(), host_ca = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        policy: Option<PyRef<'_, Policy>>,
        tombstone_retention: Option<Seconds>,
        vnc_ports: Vec<u16>,
        clock: Option<PyRef<'_, ManualClock>>,
        redis_url: Option<String>,
        redis_key_prefix: Option<String>,
        redis_tls_ca: Option<String>,
        redis_tls_client: Option<(String, String)>,
        redis_min_replicas: Option<u32>,
        max_store_outage: Option<Seconds>,
        event_queue: Option<usize>,
        user_ca: Option<PyRef<'_, SshCa>>,
        certificate_source_addresses: Vec<String>,
        host_ca: Option<PyRef<'_, SshCa>>,
    ) -> PyResult<Self> {
        let mut options = core::AuthorityOptions::default();
        options.user_ca = user_ca.map(|ca| ca.0.clone());
        options.certificate_source_addresses = certificate_source_addresses;
        options.host_ca = host_ca.map(|ca| ca.0.clone());
        if let Some(policy) = policy {
            options.policy = policy.0;
        }
        if let Some(Seconds(retention)) = tombstone_retention {
            options.tombstone_retention = retention;
        }
        if let Some(Seconds(outage)) = max_store_outage {
            options.max_store_outage = outage;
        }
        options.event_queue = event_queue.unwrap_or(options.event_queue);
        options.vnc_ports = vnc_ports;
        if let Some(url) = redis_url {
            let mut redis = core::RedisOptions::new(url);
            redis.key_prefix = redis_key_prefix.unwrap_or(redis.key_prefix);
            redis.tls_ca_pem = redis_tls_ca;
            redis.tls_client = redis_tls_client.map(|(chain, key)| (chain, core::Secret::new(key)));
            redis.min_replicas = redis_min_replicas;
            options.store = core::StoreOptions::Redis(redis);
        } else if redis_tls_ca.is_some() || redis_tls_client.is_some() {
            return Err(crate::convert::invalid(
                "redis_tls_ca",
                "TLS settings for Redis need redis_url".into(),
            ));
        }
        match clock {
            Some(clock) => core::Authority::with_clock(options, clock.0.clone()),
            None => core::Authority::new(options),
        }
        .py()
        .map(Self)
    }

    #[getter]
    fn policy(&self) -> Policy {
        Policy(self.0.options().policy)
    }
    #[getter]
    fn vnc_ports(&self) -> Vec<u16> {
        self.0.options().vnc_ports.clone()
    }
    #[getter]
    fn tombstone_retention(&self) -> std::time::Duration {
        self.0.options().tombstone_retention
    }
    #[getter]
    fn max_store_outage(&self) -> std::time::Duration {
        self.0.options().max_store_outage
    }
    #[getter]
    fn event_queue(&self) -> usize {
        self.0.options().event_queue
    }

    /// The authority's clock.
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }

    /// Every event from now on: a `remote_access.Subscription` (`async for event in ...`).
    /// The events of every authority on this store (the whole fleet with Redis), oldest first
    /// (awaitable → `FleetEvents`, an async iterator of `(id, Event)`): after the event with
    /// id `after` (to resume after a restart), or with `None` those appended from now on.
    #[pyo3(signature = (after = None))]
    fn fleet_events<'py>(&self, py: Python<'py>, after: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move {
            let events = authority.fleet_events(after.as_deref()).await.py()?;
            Ok(crate::events::FleetEvents::new(events))
        })
    }

    fn subscribe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let queue = Bound::new(py, NativeSubscription::new(self.0.subscribe()))?;
        py.import("remote_access")?.getattr("Subscription")?.call1((queue,))
    }

    /// Issues credentials for a build (awaitable → `Credentials`).
    /// `trigger` and `remote_access_enabled` have no defaults, as in the core: the platform
    /// states them for every build.
    #[pyo3(signature = (build_id, *, trigger, remote_access_enabled, started_at = None, policy = None, builder = None, builder_vnc_password = None, builder_vnc_username = None))]
    #[allow(clippy::too_many_arguments)]
    fn issue<'py>(
        &self,
        py: Python<'py>,
        build_id: &str,
        trigger: &str,
        remote_access_enabled: bool,
        started_at: Option<OffsetDateTime>,
        policy: Option<PyRef<'_, Policy>>,
        builder: Option<PyRef<'_, Builder>>,
        builder_vnc_password: Option<&str>,
        builder_vnc_username: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let builder_vnc_password = builder_vnc_password.map(|p| core::Secret::new(p.to_owned()));
        let mut request =
            core::BuildRequest::new(self::build_id(build_id)?, trigger.parse().py()?, remote_access_enabled);
        request.started_at = started_at;
        request.policy = policy.map(|p| p.0);
        request.builder = builder.map(|b| b.0.clone());
        request.builder_vnc_password = builder_vnc_password;
        request.builder_vnc_username = builder_vnc_username;
        let authority = self.0.clone();
        awaitable(py, async move { authority.issue(request).await.py().map(Credentials) })
    }

    /// Records that the build's steps completed: the grace period starts.
    fn steps_completed<'py>(&self, py: Python<'py>, build_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.steps_completed(&id).await.py() })
    }

    /// Records that the platform finished the build itself: access ends.
    fn build_finished<'py>(&self, py: Python<'py>, build_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.build_finished(&id).await.py() })
    }

    /// Records that the build was cancelled: access ends.
    fn cancel<'py>(&self, py: Python<'py>, build_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.cancel(&id).await.py() })
    }

    /// Revokes the build's credentials now and cuts its live connections.
    fn revoke<'py>(&self, py: Python<'py>, build_id: &str, reason: String) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.revoke(&id, &reason).await.py() })
    }

    /// Signs a builder's host key (`ssh-ed25519 AAAA...`) with the host CA for `addresses` (IP
    /// addresses as text), valid for `valid_for` (a `timedelta` or seconds): the builder sshd's
    /// `HostCertificate`.
    fn certify_host(&self, host_key: &str, addresses: Vec<String>, valid_for: Seconds) -> PyResult<String> {
        let addresses =
            addresses.iter().map(|address| ip("addresses", address)).collect::<PyResult<Vec<_>>>()?;
        self.0.certify_host(host_key, &addresses, valid_for.0).py()
    }

    /// A KRL (OpenSSH key revocation list, bytes) of the keys of ended builds whose
    /// certificates are still valid, for the builder sshd's `RevokedKeys` (awaitable → `bytes`).
    fn revoked_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move { authority.revoked_keys().await.py() })
    }

    /// The build's session (awaitable → `Session`).
    fn session<'py>(&self, py: Python<'py>, build_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.session(&id).await.py().map(Session) })
    }

    /// The build's connection info, without secrets, as of now (awaitable →
    /// `remote_access.ConnectionInfo`): from what the authority keeps, so no `Credentials`
    /// are needed (the scripts still need them).
    fn connection_info<'py>(
        &self,
        py: Python<'py>,
        build_id: &str,
        host_key: PyRef<'_, HostKey>,
        options: PyRef<'_, ScriptOptions>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        let (host_key, options) = (host_key.0.clone(), options.0.clone());
        awaitable(py, async move {
            authority.connection_info(&id, &host_key, &options).await.py().map(PublicConnectionInfo)
        })
    }

    /// Checks an SSH login (awaitable → the build id it belongs to).
    fn verify_ssh<'py>(
        &self,
        py: Python<'py>,
        username: String,
        public_key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move {
            authority.verify_ssh(&username, &public_key).await.py().map(|id| id.to_string())
        })
    }

    /// Checks a VNC password for a build.
    fn verify_vnc<'py>(
        &self,
        py: Python<'py>,
        build_id: &str,
        password: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let password = core::Secret::new(password.to_owned());
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        awaitable(py, async move { authority.verify_vnc(&id, password.expose()).await.py() })
    }

    /// Records a user connection to the build (awaitable → `LiveConnection`); `protocol` is
    /// `ssh` or `vnc`. Raises `SessionEndedError` once access is over.
    fn connected<'py>(&self, py: Python<'py>, build_id: &str, protocol: &str) -> PyResult<Bound<'py, PyAny>> {
        let (authority, id) = (self.0.clone(), self::build_id(build_id)?);
        let protocol: core::Protocol = protocol.parse().py()?;
        awaitable(py, async move { authority.connected(&id, protocol).await.py().map(LiveConnection) })
    }

    /// Enforces the deadlines, follows the store and purges until cancelled (awaitable): for
    /// platforms that carry connections themselves (`connected()`); a running gateway does
    /// this by itself.
    fn run_housekeeping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move {
            authority.run_housekeeping(std::future::pending()).await;
            Ok(())
        })
    }

    /// Ends every session whose deadline has passed (awaitable → how many). A running gateway
    /// does this by itself.
    fn expire_due<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move { authority.expire_due().await.py() })
    }

    /// The earliest deadline of any live session (awaitable → datetime or None).
    fn next_deadline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move { authority.next_deadline().await.py() })
    }

    /// Forgets tombstones older than the retention (awaitable → how many).
    fn purge<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let authority = self.0.clone();
        awaitable(py, async move { authority.purge().await.py() })
    }

    fn __repr__(&self) -> String {
        format!(
            "Authority(policy={}, vnc_ports={:?})",
            Policy(self.0.options().policy).__repr__(),
            self.0.options().vnc_ports
        )
    }
}

/// A user connection the platform carries itself (for transports other than the built-in
/// gateway): `connection = await authority.connected(build_id, "ssh")`, then `await
/// connection.disconnect()` when it closes; `await connection.closed()` returns when access ends
/// and the connection must be closed. One dropped by the garbage collector without a report is
/// recorded as lost (by the core): never taken for a logout.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct LiveConnection(core::LiveConnection);

#[pymethods]
impl LiveConnection {
    #[getter]
    fn build_id(&self) -> String {
        self.0.build_id().to_string()
    }
    #[getter]
    fn id(&self) -> String {
        self.0.id().to_string()
    }
    #[getter]
    fn protocol(&self) -> &'static str {
        self.0.protocol().as_str()
    }
    /// Whether access has ended for this connection.
    #[getter]
    fn is_cut(&self) -> bool {
        self.0.is_cut()
    }
    /// Resolves when access ends (revoke, deadline, cancel): close the connection then. It
    /// also resolves, with `is_cut` false, once the connection's end is recorded.
    fn closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let closed = self.0.closed();
        awaitable(py, async move {
            closed.await;
            Ok(())
        })
    }
    /// Records that the connection closed because its user left (after the build steps, the
    /// last one closing is a logout, which ends access and asks to finish the build). Only
    /// the first report counts.
    fn disconnect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.0.clone();
        awaitable(py, async move { connection.disconnect().await.py() })
    }
    /// Records that the connection was lost to the network (a reset, a timeout), not closed by
    /// its user: after the build steps, the last one lost opens the policy's reconnect window
    /// instead of logging out. Only the first report counts.
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.0.clone();
        awaitable(py, async move { connection.lost().await.py() })
    }
    /// Records that the connection went away because its carrier stopped (not a logout). Only
    /// the first report counts.
    fn detach<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let connection = self.0.clone();
        awaitable(py, async move { connection.detach().await.py() })
    }
    fn __repr__(&self) -> String {
        format!(
            "LiveConnection(build_id={:?}, id={:?}, protocol={:?})",
            self.build_id(),
            self.id(),
            self.protocol()
        )
    }
}
