//! The listener layer: the SSH server (`ssh/`) and the VNC proxy (`vnc/`) side by side, with
//! what they share: admission before authentication (`admission`), accepting and stopping
//! (`listen`), cutting a transport underneath its protocol (`cut_stream`) and rate-limited logs
//! (`log_limit`). Everything protocol-specific lives here; who may do what is the
//! authority's. russh types stay inside this module.

mod admission;
mod cut_stream;
mod failures;
mod http;
mod listen;
mod log_limit;
mod rate_limit;
mod ssh;
mod vnc;
mod workers;

pub use admission::GatewayStats;
#[cfg(fuzzing)]
pub(crate) use http::answer as answer_http;
#[cfg(fuzzing)]
pub(crate) use ssh::serve_stream;
#[cfg(fuzzing)]
pub(crate) use vnc::{
    BuilderLogin, Greeting, Offer, Rules, UserHello, Version, accept_websocket, greet_user, login_builder,
    refuse_user, welcome_user,
};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::authority::Authority;
use crate::credential::{HostKey, TlsIdentity};
use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::tunnel;
use admission::{Admission, Held, Holding, Kind, Pool, Target, Waiting};
use cut_stream::{CutFlag, CutStream};
use listen::{Phase, Stop, accept_until_stopped};
use log_limit::LogLimit;
use workers::Workers;

/// Options for a [`Gateway`]; every field has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayOptions {
    /// The host key users pin. `None` generates one, which changes at every start: persist a
    /// key in production (see [`HostKey`]).
    pub host_key: Option<HostKey>,
    /// A connection must authenticate within this time or is cut (default 30 s), however
    /// slowly it trickles bytes.
    pub pre_auth_timeout: Duration,
    /// Every refused authentication attempt takes this long (default 1 s), so that timing
    /// tells nothing about which usernames exist.
    pub auth_rejection_delay: Duration,
    /// Authentication attempts allowed per connection (default 6).
    pub max_auth_attempts: usize,
    /// At most this many SSH connections, and as many VNC connections, may be waiting to
    /// authenticate at once (default 10,000 each; see `docs/security.md` for the memory this
    /// takes). When a pool is full, a newcomer replaces the oldest waiting connection of the
    /// network (/24, /64) holding the most: nobody can lock others out by filling it.
    pub max_unauthenticated: usize,
    /// The share of one source address (default 32): past it, a newcomer from that address
    /// replaces the address's own oldest waiting connection.
    pub max_unauthenticated_per_ip: usize,
    /// The share of one /24 (IPv4) or /64 (IPv6) network (default 256), likewise.
    pub max_unauthenticated_per_prefix: usize,
    /// A connection that has not identified itself within this time (SSH: its identification
    /// line and the start of the key exchange; VNC: its protocol version) is cut (default 5 s),
    /// so that idle connections cannot sit out the whole `pre_auth_timeout`.
    pub silent_timeout: Duration,
    /// Failed logins in a row from one network (/24 or /64; SSH and VNC) before its new
    /// connections are closed at once for a backoff: 1 s, doubling with each further failure
    /// up to 5 min (default 20). A successful login takes back the failures against the same
    /// username or VNC port, never those against another build.
    pub failures_before_backoff: usize,
    /// New connections (SSH and VNC together) one address may open per second (default 10);
    /// its /24 or /64 network may open eight times as many. Those over the rate are closed as
    /// soon as they are accepted, before any key exchange.
    pub new_connections_per_second: u32,
    /// How many new connections one address may open at once before the rate applies
    /// (default 20; its network eight times as many).
    pub new_connections_burst: u32,
    /// User connections (SSH and VNC) one build may hold at once on this gateway (default 16).
    pub max_connections_per_build: usize,
    /// Connections to the builder (`direct-tcpip` channels) one build may hold at once on this
    /// gateway, over all its SSH connections (default 64).
    pub max_channels_per_build: usize,
    /// Idle connections are probed this often (default 30 s); three unanswered probes close
    /// them.
    pub keepalive_interval: Duration,
    /// Threads of the gateway's own that serve its connections (default 0: the runtime that
    /// starts it serves them). With N, the gateway starts N threads, each a single-threaded
    /// tokio runtime, and serves every connection wholly on one of them, in turn: a connection's
    /// tasks then never wake each other across threads, which cost about a fifth of the CPU of
    /// a bulk transfer on a multi-threaded runtime (`docs/benchmarks.md`, "Per cipher"). The
    /// `gateway` program uses one per CPU. The threads end when the gateway stops. At most
    /// 1,024.
    pub worker_threads: usize,
    /// SSH channel window in bytes (default 8 MiB): large enough not to cap throughput.
    pub window_size: u32,
    /// How long to wait for a builder to accept a connection (default 10 s).
    pub dial_timeout: Duration,
    /// How long a builder may leave a user's data unread before that connection to it is
    /// closed (default 60 s): meanwhile russh stops reading the user's whole SSH connection
    /// (`docs/security.md`, "The bounds").
    pub builder_stall_timeout: Duration,
    /// The SSH key exchanges offered, most preferred first (default: `mlkem768x25519-sha256`,
    /// `curve25519-sha256`, `curve25519-sha256@libssh.org`). See `docs/ssh.md`, "Algorithms",
    /// for who needs which; a name russh does not implement, or `none`, is refused.
    pub kex_algorithms: Vec<String>,
    /// The SSH ciphers offered (default: `chacha20-poly1305@openssh.com`,
    /// `aes128-gcm@openssh.com`, `aes256-gcm@openssh.com`, `aes128-ctr`, `aes192-ctr`,
    /// `aes256-ctr`): the client's preference picks among them.
    pub ciphers: Vec<String>,
    /// The SSH MACs offered, for the ciphers that need one (default:
    /// `hmac-sha2-256-etm@openssh.com`, `hmac-sha2-512-etm@openssh.com`, `hmac-sha2-256`,
    /// `hmac-sha2-512`).
    pub macs: Vec<String>,
    /// The TLS certificate of the VNC ports (default none). With one, they also offer VeNCrypt
    /// `X509Vnc` (VNC Authentication inside TLS: TigerVNC, Remmina, gtk-vnc) and `wss://` to
    /// browsers (noVNC); give users its fingerprint (`ScriptOptions::vnc_tls_fingerprint`).
    /// See `docs/vnc.md` for what each path protects.
    pub vnc_tls: Option<TlsIdentity>,
    /// Offer no unencrypted VNC on the VNC ports (default false; needs `vnc_tls`): plain VNC
    /// Authentication and `ws://` are refused, with a reason, and only VeNCrypt and `wss://`
    /// remain. VNC inside the SSH tunnel is encrypted by SSH and stays open.
    pub vnc_require_encryption: bool,
    /// Also serve RFB over WebSocket on the VNC ports (default true), for noVNC in a browser
    /// with no websockify: `ws[s]://<gateway>:<vnc port>/websockify`. RFB clients then wait
    /// 250 ms for the server's first bytes, the time a browser has to speak first.
    pub vnc_websocket: bool,
    /// The browser origins allowed to open the VNC WebSocket, e.g. `https://ci.example.com`
    /// (default empty: any). The VNC password is what admits a user; this keeps other sites'
    /// pages from using the gateway at all.
    pub vnc_websocket_origins: Vec<String>,
    /// Bind the SSH and VNC ports with `SO_REUSEPORT` (default false), so that a second
    /// gateway process of the same user can listen on the same ports: how a gateway is
    /// replaced without downtime (start the new one, then [`RunningGateway::drain`] the old
    /// one). Set `net.ipv4.tcp_migrate_req = 1` too (Linux 5.14 and later): without it, the
    /// connections waiting in a closing gateway's accept queue are reset instead of handed to
    /// the other (`docs/scaling.md`, "Restarting without downtime"). Linux and the BSDs only.
    pub reuse_port: bool,
    /// Also serve `GET /metrics` (Prometheus text, [`Gateway::metrics_text`]) and
    /// `GET /healthz` (200 while [`Gateway::ready`], else 503) over HTTP on this address
    /// (default none). Plain HTTP without authentication: bind it where only the monitoring
    /// reaches (loopback, a private network). It closes when the gateway drains.
    pub metrics_address: Option<SocketAddr>,
}

/// More worker threads than this is a mistake (a thread per connection, say), not a setting.
const MAX_WORKER_THREADS: usize = 1024;

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            host_key: None,
            pre_auth_timeout: Duration::from_secs(30),
            auth_rejection_delay: Duration::from_secs(1),
            max_auth_attempts: 6,
            max_unauthenticated: 10_000,
            max_unauthenticated_per_ip: 32,
            max_unauthenticated_per_prefix: 256,
            silent_timeout: Duration::from_secs(5),
            failures_before_backoff: 20,
            new_connections_per_second: 10,
            new_connections_burst: 20,
            max_connections_per_build: 16,
            max_channels_per_build: 64,
            keepalive_interval: Duration::from_secs(30),
            worker_threads: 0,
            window_size: 8 * 1024 * 1024,
            dial_timeout: Duration::from_secs(10),
            builder_stall_timeout: Duration::from_secs(60),
            kex_algorithms: ssh::owned(ssh::KEX),
            ciphers: ssh::owned(ssh::CIPHERS),
            macs: ssh::owned(ssh::MACS),
            vnc_tls: None,
            vnc_require_encryption: false,
            vnc_websocket: true,
            vnc_websocket_origins: Vec::new(),
            reuse_port: false,
            metrics_address: None,
        }
    }
}

/// An origin as browsers send it in `Origin`, which the VNC WebSocket compares exactly: a
/// scheme, a host in lower case, and a port only when it is not the scheme's default.
fn check_origin(origin: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid("vnc_websocket_origins", format!("{origin:?}: {why}")));
    let Some((scheme, host)) = origin.split_once("://") else {
        return refuse("not an origin like https://ci.example.com (scheme, host, optional port)");
    };
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains(['/', ' ', '?', '#']) {
        return refuse("not an origin like https://ci.example.com (scheme, host, optional port; no path)");
    }
    if origin != origin.to_ascii_lowercase() {
        return refuse("write it in lower case, as browsers send it");
    }
    if (scheme == "https" && host.ends_with(":443")) || (scheme == "http" && host.ends_with(":80")) {
        return refuse("leave out the default port, as browsers do");
    }
    Ok(())
}

/// State shared by the listeners and every connection.
struct Shared {
    authority: Authority,
    options: GatewayOptions,
    /// The SSH server's configuration (host key, algorithms, queues).
    ssh: Arc<russh::server::Config>,
    admission: Arc<Admission>,
    router: Arc<tunnel::Router>,
    log_limit: LogLimit,
    /// The VNC ports' TLS (VeNCrypt and `wss://`), when the options give a certificate.
    vnc_tls: Option<tokio_rustls::TlsAcceptor>,
    /// What every SSH client is told before it logs in (see `ssh_banner`).
    banner: String,
    /// What the operator reads ([`Gateway::metrics_text`]).
    metrics: Metrics,
    /// Set while the gateway drains (its ports closed).
    draining: std::sync::atomic::AtomicBool,
    /// The last KRL the metrics endpoint served, and when it was made (`http.rs`).
    krl: tokio::sync::Mutex<Option<(tokio::time::Instant, Vec<u8>)>>,
}

/// A refused login's reason as a fixed code, for the metrics: the denial's (`wrong_key`,
/// `revoked`, ...) or the error's (`session_ended`, `store_unavailable`, ...).
fn refusal_code(err: &Error) -> &'static str {
    match err {
        Error::AccessDenied { reason } => reason.as_str(),
        other => other.code(),
    }
}

/// The SSH authentication banner: the time rules of the authority's policy, and what logging
/// out does. Generic, because clients ask for the banner before naming their user: the
/// build's own deadline is on its connection script and, with the builder kit, in the
/// user's shell at login and in the prompt (`docs/builder-kit.md`).
fn ssh_banner(policy: &crate::session::Policy) -> String {
    format!(
        "remote-access: access to a build lasts {}. Once its steps are done, logging out (exit) \
         finishes the build; a lost connection may reconnect within {}.\n",
        policy.describe(),
        crate::session::human(policy.reconnect_window)
    )
}

/// The gateway: SSH and VNC listeners in front of the builders. Cheap to clone; run it with [`Gateway::run`] or [`Gateway::start`] on your
/// tokio runtime (it never builds one).
///
/// ```no_run
/// use remote_access_core::{Authority, AuthorityOptions, Gateway, GatewayOptions, HostKey};
/// # async fn demo(persisted_host_key: &str) -> Result<(), remote_access_core::Error> {
/// let authority = Authority::new(AuthorityOptions::default())?;
/// let mut options = GatewayOptions::default();
/// options.host_key = Some(HostKey::from_openssh(persisted_host_key)?);
/// let gateway = Gateway::new(authority, options)?;
/// let running = gateway.start("0.0.0.0:2222").await?;
/// // ... issue credentials, hand out scripts ...
/// running.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    host_key: HostKey,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("host_key", &self.host_key).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway that admits the users of `authority`'s sessions.
    pub fn new(authority: Authority, options: GatewayOptions) -> Result<Self> {
        if options.pre_auth_timeout.is_zero()
            || options.dial_timeout.is_zero()
            || options.silent_timeout.is_zero()
        {
            return Err(Error::invalid("gateway timeouts", "must be longer than zero"));
        }
        if options.max_unauthenticated == 0
            || options.max_unauthenticated_per_ip == 0
            || options.max_unauthenticated_per_prefix == 0
            || options.max_auth_attempts == 0
            || options.failures_before_backoff == 0
            || options.max_connections_per_build == 0
            || options.max_channels_per_build == 0
            || options.new_connections_per_second == 0
            || options.new_connections_burst == 0
        {
            return Err(Error::invalid("gateway limits", "must be at least 1"));
        }
        if options.worker_threads > MAX_WORKER_THREADS {
            return Err(Error::invalid(
                "worker_threads",
                format!("at most {MAX_WORKER_THREADS} (0 serves connections on the caller's runtime)"),
            ));
        }
        if options.window_size < 32 * 1024 {
            return Err(Error::invalid("window_size", "must be at least 32 KiB"));
        }
        if options.reuse_port {
            listen::warn_unless_requests_migrate();
        }
        let host_key = match &options.host_key {
            Some(key) => key.clone(),
            None => {
                tracing::warn!("no host key given: generated one; users' pinned keys break at restart");
                HostKey::generate()?
            }
        };
        let config = ssh::config(&options, &host_key)?;
        if options.vnc_require_encryption && options.vnc_tls.is_none() {
            return Err(Error::invalid(
                "vnc_require_encryption",
                "needs vnc_tls: without a certificate the VNC ports have no encrypted path",
            ));
        }
        for origin in &options.vnc_websocket_origins {
            check_origin(origin)?;
        }
        let vnc_tls = options
            .vnc_tls
            .as_ref()
            .map(|identity| tokio_rustls::TlsAcceptor::from(identity.server_config()));
        let shared = Shared {
            vnc_tls,
            banner: ssh_banner(&authority.options().policy),
            authority,
            admission: Arc::new(Admission::new(&options)),
            options,
            ssh: Arc::new(config),
            router: Arc::default(),
            log_limit: LogLimit::default(),
            metrics: Metrics::default(),
            draining: Default::default(),
            krl: Default::default(),
        };
        Ok(Self { shared: Arc::new(shared), host_key })
    }

    /// The host key users pin (public parts via [`HostKey::public_key`]).
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// The authority whose sessions this gateway serves.
    pub fn authority(&self) -> &Authority {
        &self.shared.authority
    }

    /// What the gateway holds right now: connections, builder channels, addresses it is
    /// backing off from. Every connection count returns to zero once its peers are gone.
    pub fn stats(&self) -> GatewayStats {
        self.shared.admission.stats()
    }

    /// What the gateway has counted, in the Prometheus text format (0.0.4) for a `/metrics`
    /// endpoint: live connections by protocol, connections not logged in yet, builder
    /// channels, logins accepted and refused (by reason), connections closed before a login
    /// (by reason), channels refused (by reason), the revocation-to-cut latency, the store's
    /// round trip and whether it answers, and bytes on users' connections. Every label value is
    /// a fixed code. `docs/operations.md` lists them.
    pub fn metrics_text(&self) -> String {
        let stats = self.stats();
        let gauges = metrics::Gauges {
            ssh_connections: stats.ssh_connections,
            vnc_connections: stats.vnc_connections,
            unauthenticated: stats.unauthenticated,
            builder_channels: stats.builder_channels,
            store_up: self.shared.authority.store_answers(),
            draining: self.shared.draining.load(std::sync::atomic::Ordering::Relaxed),
        };
        self.shared.metrics.render(&gauges, self.shared.authority.store_round_trip())
    }

    /// Whether this gateway should get new connections (a `/healthz` for load balancers):
    /// its store answers, so logins can be decided, and it is not draining.
    pub fn ready(&self) -> bool {
        self.shared.authority.store_answers()
            && !self.shared.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves `listener` until `shutdown` resolves, also enforcing session deadlines. VNC is
    /// served on the authority's `vnc_ports`, on the same address as `listener`. Then it stops
    /// accepting, closes every connection (without counting it as a logout) and returns.
    /// Give `listener` a long backlog, as [`Gateway::start_on`] says.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
        let ports = self.bind_ports(listener.local_addr()?.ip())?;
        let (control, commands) = watch::channel(Control::Serve);
        let serving = self.serve(listener, ports, commands);
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => served,
            () = shutdown => {
                let _ = control.send(Control::Stop);
                serving.await
            }
        }
    }

    /// Binds the authority's VNC ports on `ip` (the SSH listener's address) and the metrics
    /// address, so that a port that cannot be bound fails the start instead of a gateway that
    /// seems to run.
    fn bind_ports(&self, ip: std::net::IpAddr) -> Result<Ports> {
        let reuse_port = self.shared.options.reuse_port;
        let bind = |addr: SocketAddr, what: &str| {
            listen::bind(addr, reuse_port).map_err(|err| {
                Error::Io(std::io::Error::new(err.kind(), format!("binding {what} {addr}: {err}")))
            })
        };
        let ports = &self.shared.authority.options().vnc_ports;
        let vnc =
            ports.iter().map(|&port| bind(SocketAddr::new(ip, port), "VNC port")).collect::<Result<_>>()?;
        let metrics =
            self.shared.options.metrics_address.map(|addr| bind(addr, "the metrics address")).transpose()?;
        Ok(Ports { vnc, metrics })
    }

    /// Serves until told to stop (or until a drain ends), then lets every connection go.
    async fn serve(
        &self,
        listener: TcpListener,
        ports: Ports,
        mut commands: watch::Receiver<Control>,
    ) -> Result<()> {
        let (phase, stop) = Stop::new();
        let workers = match self.shared.options.worker_threads {
            0 => None,
            count => Some(Arc::new(Workers::start(count)?)),
        };
        let mut listeners = JoinSet::new();
        let shared = self.shared.clone();
        listeners.spawn(accept_until_stopped(
            listener,
            stop.clone(),
            "ssh",
            workers.clone(),
            move |tcp, peer, stop| ssh::serve(shared.clone(), tcp, peer, stop),
        ));
        if let Some(metrics) = ports.metrics {
            listeners.spawn(http::serve(metrics, self.clone(), stop.clone()));
        }
        for vnc_listener in ports.vnc {
            let port = vnc_listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
            let shared = self.shared.clone();
            listeners.spawn(accept_until_stopped(
                vnc_listener,
                stop.clone(),
                "vnc",
                workers.clone(),
                move |tcp, peer, stop| vnc::serve(shared.clone(), tcp, peer, port, stop),
            ));
        }
        let housekeeping = self.shared.authority.run_housekeeping({
            let mut stop = stop.clone();
            async move { stop.stopped().await }
        });
        let drain_deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(housekeeping, drain_deadline);
        let mut draining = false;
        let mut failed = None;
        loop {
            tokio::select! {
                changed = commands.changed() => {
                    // The sender gone (a dropped `RunningGateway`) stops the gateway too.
                    let command = if changed.is_ok() { *commands.borrow_and_update() } else { Control::Stop };
                    match command {
                        Control::Serve => {}
                        Control::Drain(timeout) if !draining => {
                            draining = true;
                            drain_deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                            let _ = phase.send(Phase::Draining);
                            self.shared.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(?timeout, "draining: no new connections; live ones are served until they end or the time is up");
                        }
                        Control::Drain(_) => {}
                        Control::Stop => break,
                    }
                }
                () = &mut drain_deadline, if draining => {
                    tracing::info!(left = self.stats().ssh_connections + self.stats().vnc_connections, "the drain time is up: letting the remaining connections go");
                    break;
                }
                () = &mut housekeeping => {}
                // A listener ends by draining (its connections all ended), by stopping, or by
                // a panic in its loop: then the gateway stops as it would on `shutdown` (its
                // connections get the grace period and are detached, not logged out), and
                // says why.
                ended = listeners.join_next() => match ended {
                    Some(Ok(())) => {}
                    Some(Err(err)) => {
                        failed = Some(Error::Internal { message: format!("a listener task failed: {err}") });
                        break;
                    }
                    None => {
                        tracing::info!("drained: every connection has ended");
                        break;
                    }
                },
            }
        }
        let _ = phase.send(Phase::Stopping);
        // Each listener gives its connections the grace period, then aborts them.
        while listeners.join_next().await.is_some() {}
        failed.map_or(Ok(()), Err)
    }

    /// Binds `addr` (e.g. `"0.0.0.0:2222"`) and serves it in a task on the current runtime.
    pub async fn start(&self, addr: &str) -> Result<RunningGateway> {
        let listener = listen::bind_resolved(addr, self.shared.options.reuse_port).await?;
        self.start_on(listener)
    }

    /// Serves an already bound listener in a task on the current runtime. Give it a long
    /// listen backlog (as [`Gateway::start`] does, 4096): with the standard library's 128, a
    /// flood of connections fills the kernel's queue and users' handshakes are dropped.
    pub fn start_on(&self, listener: TcpListener) -> Result<RunningGateway> {
        let local_addr = listener.local_addr()?;
        let ports = self.bind_ports(local_addr.ip())?;
        let (control, commands) = watch::channel(Control::Serve);
        let gateway = self.clone();
        let task = tokio::spawn(async move { gateway.serve(listener, ports, commands).await });
        Ok(RunningGateway { local_addr, control, task: Some(task) })
    }
}

/// The listeners besides the SSH one.
struct Ports {
    vnc: Vec<TcpListener>,
    metrics: Option<TcpListener>,
}

/// What a [`RunningGateway`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Serve,
    /// Take no new connections; serve the live ones for at most this long.
    Drain(Duration),
    Stop,
}

/// A gateway serving in the background. [`RunningGateway::stop`] stops it and waits; dropping
/// it stops it without waiting.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    control: watch::Sender<Control>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl RunningGateway {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits until all are gone.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.control.send(Control::Stop);
        self.finished().await
    }

    /// Replaces this gateway without downtime (with [`GatewayOptions::reuse_port`] and another
    /// gateway already listening on the same ports): closes the listeners at once, so that new
    /// connections go to the other gateway, serves the live connections until they end or
    /// `timeout` passes, then lets the rest go as [`RunningGateway::stop`] does (not counted as
    /// logouts) and returns. Sessions' deadlines and revocations are enforced meanwhile.
    ///
    /// Dropping the returned future leaves the gateway draining; `stop` then ends it at once
    /// (a second Ctrl-C, say).
    pub async fn drain(&mut self, timeout: Duration) -> Result<()> {
        self.control.send_if_modified(|control| {
            let serving = *control == Control::Serve;
            if serving {
                *control = Control::Drain(timeout);
            }
            serving
        });
        self.finished().await
    }

    /// Waits for the serving task, once.
    async fn finished(&mut self) -> Result<()> {
        let Some(task) = self.task.as_mut() else { return Ok(()) };
        let ended = task.await;
        self.task = None;
        ended.map_err(|err| Error::Internal { message: format!("the gateway task failed: {err}") })?
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
    }
}
