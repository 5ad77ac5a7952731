//! # remote-access-core
//!
//! Temporary SSH and VNC access to the virtual machine running a CI build, through a public
//! gateway, with credentials that are generated per build, valid for that build only, and
//! revoked when it ends.
//!
//! A platform creates one [`Authority`] and a [`Gateway`] in front of its builders, calls
//! [`Authority::issue`] when a user starts a build by hand with remote access enabled, hands the
//! user a connection script from [`ConnectionInfo`], reports the build's
//! progress ([`Authority::steps_completed`], [`Authority::cancel`], ...) and reacts to the
//! [`Event`]s from [`Authority::subscribe`], above all [`EventKind::FinishBuild`].
//!
//! Access lasts until [`Policy::grace`] after the steps complete or until
//! [`Policy::max_build_duration`], whichever comes first; the user's last logout after the
//! steps completed ends it too, while a dropped network gives the user
//! [`Policy::reconnect_window`] to come back. See `docs/time-rules.md`.
//!
//! # Layout
//!
//! Modules depend downwards only, and data walks down the layers once per login (checked by
//! `tests/it/layers.rs`; see `docs/architecture.md`):
//!
//! ```text
//! gateway ─▶ authority ─▶ store, events, session, credential, tunnel, throttle ─▶ build, error, secret, clock
//! script ─▶ credential, session, build
//! ```
//!
//! - `error`: the one public [`Error`], and the reasons in it ([`DenialReason`], [`EndReason`]).
//! - `secret`: [`Secret`], zeroized on drop and never printed.
//! - `clock`: [`Clock`], [`SystemClock`], [`ManualClock`].
//! - `build`: [`BuildId`], [`Builder`], [`Trigger`].
//! - `session`: [`Policy`], the pure state machine [`Session`] and the [`Event`]s it yields;
//!   per-build cut signals.
//! - `credential`: key pair, username and VNC password generation ([`Credentials`]); the
//!   gateway's [`HostKey`] and VNC [`TlsIdentity`]; VNC's DES challenge-response ([`vnc_auth_response`]) and password
//!   file ([`vnc_password_file`]).
//! - `events`: delivering events to [`Subscription`]s.
//! - `store`: where sessions and credentials live: memory, or Redis ([`StoreOptions`]).
//! - `tunnel`: routes to builders (forward, or reverse over a builder agent), splicing bytes,
//!   and the builder agent ([`run_agent`]).
//! - `throttle`: failure counting with backoff, for logins.
//! - `authority`: [`Authority`], which ties them together, split by concern.
//! - `gateway`: the listener layer, [`Gateway`]: the SSH server (russh; its types stay inside)
//!   and the VNC proxy side by side, sharing admission, accepting, stopping and cutting.
//! - `script`: [`ConnectionInfo`], connection scripts and `ssh_config`.
//! - [`unstable`]: the store interface, for tests and custom stores.

// Lints: `[workspace.lints]` in the root Cargo.toml; unit tests may unwrap.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// The README's examples compile (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The SSH guide's example compiles too.
#[cfg(doctest)]
#[doc = include_str!("../../docs/ssh.md")]
struct SshGuideDoctests;

/// And the scaling guide's.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../docs/scaling.md")]
struct ScalingGuideDoctests;

mod authority;
mod build;
mod clock;
mod credential;
mod error;
mod events;
mod gateway;
mod metrics;
mod script;
mod secret;
mod session;
mod store;
mod throttle;
mod tunnel;

pub use crate::authority::{
    Authority, AuthorityOptions, BuildRequest, FleetEvent, FleetEvents, LiveConnection, StoreOptions,
};
pub use crate::build::{BuildId, Builder, Trigger};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::credential::{Credentials, HostKey, SshCa, TlsIdentity, vnc_auth_response, vnc_password_file};
pub use crate::error::{DenialReason, EndReason, Error, Result};
pub use crate::events::Subscription;
pub use crate::gateway::{Gateway, GatewayOptions, GatewayStats, RunningGateway};
pub use crate::script::BuildEnvironment;
pub use crate::script::{ConnectionInfo, ScriptOptions};
pub use crate::secret::Secret;
pub use crate::session::{
    Action, ConnectionId, CutSignal, Event, EventKind, Input, Phase, Policy, Protocol, Session, Transition,
};
#[cfg(feature = "redis")]
pub use crate::store::RedisOptions;
pub use crate::tunnel::{AgentExit, AgentOptions, run_agent};

/// The store behind an authority, for tests and for platforms that must plug in a store of
/// their own. **Unstable**: these types follow the fleet's internals (authority instance ids,
/// heartbeats, claims on silent gateways) and change without a major version. Platforms choose
/// a store with [`AuthorityOptions::store`] instead.
pub mod unstable {
    use std::sync::Arc;

    #[cfg(feature = "redis")]
    pub use crate::store::RedisStore;
    pub use crate::store::{
        Conflict, CredentialRecord, FAILURE_MEMORY, Failures, Insert, MemoryStore, Notice, Revocation, Store,
        StoreFuture, Versioned,
    };
    use crate::{Authority, AuthorityOptions, Clock, Result};

    /// An authority on a store and clock of the caller's (`options.store` is not used): a
    /// store shared with a test that inspects it, or a store of the platform's own. A store
    /// shared by several authorities must implement every method as its documentation says,
    /// notices and heartbeats included, or revocations will not reach every gateway.
    pub fn authority(
        options: AuthorityOptions,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Authority> {
        Authority::with_parts(options, store, clock)
    }
}

/// Hooks for the fuzz targets in `fuzz/` and nothing else. The RFB handshakes and the SSH
/// gateway's per-connection entry are private, yet they are what a hostile peer talks to first;
/// these thin wrappers let the fuzzers drive them over in-memory streams. Compiled only under
/// `--cfg fuzzing` (cargo-fuzz sets it), so they are no part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use std::net::SocketAddr;

    use tokio::io::{AsyncRead, AsyncWrite};

    use crate::Gateway;
    use crate::gateway::{self as vnc, Version};

    /// The metrics endpoint's answer to `request` (a whole connection's bytes), as the
    /// operator's HTTP client would read it.
    pub async fn metrics_request(gateway: &Gateway, request: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let answering = crate::gateway::answer_http(server, gateway);
        let asking = async {
            let _ = client.write_all(request).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let (_, answer) = tokio::join!(answering, asking);
        answer
    }

    /// What the user's side of the RFB handshake yielded.
    pub struct UserHello {
        /// The RFB 3.x handshake the gateway speaks with this user: 3, 7 or 8.
        pub minor: u8,
        /// The challenge the gateway sent.
        pub challenge: [u8; 16],
        /// The user's response.
        pub response: [u8; 16],
        version: Version,
    }

    /// The user-facing RFB handshake up to the VNC Authentication response, with only plain
    /// VNC Authentication on offer.
    pub async fn greet_user<S: AsyncRead + AsyncWrite + Unpin>(user: &mut S) -> Result<UserHello, String> {
        let offer = vnc::Offer { plain: true, tls: false };
        match vnc::greet_user(user, offer).await.map_err(|err| err.to_string())? {
            vnc::Greeting::Plain(hello) => Ok(hello.into()),
            vnc::Greeting::StartTls(_) => Err("TLS started, though it was not offered".into()),
        }
    }

    /// The same with VeNCrypt `X509Vnc` on offer (and plain VNC Authentication if `plain`):
    /// `Ok(None)` when the user agreed to VeNCrypt and TLS would start next.
    pub async fn greet_user_vencrypt<S: AsyncRead + AsyncWrite + Unpin>(
        user: &mut S,
        plain: bool,
    ) -> Result<Option<UserHello>, String> {
        let offer = vnc::Offer { plain, tls: true };
        match vnc::greet_user(user, offer).await.map_err(|err| err.to_string())? {
            vnc::Greeting::Plain(hello) => Ok(Some(hello.into())),
            vnc::Greeting::StartTls(_) => Ok(None),
        }
    }

    impl From<vnc::UserHello> for UserHello {
        fn from(hello: vnc::UserHello) -> Self {
            let minor = match hello.version {
                Version::V3_3 => 3,
                Version::V3_7 => 7,
                Version::V3_8 => 8,
            };
            Self { minor, challenge: hello.challenge, response: hello.response, version: hello.version }
        }
    }

    /// The VNC WebSocket upgrade on `stream` (the browser's side), then every RFB byte the
    /// browser sends through it, read to the end, with a message written back for each read.
    /// The error is the text the gateway would log.
    pub async fn websocket_from_browser<S>(
        stream: S,
        origins: &[String],
        refuse_unencrypted: bool,
    ) -> Result<Vec<u8>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rules = vnc::Rules { origins, refuse_unencrypted };
        let mut rfb = vnc::accept_websocket(stream, rules).await.map_err(|err| err.to_string())?;
        let mut carried = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = rfb.read(&mut buf).await.map_err(|err| err.to_string())?;
            if n == 0 {
                let _ = rfb.shutdown().await;
                return Ok(carried);
            }
            carried.extend_from_slice(&buf[..n]);
            rfb.write_all(&buf[..n.min(16)]).await.map_err(|err| err.to_string())?;
            rfb.flush().await.map_err(|err| err.to_string())?;
        }
    }

    /// Tells the user authentication failed.
    pub async fn refuse_user<S: AsyncWrite + Unpin>(user: &mut S, hello: &UserHello, reason: &str) {
        vnc::refuse_user(user, hello.version, reason).await;
    }

    /// Tells the user authentication succeeded and forwards ClientInit, shared, to `builder`.
    pub async fn welcome_user<U, B>(user: &mut U, builder: &mut B) -> Result<(), String>
    where
        U: AsyncRead + AsyncWrite + Unpin,
        B: AsyncWrite + Unpin,
    {
        vnc::welcome_user(user, builder).await.map_err(|err| err.to_string())
    }

    /// The builder-facing RFB handshake (security type choice, VNC or Apple ARD login,
    /// SecurityResult). The error is the text the gateway would log.
    pub async fn login_builder<S: AsyncRead + AsyncWrite + Unpin>(
        builder: &mut S,
        password: Option<&str>,
        ard_username: Option<&str>,
    ) -> Result<(), String> {
        let login = vnc::BuilderLogin { password, ard_username };
        vnc::login_builder(builder, login).await.map_err(|err| err.to_string())
    }

    /// Reads a credential record and its revocation as Redis hands them back (the Redis
    /// store's own decoder); on success also returns the record encoded as the store writes
    /// it, and the revocation encoded likewise.
    #[cfg(feature = "redis")]
    pub fn redis_credential(
        build_id: &crate::BuildId,
        record: &[u8],
        revoked: Option<&[u8]>,
    ) -> Result<(crate::store::CredentialRecord, Vec<u8>, Option<String>), String> {
        let decoded =
            crate::store::redis::decode_credential(build_id, record, revoked).map_err(|e| e.to_string())?;
        let encoded = crate::store::redis::encode_credential(&decoded).map_err(|e| e.to_string())?;
        let revocation = decoded.revoked.as_ref().map(crate::store::redis::encode_revocation).transpose();
        Ok((decoded, encoded.to_vec(), revocation.map_err(|e| e.to_string())?))
    }

    /// Serves one SSH connection on `stream` as the gateway's accept loop would.
    pub async fn serve_ssh<S>(gateway: &Gateway, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::gateway::serve_stream(gateway, stream, peer).await;
    }
}
