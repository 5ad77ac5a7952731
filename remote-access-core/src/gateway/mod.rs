//! The SSH gateway: a russh server that lets each build's user ProxyJump to that build's own
//! builder and nowhere else. russh types stay inside this module.

mod admission;
mod cut_stream;
mod handler;
mod host_key;
mod log_limit;

pub use admission::GatewayStats;
pub use host_key::HostKey;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::Config;
use russh::{Disconnect, MethodKind, MethodSet, SshId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::tunnel;
use crate::vnc;
pub(crate) use admission::{Admission, Held, Holding, Kind, Pool, Target, Waiting};
pub(crate) use cut_stream::{CutFlag, CutStream};
use handler::{Handler, Login};
pub(crate) use log_limit::LogLimit;

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
    /// User connections (SSH and VNC) one build may hold at once on this gateway (default 16).
    pub max_connections_per_build: usize,
    /// Connections to the builder (`direct-tcpip` channels) one build may hold at once on this
    /// gateway, over all its SSH connections (default 64).
    pub max_channels_per_build: usize,
    /// Idle connections are probed this often (default 30 s); three unanswered probes close
    /// them.
    pub keepalive_interval: Duration,
    /// SSH channel window in bytes (default 8 MiB): large enough not to cap throughput.
    pub window_size: u32,
    /// How long to wait for a builder to accept a connection (default 10 s).
    pub dial_timeout: Duration,
    /// How long a builder may leave a user's data unread before that connection to it is
    /// closed (default 60 s): meanwhile russh stops reading the user's whole SSH connection
    /// (`docs/security.md`, "The bounds").
    pub builder_stall_timeout: Duration,
}

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
            max_connections_per_build: 16,
            max_channels_per_build: 64,
            keepalive_interval: Duration::from_secs(30),
            window_size: 8 * 1024 * 1024,
            dial_timeout: Duration::from_secs(10),
            builder_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// The largest channel packet a peer may send us; a larger one is a protocol violation that
/// cuts the connection (russh itself would take up to 256 KiB).
pub(crate) const MAX_PACKET: u32 = 32 * 1024;
/// Packets queued per channel toward its consumer (see the russh `Config` below).
const CHANNEL_QUEUE: usize = 8;
/// Messages queued per connection toward the user.
const SEND_QUEUE: usize = 32;
/// An SSH connection must have sent at least this many bytes by `silent_timeout`: its
/// identification ("SSH-2.0-x" and CRLF, 11 bytes at least) and the start of its KEXINIT (67
/// bytes even with every list empty; real clients send several hundred).
const OPENING_BYTES: u64 = 64;

/// How long a polite DISCONNECT may take before the transport is cut underneath it.
const DISCONNECT_GRACE: Duration = Duration::from_millis(250);
/// How long a stopping gateway waits for its connections to close before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    authority: Authority,
    options: GatewayOptions,
    config: Arc<Config>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) router: Arc<tunnel::Router>,
    pub(crate) log_limit: Arc<LogLimit>,
}

/// The SSH gateway. Cheap to clone; run it with [`Gateway::run`] or [`Gateway::start`] on your
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
        {
            return Err(Error::invalid("gateway limits", "must be at least 1"));
        }
        if options.window_size < 32 * 1024 {
            return Err(Error::invalid("window_size", "must be at least 32 KiB"));
        }
        let host_key = match &options.host_key {
            Some(key) => key.clone(),
            None => {
                tracing::warn!("no host key given: generated one; users' pinned keys break at restart");
                HostKey::generate()?
            }
        };
        let config = Config {
            server_id: SshId::Standard("SSH-2.0-remote-access".into()),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: options.auth_rejection_delay,
            // OpenSSH always starts with a "none" probe; answering it at once costs nothing.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key.key.clone()],
            window_size: options.window_size,
            maximum_packet_size: MAX_PACKET,
            // What a connection may hold in russh's queues, whatever its peer does (russh grants
            // window as data arrives, so these queues, not the window, bound memory): a
            // builder channel queues at most this many packets of at most `MAX_PACKET` bytes
            // (larger ones cut the connection) before the connection stops reading...
            channel_buffer_size: CHANNEL_QUEUE,
            // ...and messages to send to the user (builder data among them) queue up to this
            // many.
            event_buffer_size: SEND_QUEUE,
            max_auth_attempts: options.max_auth_attempts,
            // Keepalives keep live clients from reaching this; it only collects dead ones.
            inactivity_timeout: Some(options.keepalive_interval.saturating_mul(4)),
            keepalive_interval: Some(options.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            preferred: russh::Preferred {
                // Hardware AES (ring) costs far less CPU per byte than ChaCha20 in software;
                // offering only AES-GCM makes every current OpenSSH client pick it.
                cipher: std::borrow::Cow::Borrowed(&[russh::cipher::AES_128_GCM, russh::cipher::AES_256_GCM]),
                ..russh::Preferred::default()
            },
            ..Config::default()
        };
        let shared = Shared {
            authority,
            admission: Arc::new(Admission::new(&options)),
            options,
            config: Arc::new(config),
            router: Arc::new(tunnel::Router::default()),
            log_limit: Arc::default(),
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

    /// Serves `listener` until `shutdown` resolves, also enforcing session deadlines. VNC is
    /// served on the authority's `vnc_ports`, on the same address as `listener`. Then it stops
    /// accepting, closes every connection (without counting it as a logout) and returns.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
        let vnc_listeners = self.bind_vnc_ports(listener.local_addr()?.ip())?;
        self.serve(listener, vnc_listeners, shutdown).await
    }

    /// Binds the authority's VNC ports on `ip` (the SSH listener's address), so that a port
    /// that cannot be bound fails the start instead of a gateway that seems to run.
    fn bind_vnc_ports(&self, ip: std::net::IpAddr) -> Result<Vec<TcpListener>> {
        let bind = |port: u16| -> std::io::Result<TcpListener> {
            let listener = std::net::TcpListener::bind((ip, port))?;
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        };
        let ports = &self.shared.authority.options().vnc_ports;
        ports
            .iter()
            .map(|&port| {
                bind(port).map_err(|err| {
                    Error::Io(std::io::Error::new(err.kind(), format!("binding VNC port {ip}:{port}: {err}")))
                })
            })
            .collect()
    }

    async fn serve(
        &self,
        listener: TcpListener,
        vnc_listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let (stopping, stop) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut vnc_ports = JoinSet::new();
        let settings = Arc::new(vnc::ProxySettings {
            pre_auth_timeout: self.shared.options.pre_auth_timeout,
            dial_timeout: self.shared.options.dial_timeout,
            shutdown_grace: SHUTDOWN_GRACE,
            router: self.shared.router.clone(),
            admission: self.shared.admission.clone(),
            log_limit: self.shared.log_limit.clone(),
            silent_timeout: self.shared.options.silent_timeout,
            auth_rejection_delay: self.shared.options.auth_rejection_delay,
            builder_stall_timeout: self.shared.options.builder_stall_timeout,
        });
        for vnc_listener in vnc_listeners {
            let authority = self.shared.authority.clone();
            vnc_ports.spawn(vnc::serve_port(authority, settings.clone(), vnc_listener, stop.clone()));
        }
        let expiry = self.shared.authority.run_expiry({
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            }
        });
        tokio::pin!(shutdown, expiry);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = &mut expiry => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tunnel::keep_alive(&tcp);
                        connections.spawn(serve(self.shared.clone(), tcp, peer, stop.clone()));
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = stopping.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
            while vnc_ports.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(left = connections.len(), "connections did not close in time; aborting them");
            connections.abort_all();
            vnc_ports.abort_all();
        }
        Ok(())
    }

    /// Binds `addr` (e.g. `"0.0.0.0:2222"`) and serves it in a task on the current runtime.
    pub async fn start(&self, addr: &str) -> Result<RunningGateway> {
        let listener = TcpListener::bind(addr).await?;
        self.start_on(listener)
    }

    /// Serves an already bound listener in a task on the current runtime.
    pub fn start_on(&self, listener: TcpListener) -> Result<RunningGateway> {
        let local_addr = listener.local_addr()?;
        let vnc_listeners = self.bind_vnc_ports(local_addr.ip())?;
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            gateway
                .serve(listener, vnc_listeners, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(RunningGateway { local_addr, stop: Some(stop), task: Some(task) })
    }
}

/// A gateway serving in the background. [`RunningGateway::stop`] stops it and waits; dropping
/// it stops it without waiting.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl RunningGateway {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits until all are gone.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|err| Error::Io(std::io::Error::other(err)))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Why an authenticated connection stopped being served.
enum Ending {
    ClientLeft,
    AccessEnded,
    GatewayStopping,
}

/// Serves one connection: pre-auth deadline, admission, then cut on revocation. Generic over
/// the transport only so that the fuzz targets can drive it over an in-memory stream.
async fn serve<S>(shared: Arc<Shared>, tcp: S, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _counted = shared.admission.count(Kind::Ssh);
    let waiting = match shared.admission.admit(Pool::Ssh, peer.ip()) {
        Ok(waiting) => waiting,
        Err(refusal) => {
            shared.log_limit.log(|| tracing::info!(%peer, %refusal, "closing an SSH connection at once"));
            return;
        }
    };
    let now = tokio::time::Instant::now();
    let (deadline, silent_deadline) =
        (now + shared.options.pre_auth_timeout, now + shared.options.silent_timeout);
    let flag = CutFlag::new();
    let (admitted_tx, mut admitted_rx) = oneshot::channel::<Login>();
    // Dropped when this function returns, which stops the connection's builder splices.
    let (_closed_tx, closed_rx) = watch::channel(());
    let handler = Handler::new(shared.clone(), Some(peer), admitted_tx, closed_rx, flag.clone());
    let stream = CutStream::new(tcp, flag.clone());

    // The identification must come within the silence deadline.
    let started = tokio::time::timeout_at(
        silent_deadline.min(deadline),
        russh::server::run_stream(shared.config.clone(), stream, handler),
    );
    let started = tokio::select! {
        started = started => started,
        () = waiting.evicted() => return,
        () = stopped(&mut stop) => return,
    };
    let running = match started {
        Ok(Ok(running)) => running,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "SSH handshake failed");
            return;
        }
        Err(_) => {
            shared
                .log_limit
                .log(|| tracing::info!(%peer, "no SSH identification within the silence deadline; cut"));
            shared.admission.failed(peer.ip(), None);
            return;
        }
    };
    let handle = running.handle();
    tokio::pin!(running);

    let mut opening_checked = false;
    let login = loop {
        tokio::select! {
            _ = &mut running => return,
            admitted = &mut admitted_rx => match admitted {
                Ok(login) => break login,
                Err(_) => return,
            },
            // By the silence deadline the client must have sent its key exchange's start too.
            () = tokio::time::sleep_until(silent_deadline), if !opening_checked => {
                opening_checked = true;
                if flag.bytes_read() < OPENING_BYTES {
                    shared.log_limit.log(|| tracing::info!(%peer, "no SSH key exchange within the silence deadline; cut"));
                    shared.admission.failed(peer.ip(), None);
                    flag.cut();
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                shared.log_limit.log(|| tracing::info!(%peer, "not authenticated before the pre-auth deadline; cut"));
                shared.admission.failed(peer.ip(), None);
                flag.cut();
                return;
            }
            () = waiting.evicted() => {
                tracing::debug!(%peer, "evicted before authenticating, for a newcomer");
                flag.cut();
                return;
            }
            () = stopped(&mut stop) => {
                flag.cut();
                return;
            }
        }
    };
    drop(waiting);

    let mut live = match login {
        Login::User(live) => live,
        Login::Agent(mut cut) => {
            // The agent is no user connection: it ends with the session or the gateway, and its
            // handler unregisters the tunnel when the connection goes.
            let reason = tokio::select! {
                // Gone by itself: nothing to say (and `running` must not be polled again).
                _ = &mut running => return,
                () = cut.cut() => tunnel::ACCESS_ENDED,
                () = stopped(&mut stop) => "the gateway is shutting down",
            };
            say_goodbye(&handle, &mut running, reason).await;
            flag.cut();
            return;
        }
    };
    let authority = &shared.authority;
    let Some(_holding) = shared.admission.hold(live.build_id(), Held::Connection) else {
        // Said before anything else happens on the connection; not a logout.
        let max = shared.admission.max(Held::Connection);
        authority.refused(live.build_id(), format!("more than {max} connections at once refused"));
        live.detach_on_drop();
        let reason =
            format!("too many connections to this build at once (at most {max}); close one and retry");
        say_goodbye(&handle, &mut running, &reason).await;
        flag.cut();
        if let Err(err) = authority.detached(live).await {
            tracing::warn!(%peer, %err, "could not record the end of a connection");
        }
        return;
    };
    let mut cut = live.cut_signal();
    let ending = tokio::select! {
        _ = &mut running => Ending::ClientLeft,
        () = cut.cut() => Ending::AccessEnded,
        () = stopped(&mut stop) => Ending::GatewayStopping,
    };
    let outcome = match ending {
        Ending::ClientLeft => authority.disconnected(live).await,
        Ending::AccessEnded => {
            say_goodbye(&handle, &mut running, tunnel::ACCESS_ENDED).await;
            flag.cut();
            authority.disconnected(live).await
        }
        Ending::GatewayStopping => {
            // Should this task be aborted from here on, the guard must not report a logout.
            live.detach_on_drop();
            say_goodbye(&handle, &mut running, "the gateway is shutting down").await;
            flag.cut();
            authority.detached(live).await
        }
    };
    if let Err(err) = outcome {
        tracing::warn!(%peer, %err, "could not record the end of a connection");
    }
}

/// Serves one connection on any transport, as the accept loop would, with a gateway that is
/// not stopping. Only for the fuzz targets (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) async fn serve_stream<S>(gateway: &Gateway, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (_stopping, stop) = watch::channel(false);
    serve(gateway.shared.clone(), stream, peer, stop).await;
}

/// Sends DISCONNECT with a reason the user's `ssh` prints and waits for the session to finish
/// sending it, bounded: a peer whose window is full must not hold up the cut.
async fn say_goodbye<F: Future + Unpin>(handle: &russh::server::Handle, running: &mut F, reason: &str) {
    let polite = async {
        let _ = handle.disconnect(Disconnect::ByApplication, reason.to_owned(), String::new()).await;
        let _ = running.await;
    };
    let _ = tokio::time::timeout(DISCONNECT_GRACE, polite).await;
}

/// Resolves once the gateway is stopping (or its stop sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
