//! The builder agent: runs on a builder the gateway cannot reach. It dials out to the gateway
//! with the build's agent credential, checks the gateway's pinned host key, registers the
//! build's reverse tunnel (`tcpip-forward`), and serves the channels the gateway opens over it
//! by connecting to the builder's own local ports, and only those. It reconnects with backoff
//! while the session lives and exits when the session is over.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::client::{self, ChannelOpenHandle, DisconnectReason, Msg, Session};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};

use super::{dial, splice};
use crate::error::{Error, Result};

/// How long a local service may leave a channel's data unread before the agent closes that
/// channel: the agent's connection stops reading every channel while one is full, so one
/// stuck service would otherwise stall every user of the build.
const LOCAL_STALL: Duration = Duration::from_secs(60);
use crate::secret::Secret;

/// What the gateway says when a session ends; the agent then stops instead of reconnecting.
pub(crate) const ACCESS_ENDED: &str = "remote access to this build has ended";
/// What the gateway says to an agent connection that a newer one replaced; that agent stops,
/// so two agents of one build do not take turns replacing each other.
pub(crate) const REPLACED: &str = "replaced by a newer agent connection for this build";

/// How a builder agent connects and what it may reach; every field but the first four has a
/// default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The gateway's address, `host:port`.
    pub gateway: String,
    /// The gateway's host key (`ssh-ed25519 AAAA...`), pinned: any other key is refused.
    pub gateway_host_key: String,
    /// The build's agent username (`Credentials::agent_username`).
    pub username: String,
    /// The build's agent private key (`Credentials::agent_private_key_openssh`).
    pub private_key: Secret<String>,
    /// The builder-local address the agent connects to (default 127.0.0.1).
    pub local_host: IpAddr,
    /// The only local ports the gateway may open (default 22; add the VNC port for VNC).
    pub ports: Vec<u16>,
    /// First wait before reconnecting (default 1 s); doubles up to `max_backoff` (30 s).
    pub min_backoff: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How long to wait for the gateway or a local port to accept a connection (default 10 s).
    pub dial_timeout: Duration,
}

impl AgentOptions {
    /// Options for the build's agent credential and the gateway's pinned key.
    pub fn new(
        gateway: impl Into<String>,
        gateway_host_key: impl Into<String>,
        username: impl Into<String>,
        private_key: Secret<String>,
    ) -> Self {
        Self {
            gateway: gateway.into(),
            gateway_host_key: gateway_host_key.into(),
            username: username.into(),
            private_key,
            local_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: vec![22],
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`run_agent`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentExit {
    /// The gateway ended the build's session (revoke, deadline, logout, cancel).
    SessionEnded,
    /// The gateway refused the agent's credential: the session is over or the credential is
    /// not this build's agent credential.
    Refused,
    /// The shutdown future resolved.
    Stopped,
    /// Another agent of the same build connected and replaced this one.
    Replaced,
}

/// Runs the agent until the session ends, the gateway refuses it, or `shutdown` resolves.
/// Network failures are retried with backoff; a gateway host key that is not the pinned one is
/// an error (never retried, never accepted).
pub async fn run_agent(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<AgentExit> {
    let pinned = PublicKey::from_openssh(options.gateway_host_key.trim())
        .map_err(|_| Error::invalid("gateway_host_key", "not an OpenSSH public key line"))?;
    let key = russh::keys::decode_secret_key(options.private_key.expose(), None)
        .map_err(|_| Error::invalid("private_key", "not an unencrypted OpenSSH private key"))?;
    let key = Arc::new(key);
    if options.ports.is_empty() || options.ports.contains(&0) {
        return Err(Error::invalid("ports", "list the builder's local ports (non-zero)"));
    }
    tokio::pin!(shutdown);
    let mut backoff = options.min_backoff;
    // Once the credential worked, a later refusal means the session is over.
    let mut registered_once = false;
    loop {
        let attempt = connect_once(&options, &pinned, key.clone());
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = &mut shutdown => return Ok(AgentExit::Stopped),
        };
        match outcome {
            Attempt::Served { ended: Some(exit) } => return Ok(exit),
            Attempt::Served { ended: None } => {
                registered_once = true;
                tracing::info!("agent connection lost; reconnecting");
                backoff = options.min_backoff;
            }
            Attempt::Refused if registered_once => return Ok(AgentExit::SessionEnded),
            Attempt::Refused => return Ok(AgentExit::Refused),
            Attempt::WrongHostKey => {
                return Err(Error::HostKeyMismatch { host: options.gateway.clone() });
            }
            Attempt::Failed(err) => {
                tracing::warn!(%err, ?backoff, "agent could not reach the gateway; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut shutdown => return Ok(AgentExit::Stopped),
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

enum Attempt {
    /// Registered and served until the connection ended; `ended` when the session is over.
    Served {
        ended: Option<AgentExit>,
    },
    Refused,
    WrongHostKey,
    Failed(String),
}

async fn connect_once(
    options: &AgentOptions,
    pinned: &PublicKey,
    key: Arc<russh::keys::PrivateKey>,
) -> Attempt {
    let config = Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        ..client::Config::default()
    });
    let host_key_ok = Arc::new(AtomicBool::new(true));
    let ended = Arc::new(std::sync::Mutex::new(None));
    let handler = AgentHandler {
        pinned: pinned.clone(),
        host_key_ok: host_key_ok.clone(),
        ended: ended.clone(),
        local_host: options.local_host,
        ports: Arc::new(options.ports.clone()),
        dial_timeout: options.dial_timeout,
    };
    let connecting = tokio::time::timeout(
        options.dial_timeout,
        client::connect(config, options.gateway.as_str(), handler),
    );
    let mut handle = match connecting.await {
        Ok(Ok(handle)) => handle,
        Ok(Err(_)) if !host_key_ok.load(Ordering::SeqCst) => return Attempt::WrongHostKey,
        Ok(Err(err)) => return Attempt::Failed(err.to_string()),
        Err(_) => return Attempt::Failed("timed out connecting to the gateway".into()),
    };
    let auth =
        handle.authenticate_publickey(options.username.as_str(), PrivateKeyWithHashAlg::new(key, None)).await;
    match auth {
        Ok(result) if result.success() => {}
        Ok(_) => return Attempt::Refused,
        Err(err) => return Attempt::Failed(err.to_string()),
    }
    if let Err(err) = handle.tcpip_forward("", 0).await {
        return Attempt::Failed(format!("the gateway did not accept the tunnel: {err}"));
    }
    tracing::info!(gateway = %options.gateway, "reverse tunnel registered");
    let _ = (&mut handle).await;
    let ended = *ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Attempt::Served { ended }
}

struct AgentHandler {
    pinned: PublicKey,
    host_key_ok: Arc<AtomicBool>,
    ended: Arc<std::sync::Mutex<Option<AgentExit>>>,
    local_host: IpAddr,
    ports: Arc<Vec<u16>>,
    dial_timeout: Duration,
}

impl client::Handler for AgentHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let ok = matches!(offered, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.pinned.key_data());
        self.host_key_ok.store(ok, Ordering::SeqCst);
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only the builder's own configured ports, whatever address the gateway names.
        let port = u16::try_from(connected_port).ok().filter(|p| self.ports.contains(p));
        let Some(port) = port else {
            tracing::warn!(connected_port, "the gateway asked for a port this agent does not serve");
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let target = SocketAddr::new(self.local_host, port);
        let dial_timeout = self.dial_timeout;
        tokio::spawn(async move {
            match dial(target, dial_timeout).await {
                Ok(tcp) => {
                    reply.accept().await;
                    if let Err(err) = splice(
                        channel.into_stream(),
                        tcp,
                        std::future::pending(),
                        (super::CHANNEL_BUFFER, super::CHANNEL_BUFFER),
                        LOCAL_STALL,
                    )
                    .await
                    {
                        tracing::debug!(%target, %err, "forwarded connection ended with an error");
                    }
                }
                Err(err) => {
                    tracing::warn!(%target, %err, "could not reach a local port");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        if let DisconnectReason::ReceivedDisconnect(info) = reason {
            let exit = if info.message.contains(ACCESS_ENDED) {
                Some(AgentExit::SessionEnded)
            } else if info.message.contains(REPLACED) {
                Some(AgentExit::Replaced)
            } else {
                None
            };
            *self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = exit;
        }
        Ok(())
    }
}
