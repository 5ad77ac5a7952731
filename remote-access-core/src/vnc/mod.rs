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
mod auth;
mod handshake;

pub(crate) use auth::check as check_response;
pub use auth::{vnc_auth_response, vnc_password_file};
/// The handshakes, for the fuzz targets only (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) use handshake::{BuilderLogin, Version, greet_user, login_builder, refuse_user, welcome_user};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::authority::{Authority, LiveConnection};
use crate::gateway::{Kind, stopped};
use crate::session::Protocol;
use crate::tunnel;
use handshake::HandshakeError;

/// What the user is told when anything but their password went wrong: nothing about the
/// builder leaks.
const GENERIC_FAILURE: &str = "VM unavailable";
/// What the user is told when the password is wrong, revoked or expired.
const AUTH_FAILURE: &str = "Authentication failed";

/// How the VNC proxy behaves; set through the gateway options.
#[derive(Clone)]
pub(crate) struct ProxySettings {
    pub(crate) pre_auth_timeout: Duration,
    pub(crate) dial_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) router: Arc<tunnel::Router>,
    /// The gateway's limits on connections that have not authenticated, and its counts.
    pub(crate) admission: Arc<crate::gateway::Admission>,
}

/// Serves one gateway VNC port until `stop` turns true, then closes its connections (not as
/// logouts) and returns.
pub(crate) async fn serve_port(
    authority: Authority,
    settings: Arc<ProxySettings>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve(authority.clone(), settings.clone(), tcp, peer, port, stop.clone()));
                }
                Err(err) => {
                    tracing::warn!(%err, port, "accepting a VNC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
}

/// One user VNC connection: handshake under one deadline, then splice until cut.
async fn serve(
    authority: Authority,
    settings: Arc<ProxySettings>,
    mut user: TcpStream,
    peer: SocketAddr,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let admission = &settings.admission;
    let _counted = admission.count(Kind::Vnc);
    let waiting = match admission.admit(peer.ip()) {
        Ok(waiting) => waiting,
        Err(refusal) => {
            tracing::warn!(%peer, port, %refusal, "closing a VNC connection at once");
            return;
        }
    };
    let admitted =
        tokio::time::timeout(settings.pre_auth_timeout, admit(&authority, &settings, &mut user, port)).await;
    drop(waiting);
    let (live, builder) = match admitted {
        Ok(Ok(admitted)) => {
            admission.succeeded(peer.ip());
            admitted
        }
        Ok(Err(err)) => {
            tracing::info!(%peer, port, %err, "VNC connection refused");
            // A refused login counts; a handshake that just ends (a port scan, a load
            // balancer's health check) or a builder-side failure does not.
            if matches!(err, Refusal::Denied(_) | Refusal::NoSession) {
                admission.failed(peer.ip());
            }
            return;
        }
        Err(_) => {
            tracing::info!(%peer, port, "VNC handshake not finished before the pre-auth deadline; cut");
            admission.failed(peer.ip());
            return;
        }
    };
    tracing::info!(%peer, port, build_id = %live.build_id(), "VNC connection admitted");
    let mut cut = live.cut_signal();
    // Leaving the select drops the splice and with it both sockets: that is the cut.
    let gateway_stopping = tokio::select! {
        spliced = tunnel::splice(user, builder, std::future::pending()) => {
            if let Err(err) = spliced {
                tracing::debug!(%peer, %err, "VNC splice ended with an error");
            }
            false
        }
        () = cut.cut() => false,
        () = stopped(&mut stop) => true,
    };
    let mut live = live;
    let outcome = if gateway_stopping {
        live.detach_on_drop();
        authority.detached(live).await
    } else {
        authority.disconnected(live).await
    };
    if let Err(err) = outcome {
        tracing::warn!(%peer, %err, "could not record the end of a VNC connection");
    }
}

/// Why a VNC connection was not admitted (for our logs).
#[derive(Debug)]
enum Refusal {
    Handshake(HandshakeError),
    NoSession,
    Denied(crate::Error),
    Builder(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handshake(err) => write!(f, "user handshake: {err}"),
            Self::NoSession => f.write_str("no live session on this port"),
            Self::Denied(err) => write!(f, "{err}"),
            Self::Builder(err) => write!(f, "builder: {err}"),
        }
    }
}

/// The whole pre-auth phase: the user's handshake, the password, the builder's login, the
/// connection recorded, ClientInit forwarded as shared.
async fn admit(
    authority: &Authority,
    settings: &ProxySettings,
    user: &mut TcpStream,
    port: u16,
) -> Result<(LiveConnection, Box<dyn tunnel::BuilderStream>), Refusal> {
    let hello = handshake::greet_user(user).await.map_err(Refusal::Handshake)?;
    // A port without a live session answers exactly like a wrong password.
    let Some(session) = authority.vnc_route(port).await.map_err(Refusal::Denied)? else {
        handshake::refuse_user(user, hello.version, AUTH_FAILURE).await;
        return Err(Refusal::NoSession);
    };
    let build_id = session.build_id().clone();
    let builder_login =
        match authority.verify_vnc_response(&build_id, &hello.challenge, &hello.response).await {
            Ok(password) => password,
            Err(err) => {
                handshake::refuse_user(user, hello.version, AUTH_FAILURE).await;
                return Err(Refusal::Denied(err));
            }
        };
    let target = session.builder().and_then(|b| b.vnc_port.map(|p| (b, p)));
    let Some((route, vnc_port)) = target else {
        handshake::refuse_user(user, hello.version, GENERIC_FAILURE).await;
        return Err(Refusal::Builder("the build has no builder VNC port".into()));
    };
    let target = SocketAddr::new(route.address, vnc_port);
    let mut builder = match settings.router.open(&build_id, route, vnc_port, settings.dial_timeout).await {
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
    Ok((live, builder))
}
