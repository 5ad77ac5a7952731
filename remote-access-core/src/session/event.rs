//! What happened to a build's remote access: the [`Event`]s a session's transitions yield and
//! the authority publishes (see `crate::events` for their delivery).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ConnectionId, Protocol};
use crate::build::BuildId;

/// Something that happened to a build's remote access. As JSON (the fleet's event log):
/// `{"build_id": ..., "at": RFC 3339, "kind": "connected", "connection": ..., "protocol": "ssh",
/// "reason": ...}`, the kind's fields beside the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The build.
    pub build_id: BuildId,
    /// When it happened (by the authority's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// Why, in words for people and logs. Never contains a secret.
    pub reason: String,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// Credentials were issued for the build.
    Issued,
    /// The build's steps completed; the grace period started.
    StepsCompleted,
    /// A user connection opened.
    Connected {
        /// Its id.
        connection: ConnectionId,
        /// SSH or VNC.
        protocol: Protocol,
    },
    /// A user connection closed.
    Disconnected {
        /// Its id.
        connection: ConnectionId,
        /// SSH or VNC.
        protocol: Protocol,
    },
    /// A user connection was lost to the network (reset, keepalive timeout, a killed client)
    /// rather than closed by its user. If it was the last after the steps completed, the
    /// session waits [`crate::Policy::reconnect_window`] for the user to come back
    /// ([`crate::Session::reconnect_by`]).
    Dropped {
        /// Its id.
        connection: ConnectionId,
        /// SSH or VNC.
        protocol: Protocol,
    },
    /// The deadline moved (the steps completed): access now ends at `deadline` at the latest.
    DeadlineChanged {
        /// The new deadline.
        #[serde(with = "time::serde::rfc3339")]
        deadline: OffsetDateTime,
    },
    /// Access was revoked by the platform, by cancellation, or because the build finished.
    Revoked,
    /// Access expired: a deadline passed.
    Expired,
    /// The user logged out after the steps completed.
    LoggedOut,
    /// The user's last connection was lost after the steps completed and nobody reconnected
    /// within the reconnect window.
    ConnectionLost,
    /// The platform must finish the build now. Emitted at most once per build.
    FinishBuild,
    /// A builder agent registered the build's reverse tunnel (a newer one replaces the older).
    TunnelRegistered,
    /// The gateway refused something a logged-in user asked for (another host or port, a
    /// shell on the gateway, forwarding, agent, X11); the reason says what.
    Refused,
    /// A build's key or VNC password is being guessed: failed logins in a row reached the
    /// limit, and logins for the build are throttled with backoff. Consider revoking it.
    Guessing,
    /// The gateway lost contact with a shared store for longer than
    /// [`crate::AuthorityOptions::max_store_outage`] and cut the build's live connections
    /// (fail closed). The session is not ended: users may reconnect once the store answers.
    StoreUnreachable,
    /// This subscriber fell behind: its queue was full
    /// ([`crate::AuthorityOptions::event_queue`]), so `dropped` events published meanwhile
    /// were not queued for it (other subscribers got them). It stands where they would have
    /// been; the events after it follow in order. Its `build_id` and `at` are those of the
    /// first event missed and its reason says what happened, but the missed ones may concern
    /// any build: re-read the sessions you care about ([`crate::Authority::session`]).
    Lagged {
        /// How many events were missed here.
        dropped: u64,
    },
}

impl EventKind {
    /// A stable lowercase name: `"issued"`, `"connected"`, `"finish_build"`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::StepsCompleted => "steps_completed",
            Self::Connected { .. } => "connected",
            Self::Disconnected { .. } => "disconnected",
            Self::Dropped { .. } => "dropped",
            Self::DeadlineChanged { .. } => "deadline_changed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::LoggedOut => "logged_out",
            Self::ConnectionLost => "connection_lost",
            Self::FinishBuild => "finish_build",
            Self::Refused => "refused",
            Self::TunnelRegistered => "tunnel_registered",
            Self::Guessing => "guessing",
            Self::StoreUnreachable => "store_unreachable",
            Self::Lagged { .. } => "lagged",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 cannot express offsets with seconds; events are in UTC anyway.
        let at = self.at.to_offset(time::UtcOffset::UTC);
        let at = at.format(&Rfc3339).map_err(|_| fmt::Error)?;
        let (kind, build, reason) = (self.kind.as_str(), &self.build_id, &self.reason);
        write!(f, "{kind} build={build} at={at} reason={reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_json_under_its_name() {
        let at = time::macros::datetime!(2026-11-30 06:00:00 UTC);
        let (connection, protocol) = (ConnectionId::new(1, 7), Protocol::Vnc);
        let kinds = [
            EventKind::Issued,
            EventKind::StepsCompleted,
            EventKind::Connected { connection, protocol },
            EventKind::Disconnected { connection, protocol },
            EventKind::Dropped { connection, protocol },
            EventKind::DeadlineChanged { deadline: at },
            EventKind::Revoked,
            EventKind::Expired,
            EventKind::LoggedOut,
            EventKind::ConnectionLost,
            EventKind::FinishBuild,
            EventKind::Refused,
            EventKind::TunnelRegistered,
            EventKind::Guessing,
            EventKind::StoreUnreachable,
            EventKind::Lagged { dropped: 3 },
        ];
        for kind in kinds {
            let event = Event { build_id: BuildId::new("b-1").unwrap(), at, kind, reason: "why".into() };
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["kind"], kind.as_str(), "{json}");
            assert_eq!(json["at"], "2026-11-30T06:00:00Z");
            let back: Event = serde_json::from_value(json).unwrap();
            assert_eq!(back, event);
        }
    }
}
