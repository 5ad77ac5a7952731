//! The gateway: host key, VNC TLS certificate, start and stop.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{ClassInstance, PromiseRaw, This, Unknown};
use napi::{Env, JsString, Result};

use napi_derive::napi;
use remote_access_core as core;

use crate::authority::Authority;
use crate::convert::{millis, millis_or, secret, whole};
use crate::errors::{OrThrow, Outcome, Stop, outcome, promise, stop_signal, stopped};
use crate::keepalive::KeepAlive;

/// The gateway's SSH host key, which users pin. Persist it (`toOpenssh()`) so that it survives
/// restarts.
#[napi]
pub struct HostKey(pub(crate) core::HostKey);

#[napi]
impl HostKey {
    /// A new Ed25519 host key.
    #[napi(factory)]
    pub fn generate(env: Env) -> Result<Self> {
        core::HostKey::generate().or_throw(&env).map(Self)
    }

    /// A key from its OpenSSH private key text.
    #[napi(factory)]
    pub fn from_openssh(env: Env, #[napi(ts_arg_type = "string")] text: Unknown<'_>) -> Result<Self> {
        let text = secret(&env, "host key", text)?;
        core::HostKey::from_openssh(text.expose()).or_throw(&env).map(Self)
    }

    /// The private key in OpenSSH format. A secret: store it like one.
    #[napi]
    pub fn to_openssh<'env>(&self, env: &'env Env) -> Result<JsString<'env>> {
        env.create_string(self.0.to_openssh().or_throw(env)?.expose())
    }

    /// The public key line (`ssh-ed25519 AAAA...`), for `known_hosts`.
    #[napi(getter)]
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// `SHA256:...`, as `ssh` prints it.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    /// The public parts only, for `JSON.stringify`.
    #[napi(js_name = "toJSON", ts_return_type = "{ publicKey: string; fingerprint: string }")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "publicKey": self.public_key(), "fingerprint": self.fingerprint() })
    }
}

/// An SSH certificate authority key (Ed25519): `new Authority({ userCa })` signs each build's
/// key with it, `hostCa` builders' host keys. Persist it (`toOpenssh()`, a secret: it opens
/// every builder that trusts it).
#[napi]
pub struct SshCa(pub(crate) core::SshCa);

#[napi]
impl SshCa {
    /// A new Ed25519 CA key.
    #[napi(factory)]
    pub fn generate(env: Env) -> Result<Self> {
        core::SshCa::generate().or_throw(&env).map(Self)
    }

    /// A CA key from its OpenSSH private key text (Ed25519, unencrypted).
    #[napi(factory)]
    pub fn from_openssh(env: Env, #[napi(ts_arg_type = "string")] text: Unknown<'_>) -> Result<Self> {
        let text = secret(&env, "CA key", text)?;
        core::SshCa::from_openssh(text.expose()).or_throw(&env).map(Self)
    }

    /// The private key in OpenSSH format. A secret: store it like one.
    #[napi]
    pub fn to_openssh<'env>(&self, env: &'env Env) -> Result<JsString<'env>> {
        env.create_string(self.0.to_openssh().or_throw(env)?.expose())
    }

    /// The public key line (`ssh-ed25519 AAAA...`): for `TrustedUserCAKeys` (a user CA) or the
    /// script options' `builderHostCa` (a host CA).
    #[napi(getter)]
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// `SHA256:...` of the public key.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    /// The public parts only, for `JSON.stringify`.
    #[napi(js_name = "toJSON", ts_return_type = "{ publicKey: string; fingerprint: string }")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "publicKey": self.public_key(), "fingerprint": self.fingerprint() })
    }
}

/// The gateway's TLS certificate chain and private key for its VNC ports (VeNCrypt `X509Vnc`
/// and `wss://`). Users check it by its SHA-256 `fingerprint`, which the connection info
/// carries (`vncTlsFingerprint` of the script options). Persist a generated one
/// (`certificatePem`, `privateKeyPem()`) so that it survives restarts.
#[napi]
pub struct TlsIdentity(pub(crate) core::TlsIdentity);

#[napi]
impl TlsIdentity {
    /// A fresh self-signed certificate (ECDSA P-256) for `names` (host names or IP addresses,
    /// as users type them), for a quickstart or a test.
    #[napi(factory)]
    pub fn generate(env: Env, names: Vec<String>) -> Result<Self> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        core::TlsIdentity::generate(&names).or_throw(&env).map(Self)
    }

    /// A certificate chain (PEM, leaf first) and the leaf's private key (PEM, unencrypted
    /// PKCS#8, SEC1 or PKCS#1); a key that does not fit the certificate is refused.
    #[napi(factory)]
    pub fn from_pem(
        env: Env,
        certificate_chain_pem: String,
        #[napi(ts_arg_type = "string")] private_key_pem: Unknown<'_>,
    ) -> Result<Self> {
        let key = secret(&env, "vnc_tls private key", private_key_pem)?;
        core::TlsIdentity::from_pem(&certificate_chain_pem, key.expose()).or_throw(&env).map(Self)
    }

    /// The certificate chain as PEM: public, for users' clients to trust.
    #[napi(getter)]
    pub fn certificate_pem(&self) -> String {
        self.0.certificate_pem()
    }

    /// The private key as PEM. A secret: store it like one.
    #[napi]
    pub fn private_key_pem<'env>(&self, env: &'env Env) -> Result<JsString<'env>> {
        env.create_string(self.0.private_key_pem().expose())
    }

    /// The leaf certificate's SHA-256 fingerprint, `AB:CD:...` (as `openssl x509 -fingerprint
    /// -sha256` prints it).
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_owned()
    }

    /// The public parts only, for `JSON.stringify`.
    #[napi(js_name = "toJSON", ts_return_type = "{ certificatePem: string; fingerprint: string }")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "certificatePem": self.certificate_pem(), "fingerprint": self.fingerprint() })
    }
}

/// Options of a `Gateway` (durations in milliseconds); every field has the core's default.
#[napi(object)]
#[derive(Default)]
pub struct GatewayOptions<'a> {
    /// The gateway's SSH host key, which users pin. Omitted: a new key, which changes at every
    /// start (persist one in production).
    pub host_key: Option<ClassInstance<'a, HostKey>>,
    /// A connection must authenticate within this time (default 30 s).
    pub pre_auth_timeout_ms: Option<f64>,
    /// Every refused authentication attempt takes this long (default 1 s).
    pub auth_rejection_delay_ms: Option<f64>,
    /// Authentication attempts allowed per connection (default 6).
    pub max_auth_attempts: Option<f64>,
    /// SSH connections, and as many VNC ones, waiting to authenticate at once (default
    /// 10,000); when full, a newcomer replaces the oldest of the network holding the most.
    pub max_unauthenticated: Option<f64>,
    /// The share of one source address (default 32).
    pub max_unauthenticated_per_ip: Option<f64>,
    /// The share of one /24 (IPv4) or /64 (IPv6) network (default 256).
    pub max_unauthenticated_per_prefix: Option<f64>,
    /// A connection that has not identified itself within this is cut (default 5 s).
    pub silent_timeout_ms: Option<f64>,
    /// Failed logins in a row from one network before its new connections are closed at once,
    /// backing off from 1 s to 5 min (default 20).
    pub failures_before_backoff: Option<f64>,
    /// New connections (SSH and VNC together) one address may open per second (default 10);
    /// its /24 or /64 network eight times as many. Those over the rate are closed at once.
    pub new_connections_per_second: Option<f64>,
    /// New connections one address may open at once before the rate applies (default 20; its
    /// network eight times as many).
    pub new_connections_burst: Option<f64>,
    /// User connections one build may hold at once on this gateway (default 16).
    pub max_connections_per_build: Option<f64>,
    /// Builder channels one build may hold at once on this gateway (default 64).
    pub max_channels_per_build: Option<f64>,
    /// Idle connections are probed this often (default 30 s).
    pub keepalive_interval_ms: Option<f64>,
    /// Threads of the gateway's own that serve its connections, each connection wholly on one
    /// (default 0: napi-rs's runtime serves them); about a fifth less CPU in bulk transfers. At
    /// most 1,024.
    pub worker_threads: Option<f64>,
    /// SSH channel window in bytes (default 8 MiB).
    pub window_size: Option<f64>,
    /// How long to wait for a builder to accept a connection (default 10 s).
    pub dial_timeout_ms: Option<f64>,
    /// How long a builder may leave a user's data unread before that connection to it is
    /// closed (default 60 s).
    pub builder_stall_timeout_ms: Option<f64>,
    /// The SSH key exchanges offered, most preferred first (default: `mlkem768x25519-sha256`,
    /// `curve25519-sha256`, `curve25519-sha256@libssh.org`); unknown names and `none` are
    /// refused.
    pub kex_algorithms: Option<Vec<String>>,
    /// The SSH ciphers offered (default: `chacha20-poly1305@openssh.com`,
    /// `aes128-gcm@openssh.com`, `aes256-gcm@openssh.com`, `aes128-ctr`, `aes192-ctr`,
    /// `aes256-ctr`).
    pub ciphers: Option<Vec<String>>,
    /// The SSH MACs offered, for the ciphers that need one (default:
    /// `hmac-sha2-256-etm@openssh.com`, `hmac-sha2-512-etm@openssh.com`, `hmac-sha2-256`,
    /// `hmac-sha2-512`).
    pub macs: Option<Vec<String>>,
    /// The TLS certificate of the VNC ports (default none). With one, they also offer VeNCrypt
    /// `X509Vnc` (TigerVNC, Remmina, gtk-vnc) and `wss://` to browsers (noVNC); give users its
    /// fingerprint (`vncTlsFingerprint` of the script options). See `docs/vnc.md`.
    pub vnc_tls: Option<ClassInstance<'a, TlsIdentity>>,
    /// Offer no unencrypted VNC on the VNC ports (default false; needs `vncTls`): plain VNC
    /// Authentication and `ws://` are refused; VNC inside the SSH tunnel stays open.
    pub vnc_require_encryption: Option<bool>,
    /// Also serve RFB over WebSocket on the VNC ports (default true), for noVNC with no
    /// websockify: `ws[s]://<gateway>:<vnc port>/websockify`.
    pub vnc_websocket: Option<bool>,
    /// The browser origins allowed to open the VNC WebSocket, e.g. `https://ci.example.com`
    /// (default empty: any).
    pub vnc_websocket_origins: Option<Vec<String>>,
    /// Bind the ports with `SO_REUSEPORT` (default false), so that another gateway can listen
    /// on them too: how this one is replaced without downtime (`running.drain()`; set
    /// `net.ipv4.tcp_migrate_req=1` as well).
    pub reuse_port: Option<bool>,
    /// `"ADDRESS:PORT"` where plain HTTP serves `GET /metrics` (`metricsText()`) and
    /// `GET /healthz` (200 while `ready()`, else 503) (default none); keep it private.
    pub metrics_address: Option<String>,
}

/// What a gateway holds right now (`gateway.stats()`).
#[napi(object)]
pub struct GatewayStats {
    /// SSH connections being served (authenticated or not).
    pub ssh_connections: f64,
    /// VNC connections being served (in the handshake or spliced).
    pub vnc_connections: f64,
    /// Connections of either kind that have not authenticated yet.
    pub unauthenticated: f64,
    /// Connections to builders that SSH users opened.
    pub builder_channels: f64,
    /// Source networks whose recent failed logins are remembered.
    pub addresses_with_failures: f64,
    /// Unauthenticated connections closed to make room for newcomers, since the start.
    pub evicted: f64,
    /// New connections closed at once because their source opened them too fast, since the
    /// start.
    pub rate_limited: f64,
}

/// The SSH gateway (and the VNC proxy on the authority's `vncPorts`).
#[napi]
pub struct Gateway(core::Gateway);

#[napi]
impl Gateway {
    #[napi(constructor)]
    pub fn new(env: Env, authority: &Authority, options: Option<GatewayOptions<'_>>) -> Result<Self> {
        let given = options.unwrap_or_default();
        let mut options = core::GatewayOptions::default();
        options.host_key = given.host_key.map(|key| key.0.clone());
        options.pre_auth_timeout =
            millis_or(&env, "preAuthTimeoutMs", given.pre_auth_timeout_ms, options.pre_auth_timeout)?;
        options.auth_rejection_delay = millis_or(
            &env,
            "authRejectionDelayMs",
            given.auth_rejection_delay_ms,
            options.auth_rejection_delay,
        )?;
        options.keepalive_interval =
            millis_or(&env, "keepaliveIntervalMs", given.keepalive_interval_ms, options.keepalive_interval)?;
        options.dial_timeout = millis_or(&env, "dialTimeoutMs", given.dial_timeout_ms, options.dial_timeout)?;
        options.silent_timeout =
            millis_or(&env, "silentTimeoutMs", given.silent_timeout_ms, options.silent_timeout)?;
        options.builder_stall_timeout = millis_or(
            &env,
            "builderStallTimeoutMs",
            given.builder_stall_timeout_ms,
            options.builder_stall_timeout,
        )?;
        let count = |what: &'static str, n: Option<f64>, default: usize| -> Result<usize> {
            n.map_or(Ok(default), |n| whole(&env, what, n, u32::MAX.into()).map(|n| n as usize))
        };
        options.max_auth_attempts =
            count("maxAuthAttempts", given.max_auth_attempts, options.max_auth_attempts)?;
        options.max_unauthenticated =
            count("maxUnauthenticated", given.max_unauthenticated, options.max_unauthenticated)?;
        options.max_unauthenticated_per_ip = count(
            "maxUnauthenticatedPerIp",
            given.max_unauthenticated_per_ip,
            options.max_unauthenticated_per_ip,
        )?;
        options.max_unauthenticated_per_prefix = count(
            "maxUnauthenticatedPerPrefix",
            given.max_unauthenticated_per_prefix,
            options.max_unauthenticated_per_prefix,
        )?;
        options.failures_before_backoff =
            count("failuresBeforeBackoff", given.failures_before_backoff, options.failures_before_backoff)?;
        options.new_connections_per_second = count(
            "newConnectionsPerSecond",
            given.new_connections_per_second,
            options.new_connections_per_second as usize,
        )? as u32;
        options.new_connections_burst = count(
            "newConnectionsBurst",
            given.new_connections_burst,
            options.new_connections_burst as usize,
        )? as u32;
        options.max_connections_per_build = count(
            "maxConnectionsPerBuild",
            given.max_connections_per_build,
            options.max_connections_per_build,
        )?;
        options.max_channels_per_build =
            count("maxChannelsPerBuild", given.max_channels_per_build, options.max_channels_per_build)?;
        options.worker_threads = count("workerThreads", given.worker_threads, options.worker_threads)?;
        options.window_size = count("windowSize", given.window_size, options.window_size as usize)? as u32;
        let lists = [
            (given.kex_algorithms, &mut options.kex_algorithms),
            (given.ciphers, &mut options.ciphers),
            (given.macs, &mut options.macs),
            (given.vnc_websocket_origins, &mut options.vnc_websocket_origins),
        ];
        for (names, field) in lists {
            if let Some(names) = names {
                *field = names;
            }
        }
        options.vnc_tls = given.vnc_tls.map(|identity| identity.0.clone());
        options.vnc_require_encryption =
            given.vnc_require_encryption.unwrap_or(options.vnc_require_encryption);
        options.vnc_websocket = given.vnc_websocket.unwrap_or(options.vnc_websocket);
        options.reuse_port = given.reuse_port.unwrap_or(options.reuse_port);
        if let Some(addr) = given.metrics_address {
            let parsed = addr.parse().map_err(|_| core::Error::InvalidInput {
                what: "metricsAddress",
                problem: format!("{addr:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9100)"),
            });
            options.metrics_address = Some(parsed.or_throw(&env)?);
        }
        core::Gateway::new(authority.0.clone(), options).or_throw(&env).map(Self)
    }

    #[napi(getter)]
    pub fn host_key(&self) -> HostKey {
        HostKey(self.0.host_key().clone())
    }

    /// The authority whose sessions this gateway serves.
    #[napi(getter)]
    pub fn authority(&self) -> Authority {
        Authority(self.0.authority().clone())
    }

    /// What the gateway holds now; every connection count returns to zero once its peers are
    /// gone.
    #[napi]
    pub fn stats(&self) -> GatewayStats {
        let stats = self.0.stats();
        GatewayStats {
            ssh_connections: stats.ssh_connections as f64,
            vnc_connections: stats.vnc_connections as f64,
            unauthenticated: stats.unauthenticated as f64,
            builder_channels: stats.builder_channels as f64,
            addresses_with_failures: stats.addresses_with_failures as f64,
            evicted: stats.evicted as f64,
            rate_limited: stats.rate_limited as f64,
        }
    }

    /// What the gateway has counted, as Prometheus text (what `metricsAddress` serves at
    /// `/metrics`), for serving from the application's own web server.
    #[napi]
    pub fn metrics_text(&self) -> String {
        self.0.metrics_text()
    }

    /// Whether the gateway should get new connections: its store answers and it is not
    /// draining (what `metricsAddress` serves at `/healthz`).
    #[napi]
    pub fn ready(&self) -> bool {
        self.0.ready()
    }

    /// Binds `addr` (e.g. `"0.0.0.0:2222"`) and serves in the background; the VNC ports are
    /// bound on the same address.
    #[napi]
    pub fn start<'env>(&self, env: &'env Env, addr: String) -> Result<PromiseRaw<'env, RunningGateway>> {
        let gateway = self.0.clone();
        let keep_alive = KeepAlive::new(env)?;
        let started = async move {
            let running = match gateway.start(&addr).await {
                Ok(running) => running,
                Err(err) => {
                    keep_alive.release();
                    return Err(err);
                }
            };
            let mut running = running;
            let local_addr = running.local_addr();
            let (stop, done) = (stop_signal(), Arc::new(tokio::sync::watch::channel(None).0));
            let drain = Arc::new(tokio::sync::watch::channel(None).0);
            let (signal, result): (Stop, Arc<Outcome<()>>) = (stop.clone(), done.clone());
            let mut drain_requested = drain.subscribe();
            // The task owns the gateway and the handle that keeps Node running: only `stop()`
            // (or the end of `drain()`) stops them, not the JS object being collected.
            let held = keep_alive.clone();
            napi::bindgen_prelude::spawn(async move {
                let drained = tokio::select! {
                    () = stopped(signal.clone()) => Ok(()),
                    Ok(timeout) = requested(&mut drain_requested) => tokio::select! {
                        drained = running.drain(timeout) => drained,
                        // `stop()` while draining stops at once.
                        () = stopped(signal) => Ok(()),
                    },
                };
                let ended = drained.and(running.stop().await);
                result.send_replace(Some(ended.map_err(Arc::new)));
                held.release();
            });
            Ok::<_, core::Error>(RunningGateway { local_addr, stop, drain, done, keep_alive })
        };
        promise(env, started, Ok)
    }
}

/// Resolves with the drain's timeout once `drain()` asked for one (an error if the
/// `RunningGateway` is gone without asking).
async fn requested(
    asked: &mut tokio::sync::watch::Receiver<Option<Duration>>,
) -> std::result::Result<Duration, tokio::sync::watch::error::RecvError> {
    let asked = asked.wait_for(Option::is_some).await?;
    Ok(asked.unwrap_or_default())
}

/// A gateway serving in the background until `await running.stop()` (every caller waits for
/// the same stop). Like a listening `net.Server`, it keeps Node running until stopped, unless
/// `unref()` is called; the garbage collector does not stop it.
#[napi]
pub struct RunningGateway {
    local_addr: std::net::SocketAddr,
    stop: Stop,
    /// How long a drain may last, once `drain()` asked for one.
    drain: Arc<tokio::sync::watch::Sender<Option<Duration>>>,
    done: Arc<Outcome<()>>,
    keep_alive: KeepAlive,
}

#[napi]
impl RunningGateway {
    /// The host it listens on.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.local_addr.ip().to_string()
    }

    /// The port it listens on (useful after binding port 0).
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.local_addr.port())
    }

    /// Stops accepting, closes every connection and waits until all are gone. Live sessions
    /// are detached, not ended.
    #[napi]
    pub fn stop<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        self.stop.send_replace(true);
        promise(env, outcome(self.done.clone()), Ok)
    }

    /// Replaces this gateway without downtime (with `reusePort` and another gateway already on
    /// the same ports): closes its ports at once, serves its live connections until they end
    /// or `timeoutMs` passes, then lets the rest go as `stop()` does, and resolves. `stop()`
    /// meanwhile stops it at once; the first drain's timeout holds for every later call.
    #[napi]
    pub fn drain<'env>(&self, env: &'env Env, timeout_ms: f64) -> Result<PromiseRaw<'env, ()>> {
        let timeout = millis(env, "timeoutMs", timeout_ms)?;
        self.drain.send_if_modified(|asked| {
            let first = asked.is_none();
            if first {
                *asked = Some(timeout);
            }
            first
        });
        promise(env, outcome(self.done.clone()), Ok)
    }

    /// Keeps Node running while the gateway serves (the default), as `server.ref()` does.
    #[napi(js_name = "ref", ts_return_type = "this")]
    pub fn keep_ref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, true)?;
        Ok(this)
    }

    /// Lets Node exit while the gateway serves, if nothing else keeps it running, as
    /// `server.unref()` does.
    #[napi(ts_return_type = "this")]
    pub fn unref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, false)?;
        Ok(this)
    }

    /// Whether the gateway keeps Node running now: until `unref()` or the end of `stop()`.
    #[napi]
    pub fn has_ref(&self) -> bool {
        self.keep_alive.has_ref()
    }
}
