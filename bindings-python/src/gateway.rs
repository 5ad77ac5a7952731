//! The gateway: host key, VNC TLS certificate, start and stop, `async with`, and the registry
//! that keeps started gateways serving when Python drops their handles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use remote_access_core as core;

use crate::authority::Authority;
use crate::convert::Seconds;
use crate::errors::IntoPyResult;
use crate::runtime::awaitable;

/// The gateway's SSH host key, which users pin. Persist it (`to_openssh()`) so that it
/// survives restarts.
#[pyclass(module = "remote_access", frozen)]
#[derive(Clone)]
pub(crate) struct HostKey(pub(crate) core::HostKey);

#[pymethods]
impl HostKey {
    /// A new Ed25519 host key.
    #[staticmethod]
    fn generate(py: Python<'_>) -> PyResult<Self> {
        py.detach(core::HostKey::generate).py().map(Self)
    }

    /// A key from its OpenSSH private key text (as written by `to_openssh()` or `ssh-keygen`).
    #[staticmethod]
    fn from_openssh(py: Python<'_>, text: &str) -> PyResult<Self> {
        let text = core::Secret::new(text.to_owned());
        py.detach(|| core::HostKey::from_openssh(text.expose())).py().map(Self)
    }

    /// The private key in OpenSSH format. A secret: store it like one.
    fn to_openssh<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        Ok(PyString::new(py, self.0.to_openssh().py()?.expose()))
    }

    /// The public key line (`ssh-ed25519 AAAA...`), for `known_hosts`.
    #[getter]
    fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// `SHA256:...`, as `ssh` prints it.
    #[getter]
    fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    fn __repr__(&self) -> String {
        format!("HostKey({})", self.0.fingerprint())
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "a HostKey holds a private key and cannot be pickled; persist to_openssh() instead",
        ))
    }
}

/// An SSH certificate authority key (Ed25519): `Authority(user_ca=...)` signs each build's key
/// with it, `Authority(host_ca=...)` builders' host keys. Persist it (`to_openssh()`, a secret:
/// it opens every builder that trusts it).
#[pyclass(module = "remote_access", frozen)]
#[derive(Clone)]
pub(crate) struct SshCa(pub(crate) core::SshCa);

#[pymethods]
impl SshCa {
    /// A new Ed25519 CA key.
    #[staticmethod]
    fn generate(py: Python<'_>) -> PyResult<Self> {
        py.detach(core::SshCa::generate).py().map(Self)
    }

    /// A CA key from its OpenSSH private key text (Ed25519, unencrypted).
    #[staticmethod]
    fn from_openssh(py: Python<'_>, text: &str) -> PyResult<Self> {
        let text = core::Secret::new(text.to_owned());
        py.detach(|| core::SshCa::from_openssh(text.expose())).py().map(Self)
    }

    /// The private key in OpenSSH format. A secret: store it like one.
    fn to_openssh<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        Ok(PyString::new(py, self.0.to_openssh().py()?.expose()))
    }

    /// The public key line (`ssh-ed25519 AAAA...`): for `TrustedUserCAKeys` (a user CA) or
    /// `ScriptOptions(builder_host_ca=...)` (a host CA).
    #[getter]
    fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// `SHA256:...` of the public key.
    #[getter]
    fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    fn __repr__(&self) -> String {
        format!("SshCa({})", self.0.fingerprint())
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "an SshCa holds a private key and cannot be pickled; persist to_openssh() instead",
        ))
    }
}

/// The gateway's TLS certificate chain and private key for its VNC ports (VeNCrypt `X509Vnc`
/// and `wss://`). Users check it by its SHA-256 `fingerprint`, which the connection info
/// carries (`ScriptOptions(vnc_tls_fingerprint=...)`). Persist a generated one
/// (`certificate_pem`, `private_key_pem()`) so that it survives restarts.
#[pyclass(module = "remote_access", frozen)]
#[derive(Clone)]
pub(crate) struct TlsIdentity(pub(crate) core::TlsIdentity);

#[pymethods]
impl TlsIdentity {
    /// A fresh self-signed certificate (ECDSA P-256) for `names` (host names or IP addresses,
    /// as users type them), for a quickstart or a test.
    #[staticmethod]
    fn generate(py: Python<'_>, names: Vec<String>) -> PyResult<Self> {
        py.detach(|| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            core::TlsIdentity::generate(&names)
        })
        .py()
        .map(Self)
    }

    /// A certificate chain (PEM, leaf first) and the leaf's private key (PEM, unencrypted
    /// PKCS#8, SEC1 or PKCS#1); a key that does not fit the certificate is refused.
    #[staticmethod]
    fn from_pem(py: Python<'_>, certificate_chain_pem: &str, private_key_pem: &str) -> PyResult<Self> {
        let key = core::Secret::new(private_key_pem.to_owned());
        py.detach(|| core::TlsIdentity::from_pem(certificate_chain_pem, key.expose())).py().map(Self)
    }

    /// The certificate chain as PEM: public, for users' clients to trust.
    #[getter]
    fn certificate_pem(&self) -> String {
        self.0.certificate_pem()
    }

    /// The private key as PEM. A secret: store it like one.
    fn private_key_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.0.private_key_pem().expose())
    }

    /// The leaf certificate's SHA-256 fingerprint, `AB:CD:...` (as `openssl x509 -fingerprint
    /// -sha256` prints it).
    #[getter]
    fn fingerprint(&self) -> String {
        self.0.fingerprint().to_owned()
    }

    fn __repr__(&self) -> String {
        format!("TlsIdentity({})", self.0.fingerprint())
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "a TlsIdentity holds a private key and cannot be pickled; persist certificate_pem and private_key_pem() instead",
        ))
    }
}

/// The SSH gateway (and the VNC proxy on the authority's `vnc_ports`). Options are keyword
/// arguments with the core's defaults.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Gateway(core::Gateway);

#[pymethods]
impl Gateway {
    #[new]
    #[pyo3(signature = (authority, *, host_key = None, pre_auth_timeout = None, auth_rejection_delay = None, max_auth_attempts = None, max_unauthenticated = None, max_unauthenticated_per_ip = None, max_unauthenticated_per_prefix = None, silent_timeout = None, failures_before_backoff = None, new_connections_per_second = None, new_connections_burst = None, max_connections_per_build = None, max_channels_per_build = None, keepalive_interval = None, worker_threads = None, window_size = None, dial_timeout = None, builder_stall_timeout = None, kex_algorithms = None, ciphers = None, macs = None, vnc_tls = None, vnc_require_encryption = None, vnc_websocket = None, vnc_websocket_origins = None, reuse_port = None, metrics_address = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        authority: PyRef<'_, Authority>,
        host_key: Option<PyRef<'_, HostKey>>,
        pre_auth_timeout: Option<Seconds>,
        auth_rejection_delay: Option<Seconds>,
        max_auth_attempts: Option<usize>,
        max_unauthenticated: Option<usize>,
        max_unauthenticated_per_ip: Option<usize>,
        max_unauthenticated_per_prefix: Option<usize>,
        silent_timeout: Option<Seconds>,
        failures_before_backoff: Option<usize>,
        new_connections_per_second: Option<u32>,
        new_connections_burst: Option<u32>,
        max_connections_per_build: Option<usize>,
        max_channels_per_build: Option<usize>,
        keepalive_interval: Option<Seconds>,
        worker_threads: Option<usize>,
        window_size: Option<u32>,
        dial_timeout: Option<Seconds>,
        builder_stall_timeout: Option<Seconds>,
        kex_algorithms: Option<Vec<String>>,
        ciphers: Option<Vec<String>>,
        macs: Option<Vec<String>>,
        vnc_tls: Option<PyRef<'_, TlsIdentity>>,
        vnc_require_encryption: Option<bool>,
        vnc_websocket: Option<bool>,
        vnc_websocket_origins: Option<Vec<String>>,
        reuse_port: Option<bool>,
        metrics_address: Option<String>,
    ) -> PyResult<Self> {
        let mut options = core::GatewayOptions::default();
        options.host_key = host_key.map(|key| key.0.clone());
        let durations = [
            (pre_auth_timeout, &mut options.pre_auth_timeout),
            (auth_rejection_delay, &mut options.auth_rejection_delay),
            (silent_timeout, &mut options.silent_timeout),
            (keepalive_interval, &mut options.keepalive_interval),
            (dial_timeout, &mut options.dial_timeout),
            (builder_stall_timeout, &mut options.builder_stall_timeout),
        ];
        for (given, field) in durations {
            if let Some(Seconds(given)) = given {
                *field = given;
            }
        }
        options.max_auth_attempts = max_auth_attempts.unwrap_or(options.max_auth_attempts);
        options.max_unauthenticated = max_unauthenticated.unwrap_or(options.max_unauthenticated);
        options.max_unauthenticated_per_ip =
            max_unauthenticated_per_ip.unwrap_or(options.max_unauthenticated_per_ip);
        options.max_unauthenticated_per_prefix =
            max_unauthenticated_per_prefix.unwrap_or(options.max_unauthenticated_per_prefix);
        options.failures_before_backoff = failures_before_backoff.unwrap_or(options.failures_before_backoff);
        options.new_connections_per_second =
            new_connections_per_second.unwrap_or(options.new_connections_per_second);
        options.new_connections_burst = new_connections_burst.unwrap_or(options.new_connections_burst);
        options.max_connections_per_build =
            max_connections_per_build.unwrap_or(options.max_connections_per_build);
        options.max_channels_per_build = max_channels_per_build.unwrap_or(options.max_channels_per_build);
        options.worker_threads = worker_threads.unwrap_or(options.worker_threads);
        options.window_size = window_size.unwrap_or(options.window_size);
        let lists = [
            (kex_algorithms, &mut options.kex_algorithms),
            (ciphers, &mut options.ciphers),
            (macs, &mut options.macs),
            (vnc_websocket_origins, &mut options.vnc_websocket_origins),
        ];
        for (given, field) in lists {
            if let Some(given) = given {
                *field = given;
            }
        }
        options.vnc_tls = vnc_tls.map(|identity| identity.0.clone());
        options.vnc_require_encryption = vnc_require_encryption.unwrap_or(options.vnc_require_encryption);
        options.vnc_websocket = vnc_websocket.unwrap_or(options.vnc_websocket);
        options.reuse_port = reuse_port.unwrap_or(options.reuse_port);
        options.metrics_address = metrics_address
            .map(|addr| {
                addr.parse().map_err(|_| {
                    crate::convert::invalid(
                        "metrics_address",
                        format!("{addr:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9100)"),
                    )
                })
            })
            .transpose()?;
        let authority = authority.0.clone();
        py.detach(|| core::Gateway::new(authority, options)).py().map(Self)
    }

    #[getter]
    fn host_key(&self) -> HostKey {
        HostKey(self.0.host_key().clone())
    }

    #[getter]
    fn authority(&self) -> Authority {
        Authority(self.0.authority().clone())
    }

    /// What the gateway holds now: `ssh_connections`, `vnc_connections`, `unauthenticated`,
    /// `builder_channels`, `addresses_with_failures`, `evicted`, `rate_limited`.
    fn stats(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let stats = self.0.stats();
        std::collections::BTreeMap::from([
            ("ssh_connections", stats.ssh_connections),
            ("vnc_connections", stats.vnc_connections),
            ("unauthenticated", stats.unauthenticated),
            ("builder_channels", stats.builder_channels),
            ("addresses_with_failures", stats.addresses_with_failures),
            ("evicted", usize::try_from(stats.evicted).unwrap_or(usize::MAX)),
            ("rate_limited", usize::try_from(stats.rate_limited).unwrap_or(usize::MAX)),
        ])
    }

    /// What the gateway has counted, as Prometheus text (what `metrics_address` serves at
    /// `/metrics`), for serving from the application's own web server.
    fn metrics_text(&self) -> String {
        self.0.metrics_text()
    }

    /// Whether the gateway should get new connections: its store answers and it is not
    /// draining (what `metrics_address` serves at `/healthz`).
    fn ready(&self) -> bool {
        self.0.ready()
    }

    /// Binds `addr` (e.g. `"0.0.0.0:2222"`) and serves in the background: `await
    /// gateway.start(addr)` → a `RunningGateway`, which serves until `stop()` or the end of the
    /// process (dropping it does not stop it), or `async with gateway.start(addr) as running:`,
    /// which stops it on leaving the block. The VNC ports are bound on the same address.
    fn start(&self, addr: String) -> GatewayStart {
        GatewayStart { gateway: self.0.clone(), addr, begun: AtomicBool::new(false), entered: Arc::default() }
    }

    fn __repr__(&self) -> String {
        format!("Gateway(host_key={})", self.0.host_key().fingerprint())
    }
}

/// What `Gateway.start(addr)` returns: await it for a `RunningGateway`, or use it with
/// `async with` to stop the gateway on leaving the block. Like a coroutine, it starts the
/// gateway once, when awaited or entered.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct GatewayStart {
    gateway: core::Gateway,
    addr: String,
    /// Awaited or entered already.
    begun: AtomicBool,
    /// The gateway `async with` started, for `__aexit__` to stop.
    entered: Arc<StdMutex<Option<u64>>>,
}

impl GatewayStart {
    /// Starts the gateway (an awaitable → `RunningGateway`); `entered` records its id.
    fn begin<'py>(
        &self,
        py: Python<'py>,
        entered: Option<Arc<StdMutex<Option<u64>>>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.begun.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err(
                "this gateway.start() was already awaited or entered; call gateway.start() again",
            ));
        }
        let (gateway, addr) = (self.gateway.clone(), self.addr.clone());
        awaitable(py, async move {
            let running = gateway.start(&addr).await.py()?;
            let started = Started::serve(running);
            if let (Some(entered), Some(id)) = (entered, started.id()) {
                *entered.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
            }
            Ok(started)
        })
    }
}

#[pymethods]
impl GatewayStart {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.begin(py, None)?.call_method0("__await__")
    }

    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.begin(py, Some(self.entered.clone()))
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = self.entered.lock().unwrap_or_else(PoisonError::into_inner).take();
        awaitable(py, stop(id))
    }

    fn __repr__(&self) -> String {
        format!("GatewayStart({:?})", self.addr)
    }
}

/// The gateways serving in the background, by id. Held here, not by their `RunningGateway`,
/// so that they serve on when Python drops it (as `asyncio.start_server`'s servers do), until
/// `stop()`, or until the runtime stops at interpreter exit.
static SERVING: StdMutex<BTreeMap<u64, core::RunningGateway>> = StdMutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Stops the gateway `id` (if it still serves) and waits until it has stopped.
async fn stop(id: Option<u64>) -> PyResult<()> {
    let running = id.and_then(|id| SERVING.lock().unwrap_or_else(PoisonError::into_inner).remove(&id));
    match running {
        Some(running) => running.stop().await.py(),
        None => Ok(()),
    }
}

/// A started gateway on its way to Python. If it never gets there (the awaiting task was
/// cancelled just as the start completed), nobody could stop it, so it is stopped here.
struct Started(Option<RunningGateway>);

impl Started {
    fn serve(running: core::RunningGateway) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let local_addr = running.local_addr();
        SERVING.lock().unwrap_or_else(PoisonError::into_inner).insert(id, running);
        Self(Some(RunningGateway { id, local_addr }))
    }

    fn id(&self) -> Option<u64> {
        self.0.as_ref().map(|running| running.id)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            // Dropping a core `RunningGateway` stops it without waiting.
            drop(SERVING.lock().unwrap_or_else(PoisonError::into_inner).remove(&running.id));
        }
    }
}

impl<'py> IntoPyObject<'py> for Started {
    type Target = RunningGateway;
    type Output = Bound<'py, RunningGateway>;
    type Error = PyErr;

    fn into_pyobject(mut self, py: Python<'py>) -> PyResult<Self::Output> {
        let running =
            self.0.take().ok_or_else(|| PyRuntimeError::new_err("the gateway was handed over already"))?;
        Bound::new(py, running)
    }
}

/// A gateway serving in the background, until `await running.stop()` or the end of the
/// process: dropping it does not stop it. `async with running:` stops it on leaving the block.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct RunningGateway {
    id: u64,
    local_addr: std::net::SocketAddr,
}

#[pymethods]
impl RunningGateway {
    /// The host it listens on.
    #[getter]
    fn host(&self) -> String {
        self.local_addr.ip().to_string()
    }

    /// The port it listens on (useful after binding port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Whether it serves: false once `stop()` was called.
    #[getter]
    fn serving(&self) -> bool {
        SERVING.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&self.id)
    }

    /// Stops accepting, closes every connection and waits until all are gone. Live sessions
    /// are detached, not ended: a gateway started again on the same authority serves them.
    /// Stopping again does nothing.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, stop(Some(self.id)))
    }

    /// Replaces this gateway without downtime (with `reuse_port=True` and another gateway
    /// already on the same ports): closes its ports at once, serves its live connections until
    /// they end or `timeout` passes, then lets the rest go as `stop()` does. Cancelling the
    /// drain stops the gateway at once; draining a stopped gateway does nothing.
    fn drain<'py>(&self, py: Python<'py>, timeout: Seconds) -> PyResult<Bound<'py, PyAny>> {
        let id = self.id;
        awaitable(py, async move {
            // Out of the map from now: `serving` is false, and a cancelled drain drops (stops) it.
            let running = SERVING.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            let Some(mut running) = running else { return Ok(()) };
            running.drain(timeout.0).await.py()?;
            running.stop().await.py()
        })
    }

    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let this = slf.clone_ref(py);
        awaitable(py, async move { Ok(this) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.stop(py)
    }

    fn __repr__(&self) -> String {
        format!("RunningGateway({})", self.local_addr)
    }
}
