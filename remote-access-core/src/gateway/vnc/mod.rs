//! The VNC proxy: one gateway port per live session with VNC. It terminates the user's RFB
//! handshake with the per-build password, logs in to the builder's own VNC server with the
//! builder's password (which the user never sees), then splices bytes until the user leaves or
//! access ends.
//!
//! Why a port per session rather than one shared port that finds the session by password: VNC
//! Authentication is a challenge-response, so a shared port would have to try every live
//! session's password against each response, and one guess would be tested against all
//! sessions at once. With a port per session, a guess is tested against one session only. The
//! price is a port range to open on the gateway.

mod ard;
mod handshake;

/// The handshakes, for the fuzz targets only (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) use handshake::{BuilderLogin, Version, greet_user, login_builder, refuse_user, welcome_user};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::listen::Stop;
use super::{CutFlag, CutStream, Held, Holding, Kind, Pool, Shared, Target, Waiting};
use crate::authority::LiveConnection;
use crate::error::Error;
use crate::session::Protocol;
use crate::tunnel;
use handshake::HandshakeError;

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
            shared
                .log_limit
                .log(|| tracing::info!(%peer, port, %refusal, "closing a VNC connection at once"));
            return;
        }
    };
    let flag = CutFlag::new();
    let mut user = CutStream::new(user, flag.clone());
    let silent = async {
        tokio::time::sleep(options.silent_timeout).await;
        if flag.bytes_read() < PROTOCOL_VERSION_LEN {
            return;
        }
        std::future::pending().await
    };
    let admitting =
        tokio::time::timeout(options.pre_auth_timeout, admit(&shared, &waiting, &mut user, peer, port));
    let admitted = tokio::select! {
        admitted = admitting => admitted,
        () = silent => {
            shared.log_limit.log(|| tracing::info!(%peer, port, "no RFB protocol version within the silence deadline; cut"));
            admission.failed(peer.ip(), None);
            return;
        }
        () = waiting.evicted() => {
            tracing::debug!(%peer, port, "evicted before authenticating, for a newcomer");
            return;
        }
    };
    drop(waiting);
    let (live, builder, _holding) = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(err)) => {
            // A refused password was counted when it was decided; a handshake that just ends
            // (a port scan, a load balancer's health check) or a builder-side failure is not.
            shared.log_limit.log(|| tracing::info!(%peer, port, %err, "VNC connection refused"));
            return;
        }
        Err(_) => {
            shared.log_limit.log(|| tracing::info!(%peer, port, "VNC handshake not finished before the pre-auth deadline; cut"));
            admission.failed(peer.ip(), None);
            return;
        }
    };
    tracing::info!(%peer, port, build_id = %live.build_id(), "VNC connection admitted");
    let mut cut = live.cut_signal();
    // Leaving the select drops the splice and with it both sockets: that is the cut.
    let gateway_stopping = tokio::select! {
        spliced = tunnel::splice(user, builder, std::future::pending(), tunnel::SOCKET_BUFFER, options.builder_stall_timeout) => {
            if let Err(err) = spliced {
                tracing::debug!(%peer, %err, "VNC splice ended with an error");
            }
            false
        }
        () = cut.cut() => false,
        () = stop.stopped() => true,
    };
    let outcome = if gateway_stopping {
        live.detach_on_drop();
        live.detach().await
    } else {
        live.disconnect().await
    };
    if let Err(err) = outcome {
        tracing::warn!(%peer, %err, "could not record the end of a VNC connection");
    }
}

/// One VNC connection inside an SSH user's `direct-tcpip` channel to the builder's VNC
/// address: the same proxy as on a gateway port, end to end encrypted from the user's machine
/// (`ssh -L`). The user still logs in with the build's VNC password, and the gateway with the
/// builder's; the SSH login already proved the build, so there is no port to route by and no
/// waiting pool. It ends when the user leaves, access ends, or the SSH connection closes
/// (`closed` changes; it is true when the gateway is stopping, which is no logout).
pub(crate) async fn serve_channel<S>(
    shared: Arc<Shared>,
    mut user: S,
    peer: SocketAddr,
    build_id: crate::build::BuildId,
    mut closed: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (authority, options) = (&shared.authority, &shared.options);
    let admitting = async {
        let hello = handshake::greet_user(&mut user).await.map_err(Refusal::Handshake)?;
        let answer_at = tokio::time::Instant::now() + options.auth_rejection_delay;
        let decided = if shared.admission.backing_off(peer.ip()) {
            Err(Refusal::BackingOff)
        } else {
            match authority.verify_vnc_response(&build_id, &hello.challenge, &hello.response).await {
                Ok(login) => match authority.session(&build_id).await {
                    Ok(session) => Ok((session, login)),
                    Err(err) => Err(Refusal::Unavailable(err)),
                },
                Err(
                    err @ (Error::AccessDenied { .. }
                    | Error::SessionEnded { .. }
                    | Error::UnknownBuild { .. }),
                ) => Err(Refusal::Denied(err)),
                Err(err) => Err(Refusal::Unavailable(err)),
            }
        };
        let (session, builder_login) = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                if matches!(refusal, Refusal::Denied(_)) {
                    shared.admission.failed(peer.ip(), None);
                }
                let answer =
                    if matches!(refusal, Refusal::Unavailable(_)) { GENERIC_FAILURE } else { AUTH_FAILURE };
                tokio::time::sleep_until(answer_at).await;
                handshake::refuse_user(&mut user, hello.version, answer).await;
                return Err(refusal);
            }
        };
        proxy_to_builder(&shared, &mut user, &hello, session, builder_login).await
    };
    let (live, builder, _holding) = match tokio::time::timeout(options.pre_auth_timeout, admitting).await {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(err)) => {
            shared.log_limit.log(|| tracing::info!(%peer, %build_id, %err, "VNC in an SSH tunnel refused"));
            return;
        }
        Err(_) => return,
    };
    tracing::info!(%peer, %build_id, "VNC connection admitted through an SSH tunnel");
    let mut cut = live.cut_signal();
    tokio::select! {
        spliced = tunnel::splice(user, builder, std::future::pending(), tunnel::CHANNEL_BUFFER, options.builder_stall_timeout) => {
            if let Err(err) = spliced {
                tracing::debug!(%peer, %err, "VNC splice in an SSH tunnel ended with an error");
            }
        }
        () = cut.cut() => {}
        _ = closed.changed() => {}
    }
    let outcome = if *closed.borrow() { live.detach().await } else { live.disconnect().await };
    if let Err(err) = outcome {
        tracing::warn!(%peer, %err, "could not record the end of a VNC connection");
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

/// The whole pre-auth phase: the user's handshake, the password, the builder's login, the
/// connection recorded, ClientInit forwarded as shared.
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    waiting: &Waiting,
    user: &mut S,
    peer: SocketAddr,
    port: u16,
) -> Result<(LiveConnection, Box<dyn tunnel::BuilderStream>, Holding), Refusal> {
    let (authority, options) = (&shared.authority, &shared.options);
    let hello = handshake::greet_user(user).await.map_err(Refusal::Handshake)?;
    // Every refusal of a password is sent this long after the response arrived, and a port
    // without a live session answers exactly like a wrong password: neither the time nor the
    // answer tells a scanner which ports are live.
    let answer_at = tokio::time::Instant::now() + options.auth_rejection_delay;
    let target = Target::VncPort(port);
    // A network backed off since this connection arrived gets no guess checked.
    let decided = if shared.admission.backing_off(peer.ip()) {
        Err(Refusal::BackingOff)
    } else {
        match authority.vnc_route(port).await {
            Ok(Some(session)) => {
                match authority
                    .verify_vnc_response(session.build_id(), &hello.challenge, &hello.response)
                    .await
                {
                    Ok(login) => Ok((session, login)),
                    Err(
                        err @ (Error::AccessDenied { .. }
                        | Error::SessionEnded { .. }
                        | Error::UnknownBuild { .. }),
                    ) => Err(Refusal::Denied(err)),
                    Err(err) => Err(Refusal::Unavailable(err)),
                }
            }
            Ok(None) => Err(Refusal::NoSession),
            Err(err) => Err(Refusal::Unavailable(err)),
        }
    };
    let (session, builder_login) = match decided {
        Ok(admitted) => {
            // Authenticated: no longer a connection a newcomer may evict.
            waiting.leave();
            shared.admission.succeeded(peer.ip(), target);
            admitted
        }
        Err(refusal) => {
            // Counted now, before the delay: a guess whose connection is evicted or closed
            // while it waits for its answer counts all the same.
            if !matches!(refusal, Refusal::Unavailable(_)) {
                shared.admission.failed(peer.ip(), Some(target));
            }
            let answer =
                if matches!(refusal, Refusal::Unavailable(_)) { GENERIC_FAILURE } else { AUTH_FAILURE };
            tokio::time::sleep_until(answer_at).await;
            handshake::refuse_user(user, hello.version, answer).await;
            return Err(refusal);
        }
    };
    proxy_to_builder(shared, user, &hello, session, builder_login).await
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
