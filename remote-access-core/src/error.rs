//! The one public error type.
//!
//! Each variant is named after what the caller can do about it. None of them
//! ever carries a secret: no private key, no password, not even a prefix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in `remote-access`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Remote access is offered only for builds started by hand; start the build manually.
    #[error("build {build_id} was not triggered manually; remote access is only offered for manual builds")]
    NotManuallyTriggered {
        /// The build that asked for access.
        build_id: String,
    },

    /// The build was started without "enable remote access"; restart it with the option ticked.
    #[error("remote access is not enabled for build {build_id}")]
    RemoteAccessDisabled {
        /// The build that asked for access.
        build_id: String,
    },

    /// A value given by the caller is malformed or out of range; fix the value.
    #[error("invalid {what}: {problem}")]
    InvalidInput {
        /// Which input was refused (for example "build id" or "policy.grace").
        what: &'static str,
        /// Why it was refused.
        problem: String,
    },

    /// This build already has a session; each build gets exactly one set of credentials.
    #[error("build {build_id} already has remote access credentials")]
    BuildExists {
        /// The build id that is already in use.
        build_id: String,
    },

    /// No session is known for this build: it was never issued, or its record has been purged.
    #[error("no remote access session for build {build_id}")]
    UnknownBuild {
        /// The build id that was looked up.
        build_id: String,
    },

    /// The build's session has ended; its credentials are revoked for good. Start a new build.
    #[error("remote access to build {build_id} has ended: {reason}")]
    SessionEnded {
        /// The build whose session ended.
        build_id: String,
        /// Why it ended.
        reason: EndReason,
    },

    /// Presented credentials were refused. The reason is for the platform's logs; the gateway
    /// shows remote users one uniform refusal so that nothing is learned from it.
    #[error("access denied: {reason}")]
    AccessDenied {
        /// Why the credentials were refused.
        reason: DenialReason,
    },

    /// The store could not be reached or answered with an error; retry, or check the store.
    #[error("credential store unavailable: {message}")]
    StoreUnavailable {
        /// What the store reported.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A limited resource is used up (for example every VNC port); free some or add more.
    #[error("out of capacity: {message}")]
    NoCapacity {
        /// What ran out.
        message: String,
    },

    /// A server's host key is not the pinned one: a misconfiguration or a man in the middle.
    /// Check the pinned key; never accept the new one blindly.
    #[error("the host key of {host} does not match the pinned key")]
    HostKeyMismatch {
        /// The server that presented the wrong key.
        host: String,
    },

    /// A network operation failed (binding, accepting, reaching a builder); check the address
    /// and the network.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),

    /// Too many writers changed the same session at once and this one gave up after many
    /// retries; retry the call (nothing was changed by it).
    #[error("contention: {message}")]
    Contention {
        /// What was being changed.
        message: String,
    },

    /// A task of the library failed unexpectedly (a panic): a bug in `remote-access`; please
    /// report it with the logs.
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },

    /// Generating or encoding key material failed; this points to a broken system RNG or a bug.
    #[error("key material could not be generated or encoded: {message}")]
    KeyMaterial {
        /// What failed (never the key itself).
        message: String,
    },
}

/// Why presented credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenialReason {
    /// No credential has this username.
    UnknownUser,
    /// The username exists but the key is not the one issued with it.
    WrongKey,
    /// The VNC password does not match.
    WrongPassword,
    /// The credential was revoked or expired; it is a tombstone and is refused forever.
    Revoked,
}

impl DenialReason {
    /// A stable code for logs and bindings: `unknown_user`, `wrong_key`, `wrong_password`,
    /// or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::WrongKey => "wrong_key",
            Self::WrongPassword => "wrong_password",
            Self::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for DenialReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownUser => "unknown user",
            Self::WrongKey => "key does not belong to this user",
            Self::WrongPassword => "wrong password",
            Self::Revoked => "credential revoked",
        })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable code per kind of error, for bindings and logs: `not_manually_triggered`,
    /// `remote_access_disabled`, `invalid_input`, `build_exists`, `unknown_build`,
    /// `session_ended`, `access_denied`, `store_unavailable`, `no_capacity`,
    /// `host_key_mismatch`, `io`, `contention`, `internal` or `key_material`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotManuallyTriggered { .. } => "not_manually_triggered",
            Self::RemoteAccessDisabled { .. } => "remote_access_disabled",
            Self::InvalidInput { .. } => "invalid_input",
            Self::BuildExists { .. } => "build_exists",
            Self::UnknownBuild { .. } => "unknown_build",
            Self::SessionEnded { .. } => "session_ended",
            Self::AccessDenied { .. } => "access_denied",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::NoCapacity { .. } => "no_capacity",
            Self::HostKeyMismatch { .. } => "host_key_mismatch",
            Self::Io(_) => "io",
            Self::Contention { .. } => "contention",
            Self::Internal { .. } => "internal",
            Self::KeyMaterial { .. } => "key_material",
        }
    }

    pub(crate) fn invalid(what: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidInput { what, problem: problem.into() }
    }

    pub(crate) fn denied(reason: DenialReason) -> Self {
        Self::AccessDenied { reason }
    }

    pub(crate) fn key_material(err: impl std::fmt::Display) -> Self {
        Self::KeyMaterial { message: err.to_string() }
    }

    /// The same error again, for a second caller waiting on the one call that failed. What
    /// cannot be copied is folded into the message: a store error's source, an I/O error's
    /// details beyond its kind.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::NotManuallyTriggered { build_id } => {
                Self::NotManuallyTriggered { build_id: build_id.clone() }
            }
            Self::RemoteAccessDisabled { build_id } => {
                Self::RemoteAccessDisabled { build_id: build_id.clone() }
            }
            Self::InvalidInput { what, problem } => Self::InvalidInput { what, problem: problem.clone() },
            Self::BuildExists { build_id } => Self::BuildExists { build_id: build_id.clone() },
            Self::UnknownBuild { build_id } => Self::UnknownBuild { build_id: build_id.clone() },
            Self::SessionEnded { build_id, reason } => {
                Self::SessionEnded { build_id: build_id.clone(), reason: reason.clone() }
            }
            Self::AccessDenied { reason } => Self::AccessDenied { reason: *reason },
            Self::StoreUnavailable { message, source } => Self::StoreUnavailable {
                message: match source {
                    Some(source) => format!("{message}: {source}"),
                    None => message.clone(),
                },
                source: None,
            },
            Self::NoCapacity { message } => Self::NoCapacity { message: message.clone() },
            Self::HostKeyMismatch { host } => Self::HostKeyMismatch { host: host.clone() },
            Self::Io(err) => Self::Io(std::io::Error::new(err.kind(), err.to_string())),
            Self::Contention { message } => Self::Contention { message: message.clone() },
            Self::Internal { message } => Self::Internal { message: message.clone() },
            Self::KeyMaterial { message } => Self::KeyMaterial { message: message.clone() },
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The grace period after the steps completed elapsed.
    GraceElapsed,
    /// The build reached its maximum duration.
    MaxDurationReached,
    /// Nobody connected within the configured time after the steps completed.
    NobodyConnected,
    /// The user's last connection closed after the steps completed.
    LoggedOut,
    /// The user's last connection was lost to the network after the steps completed, and
    /// nobody reconnected within the reconnect window.
    ConnectionLost,
    /// The platform revoked access, with its reason.
    Revoked(String),
    /// The build was cancelled.
    Cancelled,
    /// The platform finished the build itself.
    BuildFinished,
}

impl EndReason {
    /// A stable code: `grace_elapsed`, `max_duration_reached`, `nobody_connected`,
    /// `logged_out`, `connection_lost`, `revoked`, `cancelled` or `build_finished`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::GraceElapsed => "grace_elapsed",
            Self::MaxDurationReached => "max_duration_reached",
            Self::NobodyConnected => "nobody_connected",
            Self::LoggedOut => "logged_out",
            Self::ConnectionLost => "connection_lost",
            Self::Revoked(_) => "revoked",
            Self::Cancelled => "cancelled",
            Self::BuildFinished => "build_finished",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GraceElapsed => f.write_str("grace period after the build steps elapsed"),
            Self::MaxDurationReached => f.write_str("build reached its maximum duration"),
            Self::NobodyConnected => f.write_str("nobody connected after the build steps completed"),
            Self::LoggedOut => f.write_str("user logged out"),
            Self::ConnectionLost => f.write_str("user's connection lost and not resumed in time"),
            Self::Revoked(reason) => write!(f, "revoked: {reason}"),
            Self::Cancelled => f.write_str("build cancelled"),
            Self::BuildFinished => f.write_str("build finished"),
        }
    }
}
