//! Every russh callback of one user connection, in one place.
//!
//! The callbacks run inline in russh's connection loop, so none of them waits on slow I/O:
//! dialing the builder happens in a spawned task that then accepts or rejects the channel.
//! Authentication does consult the store (the in-memory one answers at once).

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{mpsc, oneshot, watch};

use super::MAX_PACKET;
use crate::authority::{Admitted, Attempt, End, LiveConnection, Role};
use crate::build::{BuildId, Builder};
use crate::error::Error;
use crate::gateway::admission::{Counted, Held, Holding, Kind, Target};
use crate::gateway::{CutFlag, Shared};
use crate::session::CutSignal;
use crate::tunnel;

/// How long a builder channel whose access ended waits for its connection to close (after the
/// polite DISCONNECT, which takes at most 250 ms) before closing by itself.
const CHANNEL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What a connection may reach once its user is authenticated.
struct Route {
    build_id: BuildId,
    builder: Option<Builder>,
    cut: CutSignal,
    role: Role,
    /// Set once this agent connection registered the build's reverse tunnel.
    tunnel: Option<u64>,
}

/// What the connection task watches once a login succeeded.
pub(crate) enum Login {
    /// A user connection (its guard reports the disconnect).
    User(LiveConnection),
    /// The build's agent: ends with the session.
    Agent(CutSignal),
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Some(Route { build_id, tunnel: Some(generation), .. }) = &self.route {
            self.shared.router.unregister(build_id, *generation);
        }
    }
}

pub(crate) struct Handler {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// Hands the admitted connection to the task that watches it; taken on first success.
    admitted: Option<oneshot::Sender<Login>>,
    route: Option<Route>,
    /// Says how this user connection ended, when it does; stops its splices.
    closed: watch::Receiver<Option<End>>,
    /// What the user's channels did, to tell a logout from a lost network.
    channels: Arc<Channels>,
    /// Held by each VNC-in-a-tunnel task until its end is recorded: the connection's own end
    /// waits for them (see `Channels`).
    vnc_tasks: mpsc::Sender<()>,
    /// Cuts this connection's transport: for clients that keep asking for what they may not.
    flag: Arc<CutFlag>,
    refusals: usize,
    auth_failures: usize,
}

/// The user's channels to the builder, to tell a logout from a lost network when the
/// connection ends. A channel has ended when the client sent EOF or CLOSE on it (it has nothing
/// more to send), or when the builder closed its side first (the user's session there is over:
/// `exit`; Dropbear and libssh2 then close their TCP connection without closing the channel). A
/// connection whose client ended every channel it opened ended by the user's will, as does one
/// that sent `DISCONNECT`; one that ends with a channel still open (a reset, a keepalive
/// timeout, a client killed mid-session: the builder's side was still open) was lost.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    state: std::sync::Mutex<ChannelState>,
}

#[derive(Debug, Default)]
struct ChannelState {
    opened_any: bool,
    /// The open channels, and whether each has ended (see `Channels`).
    open: std::collections::HashMap<ChannelId, bool>,
}

impl Channels {
    fn state(&self) -> std::sync::MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registered before the channel is confirmed, so before the client can end it.
    fn opened(&self, channel: ChannelId) {
        let mut state = self.state();
        state.opened_any = true;
        state.open.insert(channel, false);
    }

    fn ended(&self, channel: ChannelId) {
        if let Some(ended) = self.state().open.get_mut(&channel) {
            *ended = true;
        }
    }

    /// A closed channel is over, and its id may be used again.
    fn closed(&self, channel: ChannelId) {
        self.state().open.remove(&channel);
    }

    /// Whether the client opened channels and every one has ended.
    pub(crate) fn all_closed_by_client(&self) -> bool {
        let state = self.state();
        state.opened_any && state.open.values().all(|ended| *ended)
    }

    /// Whether the client never opened a channel (a tunnel nobody used yet).
    pub(crate) fn none_opened(&self) -> bool {
        !self.state().opened_any
    }
}

/// One side of a builder channel's splice, which notes whether it reached its end of stream
/// before the other: the builder's side first means the session on the builder ended (the
/// channel has ended, see `Channels`); the user's side first (an EOF, or russh dropping the
/// channel with the transport) means nothing.
struct FirstEnd<S> {
    inner: S,
    builder_side: bool,
    first: Arc<std::sync::atomic::AtomicU8>,
    channel: ChannelId,
    channels: Arc<Channels>,
}

impl<S> FirstEnd<S> {
    fn new(
        inner: S,
        builder_side: bool,
        first: &Arc<std::sync::atomic::AtomicU8>,
        channel: ChannelId,
        channels: &Arc<Channels>,
    ) -> Self {
        Self { inner, builder_side, first: first.clone(), channel, channels: channels.clone() }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstEnd<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let (before, room) = (buf.filled().len(), buf.remaining());
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let at_end =
            matches!(polled, std::task::Poll::Ready(Ok(()))) && room > 0 && buf.filled().len() == before;
        if at_end {
            let side = if self.builder_side { 1 } else { 2 };
            let won = self.first.compare_exchange(0, side, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            if won && self.builder_side {
                self.channels.ended(self.channel);
            }
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstEnd<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refused requests after which a connection is cut.
const MAX_REFUSALS: usize = 32;
/// Refusals per connection that become `refused` events; the rest are only logged (the
/// platform learns what a user tried, not the same thing thirty times).
const REFUSED_EVENTS: usize = 16;

/// A builder channel's hold on its build's share, and its place in the gateway's stats.
struct ChannelSlot {
    _held: Holding,
    _counted: Counted,
}

impl Handler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: Option<SocketAddr>,
        admitted: oneshot::Sender<Login>,
        closed: watch::Receiver<Option<End>>,
        flag: Arc<CutFlag>,
        channels: Arc<Channels>,
        vnc_tasks: mpsc::Sender<()>,
    ) -> Self {
        Self {
            shared,
            peer,
            admitted: Some(admitted),
            route: None,
            closed,
            channels,
            vnc_tasks,
            flag,
            refusals: 0,
            auth_failures: 0,
        }
    }

    /// Counts a failed authentication as `user`, for the source's backoff; past the limit the
    /// connection is cut. (russh does not count rejected key probes against
    /// `max_auth_attempts`.)
    async fn auth_failed(&mut self, user: &str) -> Auth {
        if let Some(peer) = self.peer {
            self.shared.failed(peer.ip(), Target::user(user)).await;
        }
        self.auth_failures += 1;
        if self.auth_failures > self.shared.options.max_auth_attempts {
            let peer = self.peer();
            self.shared
                .log_limit
                .log(|| tracing::info!(%peer, "too many failed authentication attempts; cut"));
            self.flag.cut();
        }
        Auth::reject()
    }

    fn peer(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown peer".into())
    }

    /// One of the build's builder channels, or why not (the refusal already counted and
    /// published): shared by tunnels to the builder and VNC in a tunnel.
    fn channel_slot(&mut self, build_id: &BuildId, host: &str, port: u32) -> Result<ChannelSlot, String> {
        let Some(held) = self.shared.admission.hold(build_id, Held::Channel) else {
            let max = self.shared.admission.max(Held::Channel);
            let why =
                format!("this build has {max} connections to its builder open, the most it may hold at once");
            self.refuse(
                "too_many_channels",
                format!("direct-tcpip to {}:{port} refused: {why}", shown(host)),
            );
            return Err(why);
        };
        Ok(ChannelSlot { _held: held, _counted: self.shared.admission.count(Kind::Channel) })
    }

    /// Refuses a request of a logged-in user: counted under `reason` (a fixed code), an event
    /// for the platform (the first few per connection), a log line for us. A connection that
    /// keeps asking is cut.
    fn refuse(&mut self, reason: &'static str, what: String) {
        self.shared.metrics.channels_refused.add(reason, "");
        let peer = self.peer();
        self.shared.log_limit.log(|| tracing::info!(%peer, refused = %what, "gateway refused a request"));
        self.refusals += 1;
        if self.refusals > MAX_REFUSALS {
            self.shared.log_limit.log(|| tracing::info!(%peer, "too many refused requests; cut"));
            self.flag.cut();
            return;
        }
        if let Some(route) = &self.route {
            if self.refusals <= REFUSED_EVENTS {
                self.shared.authority.refused(&route.build_id, what);
            } else if self.refusals == REFUSED_EVENTS + 1 {
                let more = format!(
                    "more refusals on this connection are only logged (it is cut after {MAX_REFUSALS})"
                );
                self.shared.authority.refused(&route.build_id, more);
            }
        }
    }

    /// Whether the peer's network is backed off: its logins are not checked.
    async fn backing_off(&self) -> bool {
        match self.peer {
            Some(peer) => self.shared.backing_off(peer.ip()).await,
            None => false,
        }
    }

    /// Closes the connection without checking the key, because the peer's network is backed
    /// off. Closed, not refused: a refusal would tell a builder agent its key is bad (it then
    /// stops for good), while a closed connection is retried once the backoff is over.
    fn cut_for_backoff(&mut self) -> Auth {
        self.shared.metrics.logins_refused.add("ssh", "backing_off");
        let peer = self.peer();
        self.shared
            .log_limit
            .log(|| tracing::info!(%peer, "its network is backed off; closing without checking the login"));
        self.flag.cut();
        Auth::reject()
    }

    /// Closes the connection when a login could not be checked (the store failed): not a
    /// verdict on the credential, so not a failure, and clients (agents above all) retry.
    fn cut_unchecked(&mut self, err: &Error) -> Auth {
        self.shared.metrics.logins_refused.add("ssh", err.code());
        let peer = self.peer();
        self.shared
            .log_limit
            .log(|| tracing::warn!(%peer, %err, "could not check a login; closing the connection"));
        self.flag.cut();
        Auth::reject()
    }

    /// Counts a refused login and logs why (rate-limited; never a key or secret).
    fn refused_login(&self, user: &str, err: &Error) {
        self.shared.metrics.logins_refused.add("ssh", super::super::refusal_code(err));
        let peer = self.peer();
        self.shared
            .log_limit
            .log(|| tracing::info!(%peer, user = %shown(user), %err, "authentication refused"));
    }
}

/// A user-supplied string made safe and short for events and logs.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_default).collect();
    if text.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

/// What the user sees when they try to open a shell on the gateway itself (OpenSSH prints it
/// after "channel 0: open failed: ...").
const NO_SHELL: &str = "this is a remote-access gateway: it only forwards SSH to your build's builder; \
connect with your build's connection script, or: ssh -J <user>@<gateway> <builder>";

impl Handler {
    fn check_packet(&mut self, len: usize) {
        if len > MAX_PACKET as usize {
            let peer = self.peer();
            self.shared
                .log_limit
                .log(|| tracing::info!(%peer, len, "a channel packet larger than announced; cut"));
            self.flag.cut();
        }
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    /// The time rules, before the login (russh asks before the client names its user, so the
    /// banner cannot name the build's own deadline: the builder kit shows it in the user's shell).
    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(Some(self.shared.banner.clone()))
    }

    // russh calls these two only for established channels: the ones the user opened and we
    // accepted (a channel's id is not reused while it is open).
    async fn channel_eof(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.ended(channel);
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.closed(channel);
        Ok(())
    }

    /// Passwords are not a method here; trying one is a failed login like any other.
    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        let peer = self.peer();
        self.shared.log_limit.log(|| tracing::info!(%peer, user = %shown(user), "password authentication refused (not a method here)"));
        Ok(self.auth_failed(user).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.backing_off().await {
            return Ok(self.cut_for_backoff());
        }
        // Only a probe: no state changes here; the decision is made again with the signature.
        let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        // Boxed, here and in `auth_publickey`: the store's futures (Redis) are large, and
        // inline they would size russh's session future, which every idle connection keeps.
        match Box::pin(self.shared.authority.verify_ssh_key(user, &fingerprint, Attempt::Probe)).await {
            Ok(_) => Ok(Auth::Accept),
            Err(
                err @ (Error::AccessDenied { .. } | Error::SessionEnded { .. } | Error::UnknownBuild { .. }),
            ) => {
                self.refused_login(user, &err);
                Ok(self.auth_failed(user).await)
            }
            Err(err) => Ok(self.cut_unchecked(&err)),
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if self.backing_off().await {
            return Ok(self.cut_for_backoff());
        }
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let admitted_login = match Box::pin(self.shared.authority.connect_ssh(user, &fingerprint)).await {
            Ok(admitted) => admitted,
            Err(
                err @ (Error::AccessDenied { .. } | Error::SessionEnded { .. } | Error::UnknownBuild { .. }),
            ) => {
                // The reason goes to our log only; the client sees the same refusal for all.
                self.refused_login(user, &err);
                return Ok(self.auth_failed(user).await);
            }
            Err(err) => return Ok(self.cut_unchecked(&err)),
        };
        let Some(admitted) = self.admitted.take() else {
            return Ok(Auth::reject());
        };
        let (session, role, cut, login) = match admitted_login {
            Admitted::User(session, live) => {
                let cut = live.cut_signal();
                (session, Role::User, cut, Login::User(live))
            }
            Admitted::Agent(session, cut) => (session, Role::Agent, cut.clone(), Login::Agent(cut)),
        };
        tracing::info!(peer = %self.peer(), build_id = %session.build_id(), ?role, "authenticated");
        self.shared.metrics.logins_accepted.add("ssh", "");
        if let (Some(peer), Some(target)) = (self.peer, Target::user(user)) {
            self.shared.succeeded(peer.ip(), target).await;
        }
        self.route = Some(Route {
            build_id: session.build_id().clone(),
            builder: session.builder().cloned(),
            cut,
            role,
            tunnel: None,
        });
        // If the watching task is gone the connection is closing anyway; a user's `live` then
        // drops and reports its own disconnect.
        let _ = admitted.send(login);
        Ok(Auth::Accept)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(route) = &self.route else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        if route.role == Role::Agent {
            self.refuse("agent_channel", "an agent credential cannot open channels".into());
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        let (mut cut, build_id) = (route.cut.clone(), route.build_id.clone());
        // The builder's VNC server is served by the gateway's own VNC proxy, inside the channel:
        // the user logs in with the build's VNC password, never the builder's.
        if route.builder.as_ref().is_some_and(|b| b.is_vnc(host, port)) {
            let slot = match self.channel_slot(&build_id, host, port) {
                Ok(slot) => slot,
                Err(why) => {
                    reply.reject(ChannelOpenFailure::Other { code: 4, reason: why }).await;
                    return Ok(());
                }
            };
            let (shared, closed) = (self.shared.clone(), self.closed.clone());
            let peer = self.peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (channels, recorded) = (self.channels.clone(), self.vnc_tasks.clone());
            tokio::spawn(async move {
                channels.opened(channel.id());
                reply.accept().await;
                crate::gateway::vnc::serve_channel(shared, channel.into_stream(), peer, build_id, closed)
                    .await;
                drop((slot, recorded));
            });
            return Ok(());
        }
        let target = route.builder.as_ref().filter(|b| b.allows(host, port)).cloned();
        let Some(builder) = target else {
            let why = match &route.builder {
                None => "this build's builder has no route yet".to_owned(),
                Some(b) => format!("only this build's builder ({}) may be reached", allowed(b)),
            };
            self.refuse("not_the_builder", format!("direct-tcpip to {}:{port} refused: {why}", shown(host)));
            reply.reject(ChannelOpenFailure::Other { code: 1, reason: why }).await;
            return Ok(());
        };
        let slot = match self.channel_slot(&build_id, host, port) {
            Ok(slot) => slot,
            Err(why) => {
                reply.reject(ChannelOpenFailure::Other { code: 4, reason: why }).await;
                return Ok(());
            }
        };
        let port = u16::try_from(port).unwrap_or(builder.ssh_port);
        let addr = SocketAddr::new(builder.address, port);
        let (mut closed, authority) = (self.closed.clone(), self.shared.authority.clone());
        let channels = self.channels.clone();
        let (router, dial_timeout) = (self.shared.router.clone(), self.shared.options.dial_timeout);
        let stall = self.shared.options.builder_stall_timeout;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // The dial races the end of access and of the user's connection.
            let dialed = tokio::select! {
                dialed = router.open(&build_id, &builder, port, dial_timeout) => dialed,
                () = cut.cut() => {
                    reply.reject(ChannelOpenFailure::Other { code: 1, reason: tunnel::ACCESS_ENDED.into() }).await;
                    return;
                }
                _ = closed.changed() => return,
            };
            let tcp = match dialed {
                Ok(tcp) => tcp,
                Err(err) => {
                    tracing::warn!(%build_id, %addr, %err, "could not reach the builder");
                    shared.metrics.channels_refused.add("builder_unreachable", "");
                    authority.refused(&build_id, format!("builder {addr} unreachable: {err}"));
                    // The reason reaches the user's ssh ("open failed: ..."): no hang, no guess.
                    reply.reject(ChannelOpenFailure::Other { code: 2, reason: err.to_string() }).await;
                    return;
                }
            };
            if cut.is_cut() {
                reply
                    .reject(ChannelOpenFailure::Other { code: 1, reason: tunnel::ACCESS_ENDED.into() })
                    .await;
                return;
            }
            let id = channel.id();
            channels.opened(id);
            reply.accept().await;
            let first = Arc::new(std::sync::atomic::AtomicU8::new(0));
            let (mut read_half, write_half) = channel.split();
            let (user, tcp) = (
                FirstEnd::new(read_half.make_reader(), false, &first, id, &channels),
                FirstEnd::new(tcp, true, &first, id, &channels),
            );
            let (mut ended, mut gone) = (cut.clone(), closed.clone());
            let stop = async move {
                tokio::select! {
                    () = ended.cut() => {}
                    _ = gone.changed() => {}
                }
            };
            match tunnel::splice_channel(user, &write_half, tcp, stop, stall).await {
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                    tracing::info!(%build_id, %addr, %err, "closed a connection to the builder");
                }
                Err(err) => tracing::debug!(%build_id, %err, "builder tunnel ended with an error"),
                Ok(_) => {}
            }
            if cut.is_cut() {
                // Access ended: no byte moves any more, but the channel stays open until the
                // connection's DISCONNECT ("remote access ... has ended") is out and its task
                // cuts the transport; closed first, it would let the user's ssh exit without
                // hearing why.
                let _ = tokio::time::timeout(CHANNEL_LINGER, closed.changed()).await;
            }
            drop((read_half, slot));
            // As a dropped channel stream does: the user's side learns the channel is over (in
            // a task of its own, since a user who reads nothing could hold the send).
            tokio::spawn(async move {
                let _ = write_half.close().await;
            });
        });
        Ok(())
    }

    /// Refused at once (a session channel costs the gateway memory for as long as it is
    /// open, and a shell here would be useless): the reason tells the user where to go, and
    /// each counts toward the connection's refusals.
    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        drop(channel);
        let agent = self.route.as_ref().is_some_and(|r| r.role == Role::Agent);
        let reason = if agent { "an agent credential cannot open a session" } else { NO_SHELL };
        self.refuse(
            "session",
            if agent { reason.into() } else { "a session on the gateway itself refused".into() },
        );
        reply.reject(ChannelOpenFailure::Other { code: 1, reason: reason.into() }).await;
        Ok(())
    }

    /// A peer must keep to the packet size we announced: russh would queue up to 256 KiB per
    /// packet, and the queues' bound on memory assumes `MAX_PACKET`.
    async fn data(
        &mut self,
        _channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.check_packet(data.len());
        Ok(())
    }

    async fn extended_data(
        &mut self,
        _channel: ChannelId,
        _code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.check_packet(data.len());
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // Only the build's agent may register, and only for a builder reached in reverse.
        let agent = self
            .route
            .as_ref()
            .filter(|r| r.role == Role::Agent)
            .map(|r| (r.build_id.clone(), r.builder.clone()));
        let Some((build_id, Some(builder))) =
            agent.filter(|(_, b)| b.as_ref().is_some_and(|b| b.reverse_tunnel))
        else {
            self.refuse(
                "remote_forwarding",
                format!("remote forwarding of {}:{port} refused", shown(address)),
            );
            return Ok(false);
        };
        if self.route.as_ref().is_some_and(|r| r.tunnel.is_some()) {
            return Ok(true); // already registered on this connection
        }
        let (flag, handle) = (self.flag.clone(), session.handle());
        // A replaced agent is told so (it then stops rather than fight back), then cut.
        let replace = move || {
            let (flag, handle) = (flag.clone(), handle.clone());
            tokio::spawn(async move {
                let goodbye = handle.disconnect(
                    russh::Disconnect::ByApplication,
                    tunnel::REPLACED.into(),
                    String::new(),
                );
                let _ = tokio::time::timeout(std::time::Duration::from_millis(250), goodbye).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                flag.cut();
            });
        };
        let generation = self.shared.router.register(&build_id, session.handle(), Arc::new(replace));
        if let Some(route) = self.route.as_mut() {
            route.tunnel = Some(generation);
        }
        tracing::info!(peer = %self.peer(), %build_id, "builder agent registered the reverse tunnel");
        // Every registration is on the record: a credential holder replacing the real agent
        // shows up here.
        self.shared
            .authority
            .tunnel_registered(&build_id, format!("builder agent connected from {}", self.peer()));
        // A port-0 request is answered with the builder's SSH port; russh sends it with the
        // reply (no separate request_success: that would drop the port).
        if *port == 0 {
            *port = u32::from(builder.ssh_port);
        }
        Ok(true)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(
            "remote_forwarding",
            format!("remote forwarding of socket {} refused", shown(socket_path)),
        );
        Ok(false)
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("x11", "X11 channel refused".into());
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("unix_socket", format!("direct-streamlocal to {} refused", shown(socket_path)));
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("forwarded_tcpip", "forwarded-tcpip channel from a user refused".into());
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }
}

/// `10.0.0.5:22` or `[fd00::5]:22, 2222`: the builder's reachable ports, for messages.
fn allowed(builder: &Builder) -> String {
    let first = match builder.address {
        std::net::IpAddr::V4(ip) => SocketAddrV4::new(ip, builder.ssh_port).to_string(),
        std::net::IpAddr::V6(ip) => SocketAddrV6::new(ip, builder.ssh_port, 0, 0).to_string(),
    };
    let extra: Vec<String> = builder.extra_ports.iter().map(u16::to_string).collect();
    if extra.is_empty() { first } else { format!("{first}, {}", extra.join(", ")) }
}
