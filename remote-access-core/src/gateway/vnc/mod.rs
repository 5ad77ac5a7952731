//! The VNC proxy: one gateway port per live session with VNC. It terminates the user's RFB
//! handshake with the per-build password, logs in to the builder's own VNC server with the
//! builder's password (which the user never sees), then splices bytes until the user leaves or
//! access ends.
//!
//! Each port speaks RFB in three carriages: plain TCP (with VeNCrypt `X509Vnc` on offer when
//! the gateway has a TLS certificate), and RFB over WebSocket for noVNC, as `ws://` or, with a
//! certificate, `wss://`. A browser speaks first (its HTTP request, or a TLS ClientHello) while
//! an RFB client waits for the server's version, so the first byte within [`FIRST_BYTE_WAIT`]
//! tells them apart, as libvncserver does.
//!
//! Why a port per session rather than one shared port that finds the session by password: VNC
//! Authentication is a challenge-response, so a shared port would have to try every live
//! session's password against each response, and one guess would be tested against all
//! sessions at once. With a port per session, a guess is tested against one session only. The
//! price is a port range to open on the gateway.

mod ard;
mod handshake;
mod websocket;

/// The handshakes, for the fuzz targets only (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) use handshake::{
    BuilderLogin, UserHello, Version, greet_user, login_builder, refuse_user, welcome_user,
};
pub(crate) use handshake::{Greeting, Offer};
#[cfg(fuzzing)]
pub(crate) use websocket::{Rules, accept as accept_websocket};

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::listen::Stop;
use super::{CutFlag, CutStream, Held, Holding, Kind, Pool, Shared, Target, Waiting};
use crate::authority::{End, LiveConnection};
use crate::error::Error;
use crate::session::Protocol;
use crate::tunnel;
use handshake::HandshakeError;

/// The user's side of a VNC connection, whatever carries it (TCP, TLS, WebSocket, an SSH
/// channel).
trait UserStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UserStream for T {}
type User = Box<dyn UserStream>;

/// How long the gateway waits for a client to speak first (a browser's WebSocket request or
/// TLS ClientHello) before it speaks RFB, where the server goes first. A browser sends at
/// once; an RFB client only sees its server's version this much later.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(250);
/// The first byte of a TLS record carrying a handshake: a `wss://` connection.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a connection the gateway ends may take to say goodbye (a WebSocket close frame,
/// TLS close_notify) before it is dropped.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// What carries RFB on a gateway VNC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carriage {
    /// RFB on TCP (VeNCrypt may add TLS inside it).
    Tcp,
    /// RFB over WebSocket, `ws://`.
    WebSocket,
    /// RFB over WebSocket over TLS, `wss://`.
    SecureWebSocket,
}

/// What the user is told when anything but their password went wrong: nothing about the
/// builder leaks.
const GENERIC_FAILURE: &str = "VM unavailable";
/// An RFB protocol version line ("RFB 003.008\n"): what a client must send before the silence
/// deadline.
const PROTOCOL_VERSION_LEN: u64 = 12;
/// What the user is told when the password is wrong, revoked or expired.
const AUTH_FAILURE: &str = "Authentication failed";

/// One user VNC connection: handshake under one deadline, then splice until cut.
pub(super) async fn serve(shared: Arc<Shared>, user: TcpStream, peer: SocketAddr, port: u16, mut stop: Stop) {
    let _ = user.set_nodelay(true);
    let (admission, options) = (&shared.admission, &shared.options);
    let _counted = admission.count(Kind::Vnc);
    let waiting = match admission.admit(Pool::Vnc, peer.ip()) {
        Ok(waiting) => waiting,
        Err(refusal) => {
            shared.metrics.closed_before_login.add("vnc", refusal.code());
            shared
                .log_limit
                .log(|| tracing::info!(%peer, port, %refusal, "closing a VNC connection at once"));
            return;
        }
    };
    let flag = CutFlag::counting(shared.metrics.traffic.clone());
    let silent = async {
        tokio::time::sleep(options.silent_timeout).await;
        if flag.bytes_read() < PROTOCOL_VERSION_LEN {
            return;
        }
        std::future::pending().await
    };
    let admitting = tokio::time::timeout(options.pre_auth_timeout, async {
        let (user, carriage) = carry(&shared, user, flag.clone()).await?;
        admit(&shared, &waiting, user, carriage, peer, port).await
    });
    let admitted = tokio::select! {
        admitted = admitting => admitted,
        () = silent => {
            shared.log_limit.log(|| tracing::info!(%peer, port, "no RFB protocol version within the silence deadline; cut"));
            shared.metrics.closed_before_login.add("vnc", "silent");
            shared.failed_here(peer.ip());
            return;
        }
        () = waiting.evicted() => {
            shared.metrics.closed_before_login.add("vnc", "evicted");
            tracing::debug!(%peer, port, "evicted before authenticating, for a newcomer");
            return;
        }
    };
    drop(waiting);
    let (mut user, carriage, live, builder, _holding) = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(err)) => {
            // A refused password was counted when it was decided; a handshake that just ends
            // (a port scan, a load balancer's health check) or a builder-side failure is not.
            shared.log_limit.log(|| tracing::info!(%peer, port, %err, "VNC connection refused"));
            return;
        }
        Err(_) => {
            shared.log_limit.log(|| tracing::info!(%peer, port, "VNC handshake not finished before the pre-auth deadline; cut"));
            shared.metrics.closed_before_login.add("vnc", "pre_auth_timeout");
            shared.failed_here(peer.ip());
            return;
        }
    };
    tracing::info!(%peer, port, build_id = %live.build_id(), ?carriage, "VNC connection admitted");
    shared.metrics.logins_accepted.add("vnc", "");
    let mut cut = live.cut_signal();
    // Leaving the select drops the splice and with it the builder's socket: that is the cut.
    let (gateway_stopping, ended) = tokio::select! {
        spliced = tunnel::splice(&mut user, builder, std::future::pending(), (tunnel::SOCKET_BUFFER, tunnel::SCREEN_BUFFER), options.builder_stall_timeout) => {
            if let Err(err) = spliced {
                tracing::debug!(%peer, %err, "VNC splice ended with an error");
            }
            (false, false)
        }
        () = cut.cut() => (false, true),
        () = stop.stopped() => (true, true),
    };
    // The viewer closing its connection is a logout; a reset or a keepalive timeout is a loss
    // the user may come back from (after the steps, within the reconnect window).
    let how = if gateway_stopping {
        live.detach_on_drop();
        End::Detached
    } else if ended || flag.closed_by_peer() {
        End::Left
    } else {
        End::Lost
    };
    if let Err(err) = live.end(how).await {
        tracing::warn!(%peer, %err, "could not record the end of a VNC connection");
    }
    if ended {
        // Then say goodbye where the carriage can (noVNC shows the close frame's reason),
        // briefly: a client that reads nothing does not hold up the record of the end.
        let _ = tokio::time::timeout(GOODBYE_WAIT, user.shutdown()).await;
        if let (false, Some(at)) = (gateway_stopping, cut.cut_at()) {
            shared.metrics.cut_latency.observe(at.elapsed());
        }
    }
}

/// Finds what carries RFB on a new connection and unwraps it: a browser speaks first (`GET`
/// for `ws://`, a TLS ClientHello for `wss://`), an RFB client waits for the server.
async fn carry(shared: &Shared, tcp: TcpStream, flag: Arc<CutFlag>) -> Result<(User, Carriage), Refusal> {
    let options = &shared.options;
    let first = if options.vnc_websocket {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(FIRST_BYTE_WAIT, tcp.peek(&mut byte)).await {
            Ok(Ok(1)) => Some(byte[0]),
            _ => None,
        }
    } else {
        None
    };
    let rules = |encrypted: bool| websocket::Rules {
        origins: &options.vnc_websocket_origins,
        refuse_unencrypted: options.vnc_require_encryption && !encrypted,
    };
    // The cut flag counts RFB bytes, whatever carries them: the silence deadline wants an RFB
    // version, not just an HTTP request or a TLS handshake.
    match (first, &shared.vnc_tls) {
        (Some(b'G'), _) => {
            let ws = websocket::accept(tcp, rules(false)).await.map_err(Refusal::Handshake)?;
            Ok((Box::new(CutStream::new(ws, flag)), Carriage::WebSocket))
        }
        (Some(TLS_HANDSHAKE), Some(tls)) => {
            let tls = tls.accept(tcp).await.map_err(|err| Refusal::Handshake(HandshakeError::Tls(err)))?;
            let ws = websocket::accept(tls, rules(true)).await.map_err(Refusal::Handshake)?;
            Ok((Box::new(CutStream::new(ws, flag)), Carriage::SecureWebSocket))
        }
        _ => Ok((Box::new(CutStream::new(tcp, flag)), Carriage::Tcp)),
    }
}

/// One VNC connection inside an SSH user's `direct-tcpip` channel to the builder's VNC
/// address: the same proxy as on a gateway port, end to end encrypted from the user's machine
/// (`ssh -L`). The user still logs in with the build's VNC password, and the gateway with the
/// builder's; the SSH login already proved the build, so there is no port to route by and no
/// waiting pool. It ends when the user leaves, access ends, or the SSH connection closes
/// (`closed` changes to how it ended). Its end is recorded before the SSH connection's, so it
/// is never the last of the session's connections: the SSH connection's end decides.
pub(crate) async fn serve_channel<S>(
    shared: Arc<Shared>,
    user: S,
    peer: SocketAddr,
    build_id: crate::build::BuildId,
    mut closed: tokio::sync::watch::Receiver<Option<End>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (authority, options) = (&shared.authority, &shared.options);
    let admitting = async {
        // SSH already encrypts: plain VNC Authentication inside it.
        let (mut user, hello) = greet(&shared, Box::new(user), Offer { plain: true, tls: false }).await?;
        let answer_at = tokio::time::Instant::now() + options.auth_rejection_delay;
        let decided = if shared.backing_off(peer.ip()).await {
            Err(Refusal::BackingOff)
        } else {
            match authority.verify_vnc_response(&build_id, &hello.challenge, &hello.response).await {
                Ok(login) => match authority.session(&build_id).await {
                    Ok(session) => Ok((session, login)),
                    Err(err) => Err(Refusal::Unavailable(err)),
                },
                Err(err) => Err(Refusal::of_verdict(err)),
            }
        };
        let (session, builder_login) = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                shared.metrics.logins_refused.add("vnc", refusal.code());
                if matches!(refusal, Refusal::Denied(_)) {
                    shared.failed(peer.ip(), None).await;
                }
                tokio::time::sleep_until(answer_at).await;
                handshake::refuse_user(&mut user, hello.version, refusal.answer()).await;
                return Err(refusal);
            }
        };
        let (live, builder, holding) =
            proxy_to_builder(&shared, &mut user, &hello, session, builder_login).await?;
        Ok((user, live, builder, holding))
    };
    let (user, live, builder, _holding) = match tokio::time::timeout(options.pre_auth_timeout, admitting)
        .await
    {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(err)) => {
            shared.log_limit.log(|| tracing::info!(%peer, %build_id, %err, "VNC in an SSH tunnel refused"));
            return;
        }
        Err(_) => return,
    };
    tracing::info!(%peer, %build_id, "VNC connection admitted through an SSH tunnel");
    shared.metrics.logins_accepted.add("vnc", "");
    let mut cut = live.cut_signal();
    tokio::select! {
        spliced = tunnel::splice(user, builder, std::future::pending(), (tunnel::CHANNEL_BUFFER, tunnel::CHANNEL_BUFFER), options.builder_stall_timeout) => {
            if let Err(err) = spliced {
                tracing::debug!(%peer, %err, "VNC splice in an SSH tunnel ended with an error");
            }
        }
        () = cut.cut() => {}
        _ = closed.changed() => {}
    }
    let how = closed.borrow().unwrap_or(End::Left);
    if let Err(err) = live.end(how).await {
        tracing::warn!(%peer, %err, "could not record the end of a VNC connection");
    }
}

/// The user's handshake up to the VNC Authentication response, with TLS started inside it
/// when the user chose VeNCrypt: returns the stream to go on with (TLS, if started).
async fn greet(
    shared: &Shared,
    mut user: User,
    offer: Offer,
) -> Result<(User, handshake::UserHello), Refusal> {
    match handshake::greet_user(&mut user, offer).await.map_err(Refusal::Handshake)? {
        Greeting::Plain(hello) => Ok((user, hello)),
        Greeting::StartTls(version) => {
            let tls = shared.vnc_tls.as_ref().ok_or(Refusal::Handshake(HandshakeError::Protocol(
                "VeNCrypt agreed without a certificate",
            )))?;
            let tls = tls.accept(user).await.map_err(|err| Refusal::Handshake(HandshakeError::Tls(err)))?;
            let mut user: User = Box::new(tls);
            let hello = handshake::challenge_user(&mut user, version).await.map_err(Refusal::Handshake)?;
            Ok((user, hello))
        }
    }
}

/// Why a VNC connection was not admitted (for our logs).
#[derive(Debug)]
enum Refusal {
    Handshake(HandshakeError),
    NoSession,
    /// The source's network is backed off: refused unchecked.
    BackingOff,
    Denied(Error),
    /// The store could not say (not a verdict on the password; not counted).
    Unavailable(Error),
    Builder(String),
}

impl Refusal {
    /// The authority's verdict on a password: a refusal, counted as a failed guess, or no
    /// verdict at all (the store could not say).
    fn of_verdict(err: Error) -> Self {
        match err {
            Error::AccessDenied { .. } | Error::SessionEnded { .. } | Error::UnknownBuild { .. } => {
                Self::Denied(err)
            }
            err => Self::Unavailable(err),
        }
    }

    /// A fixed code, for the metrics.
    fn code(&self) -> &'static str {
        match self {
            Self::Handshake(_) => "handshake",
            Self::NoSession => "no_session",
            Self::BackingOff => "backing_off",
            Self::Denied(err) => super::refusal_code(err),
            Self::Unavailable(err) => err.code(),
            Self::Builder(_) => "builder",
        }
    }

    /// What the user is told: a refused password and a port without a session look alike;
    /// a store outage is no verdict on the password.
    fn answer(&self) -> &'static str {
        if matches!(self, Self::Unavailable(_)) { GENERIC_FAILURE } else { AUTH_FAILURE }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handshake(err) => write!(f, "user handshake: {err}"),
            Self::NoSession => f.write_str("no live session on this port"),
            Self::BackingOff => f.write_str("too many failed logins from this network; refused unchecked"),
            Self::Denied(err) => write!(f, "{err}"),
            Self::Unavailable(err) => write!(f, "could not check: {err}"),
            Self::Builder(err) => write!(f, "builder: {err}"),
        }
    }
}

/// The whole pre-auth phase: the user's handshake (TLS inside it if they chose VeNCrypt), the
/// password, the builder's login, the connection recorded, ClientInit forwarded as shared.
async fn admit(
    shared: &Shared,
    waiting: &Waiting,
    user: User,
    carriage: Carriage,
    peer: SocketAddr,
    port: u16,
) -> Result<(User, Carriage, LiveConnection, Box<dyn tunnel::BuilderStream>, Holding), Refusal> {
    let (authority, options) = (&shared.authority, &shared.options);
    let offer = match carriage {
        // In a browser, the WebSocket's TLS (wss://) is the encryption: noVNC has no VeNCrypt.
        Carriage::SecureWebSocket => Offer { plain: true, tls: false },
        Carriage::WebSocket => Offer { plain: !options.vnc_require_encryption, tls: false },
        Carriage::Tcp => Offer { plain: !options.vnc_require_encryption, tls: shared.vnc_tls.is_some() },
    };
    let (mut user, hello) = greet(shared, user, offer).await?;
    // Every refusal of a password is sent this long after the response arrived, and a port
    // without a live session answers exactly like a wrong password: neither the time nor the
    // answer tells a scanner which ports are live.
    let answer_at = tokio::time::Instant::now() + options.auth_rejection_delay;
    let target = Target::VncPort(port);
    // A network backed off since this connection arrived gets no guess checked.
    let decided = if shared.backing_off(peer.ip()).await {
        Err(Refusal::BackingOff)
    } else {
        match authority.vnc_route(port).await {
            Ok(Some(session)) => authority
                .verify_vnc_response(session.build_id(), &hello.challenge, &hello.response)
                .await
                .map(|login| (session, login))
                .map_err(Refusal::of_verdict),
            Ok(None) => Err(Refusal::NoSession),
            Err(err) => Err(Refusal::Unavailable(err)),
        }
    };
    let (session, builder_login) = match decided {
        Ok(admitted) => {
            // Authenticated: no longer a connection a newcomer may evict.
            waiting.leave();
            shared.succeeded(peer.ip(), target).await;
            admitted
        }
        Err(refusal) => {
            shared.metrics.logins_refused.add("vnc", refusal.code());
            // Counted now, before the delay: a guess whose connection is evicted or closed
            // while it waits for its answer counts all the same.
            match refusal {
                Refusal::Unavailable(_) => {}
                // Not checked: counted here only (the fleet has counted what backed it off).
                Refusal::BackingOff => shared.failed_here(peer.ip()),
                _ => shared.failed(peer.ip(), Some(target)).await,
            }
            tokio::time::sleep_until(answer_at).await;
            handshake::refuse_user(&mut user, hello.version, refusal.answer()).await;
            return Err(refusal);
        }
    };
    let (live, builder, holding) =
        proxy_to_builder(shared, &mut user, &hello, session, builder_login).await?;
    Ok((user, carriage, live, builder, holding))
}

/// What the gateway logs in to the builder's VNC server with: its password, and a macOS
/// account name for Apple's type 30.
type BuilderSecret = Option<(crate::secret::Secret<String>, Option<String>)>;

/// After the user's password: the build's hold on a connection, the builder's own login, the
/// connection recorded in the session (as VNC, for the logout rule), ClientInit forwarded.
async fn proxy_to_builder<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    user: &mut S,
    hello: &handshake::UserHello,
    session: crate::session::Session,
    builder_login: BuilderSecret,
) -> Result<(LiveConnection, Box<dyn tunnel::BuilderStream>, Holding), Refusal> {
    let (authority, options) = (&shared.authority, &shared.options);
    let build_id = session.build_id().clone();
    let Some(holding) = shared.admission.hold(&build_id, Held::Connection) else {
        let max = shared.admission.max(Held::Connection);
        shared.metrics.logins_refused.add("vnc", "too_many_connections");
        handshake::refuse_user(
            user,
            hello.version,
            &format!("too many connections to this build at once (at most {max})"),
        )
        .await;
        authority.refused(&build_id, format!("more than {max} connections at once refused"));
        return Err(Refusal::Builder(format!("the build holds {max} connections already")));
    };
    let target = session.builder().and_then(|b| b.vnc_port.map(|p| (b, p)));
    let Some((route, vnc_port)) = target else {
        handshake::refuse_user(user, hello.version, GENERIC_FAILURE).await;
        return Err(Refusal::Builder("the build has no builder VNC port".into()));
    };
    let target = SocketAddr::new(route.address, vnc_port);
    let mut builder = match shared.router.open(&build_id, route, vnc_port, options.dial_timeout).await {
        Ok(builder) => builder,
        Err(err) => {
            handshake::refuse_user(user, hello.version, GENERIC_FAILURE).await;
            authority.refused(&build_id, format!("builder VNC server {target} unreachable: {err}"));
            return Err(Refusal::Builder(err.to_string()));
        }
    };
    let (password, username) = match &builder_login {
        Some((password, username)) => (Some(password.expose().as_str()), username.as_deref()),
        None => (None, None),
    };
    let login = handshake::BuilderLogin { password, ard_username: username };
    if let Err(err) = handshake::login_builder(&mut builder, login).await {
        handshake::refuse_user(user, hello.version, GENERIC_FAILURE).await;
        authority
            .refused(&build_id, format!("builder VNC server {target} refused the gateway's login: {err}"));
        return Err(Refusal::Builder(err.to_string()));
    }
    let live = match authority.connected(&build_id, Protocol::Vnc).await {
        Ok(live) => live,
        Err(err) => {
            handshake::refuse_user(user, hello.version, AUTH_FAILURE).await;
            return Err(Refusal::Denied(err));
        }
    };
    handshake::welcome_user(user, &mut builder).await.map_err(Refusal::Handshake)?;
    Ok((live, builder, holding))
}
