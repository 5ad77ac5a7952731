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
//! steps completed ends it too. See `docs/time-rules.md`.
//!
//! # Layout
//!
//! - `error`: the one public [`Error`].
//! - `secret`: [`Secret`], zeroized on drop and never printed.
//! - `clock`: [`Clock`], [`SystemClock`], [`ManualClock`].
//! - `build`: [`BuildId`], [`BuildRequest`], [`Trigger`].
//! - `credential`: key pair, username and VNC password generation; [`Credentials`].
//! - `session`: [`Policy`] and the pure state machine [`Session`]; cut signals.
//! - `store`: the [`Store`] trait and the default [`MemoryStore`].
//! - `audit`: [`Event`]s and [`Subscription`]s.
//! - `authority`: [`Authority`], which ties them together.
//! - `gateway`: the SSH [`Gateway`] (russh; its types stay inside), [`HostKey`].
//! - `tunnel`: routes to builders (forward, or reverse over a builder agent), splicing bytes,
//!   and the builder agent ([`run_agent`]).
//! - `vnc`: the VNC proxy; [`vnc_password_file`], [`vnc_auth_response`].
//! - `script`: [`ConnectionInfo`], connection scripts and `ssh_config`.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// The README's examples compile (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The SSH guide's example compiles too.
#[cfg(doctest)]
#[doc = include_str!("../../docs/ssh.md")]
struct SshGuideDoctests;

mod audit;
mod authority;
mod build;
mod clock;
mod credential;
mod error;
mod gateway;
mod script;
mod secret;
mod session;
mod store;
mod throttle;
mod tunnel;
mod vnc;

pub use crate::audit::{Event, EventKind, Subscription};
pub use crate::authority::{Authority, AuthorityOptions, LiveConnection};
pub use crate::build::{BuildId, BuildRequest, Builder, Trigger};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::credential::Credentials;
pub use crate::error::{DenialReason, Error, Result};
pub use crate::gateway::{Gateway, GatewayOptions, GatewayStats, HostKey, RunningGateway};
pub use crate::script::{ConnectionInfo, ScriptOptions};
pub use crate::secret::Secret;
pub use crate::session::{
    Action, ConnectionId, CutSignal, EndReason, Input, Phase, Policy, Protocol, Session, Transition,
};
pub use crate::store::{
    Conflict, CredentialRecord, Insert, MemoryStore, Revocation, Store, StoreFuture, Versioned,
};
pub use crate::tunnel::{AgentExit, AgentOptions, run_agent};
pub use crate::vnc::{vnc_auth_response, vnc_password_file};
