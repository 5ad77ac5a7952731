//! The session state machine: one per build, no I/O, time passed in by the caller.
//!
//! The machine decides; the caller acts. Every input returns a [`Transition`] listing the
//! [`Action`]s to carry out and the [`Event`]s to publish. Because the clock is checked before
//! every input, an input that arrives after the deadline first ends the session and is then
//! handled as an input to an ended session (a late `Connected` is refused).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Policy;
use super::policy::human;
use super::{Event, EventKind};
use crate::build::{BuildId, Builder};
use crate::clock::{later, rfc3339};
use crate::error::{EndReason, Error, Result};

/// How far ahead of our clock a platform's `started_at` may be before it is refused.
const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The build's steps are running; the user may connect, leave and come back.
    StepsRunning,
    /// The steps have completed; the grace period runs and the last logout ends the session.
    StepsCompleted,
    /// Access is over for good.
    Ended,
}

impl Phase {
    /// `steps_running`, `steps_completed` or `ended`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StepsRunning => "steps_running",
            Self::StepsCompleted => "steps_completed",
            Self::Ended => "ended",
        }
    }
}

impl EndReason {
    /// The event that announces this end.
    fn event_kind(&self) -> EventKind {
        match self {
            Self::GraceElapsed | Self::MaxDurationReached | Self::NobodyConnected => EventKind::Expired,
            Self::LoggedOut => EventKind::LoggedOut,
            Self::ConnectionLost => EventKind::ConnectionLost,
            Self::Revoked(_) | Self::Cancelled | Self::BuildFinished => EventKind::Revoked,
        }
    }
}

/// Which kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protocol {
    /// An SSH connection (ProxyJump through the gateway).
    Ssh,
    /// A VNC connection through the gateway's proxy.
    Vnc,
}

impl Protocol {
    /// `"ssh"` or `"vnc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Vnc => "vnc",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    /// `ssh` or `vnc`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ssh" => Ok(Self::Ssh),
            "vnc" => Ok(Self::Vnc),
            _ => Err(Error::invalid("protocol", "expected ssh or vnc")),
        }
    }
}

/// Identifies one live connection within a session: which authority (gateway process)
/// admitted it, so that others can tell a dead gateway's connections apart in a shared store,
/// and a random serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The connection `serial` admitted by the authority `instance`.
    pub fn new(instance: u32, serial: u32) -> Self {
        Self(u64::from(instance) << 32 | u64::from(serial))
    }

    /// The authority (gateway process) that admitted it.
    pub fn instance(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Its serial within that authority.
    pub fn serial(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What happened to a build that the session must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Only the clock moved.
    Tick,
    /// All build steps have completed: the grace period starts.
    StepsCompleted,
    /// The platform finished the build itself.
    BuildFinished,
    /// The build was cancelled.
    Cancelled,
    /// The platform revokes access.
    Revoke {
        /// Why, in words for the audit trail.
        reason: String,
    },
    /// A user connection opened.
    Connected {
        /// Its id, unique within the session.
        connection: ConnectionId,
        /// SSH or VNC.
        protocol: Protocol,
    },
    /// A user connection was closed by its user: all its channels closed cleanly, an SSH
    /// `DISCONNECT`, a clean TCP close. After the steps completed, the last one is a logout.
    Disconnected {
        /// The id given when it opened.
        connection: ConnectionId,
    },
    /// A user connection was lost to the network: reset, keepalive timeout, a client killed
    /// with its channels open. Not a logout: after the steps completed, the last one opens
    /// the reconnect window ([`Policy::reconnect_window`]).
    Lost {
        /// The id given when it opened.
        connection: ConnectionId,
    },
    /// A connection was closed by its gateway shutting down. Not a logout: the user did not
    /// leave, so the session goes on and the user may reconnect to another gateway.
    Detached {
        /// The id given when it opened.
        connection: ConnectionId,
    },
}

/// What the caller must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Revoke the build's credentials (they become tombstones).
    RevokeCredentials,
    /// Cut every live connection of the build.
    CutConnections,
    /// Tell the platform to finish the build. Emitted at most once per session.
    FinishBuild,
}

/// The result of one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// What the caller must do, in order.
    pub actions: Vec<Action>,
    /// What to publish, in order.
    pub events: Vec<Event>,
    /// Set when the input was a connection that the session refused because it has ended,
    /// with the reason it ended.
    pub refused: Option<EndReason>,
}

impl Transition {
    /// Whether the session changed (and so must be saved).
    pub fn changed(&self) -> bool {
        !self.events.is_empty()
    }

    /// Adds what a later input's transition decided: its events after these, its actions
    /// not already here, and its refusal if there was none.
    pub(crate) fn absorb(&mut self, later: Transition) {
        self.events.extend(later.events);
        for action in later.actions {
            if !self.actions.contains(&action) {
                self.actions.push(action);
            }
        }
        self.refused = self.refused.take().or(later.refused);
    }
}

/// Why and when a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ended {
    reason: EndReason,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

/// The remote access session of one build.
///
/// ```
/// use remote_access_core::{BuildId, Input, Phase, Policy, Session, Action};
/// use std::time::Duration;
/// use time::macros::datetime;
///
/// let start = datetime!(2026-01-01 12:00 UTC);
/// let mut session = Session::new(BuildId::new("b1")?, Policy::default(), start, start)?;
/// session.handle(Input::StepsCompleted, start + Duration::from_secs(600));
/// assert_eq!(session.deadline(), start + Duration::from_secs(30 * 60));
/// let t = session.handle(Input::Tick, start + Duration::from_secs(30 * 60));
/// assert_eq!(session.phase(), Phase::Ended);
/// assert!(t.actions.contains(&Action::FinishBuild));
/// # Ok::<(), remote_access_core::Error>(())
/// ```
///
/// It serializes (serde) so that a networked store can keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    build_id: BuildId,
    policy: Policy,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    steps_completed_at: Option<OffsetDateTime>,
    live: BTreeMap<ConnectionId, Protocol>,
    ever_connected: bool,
    #[serde(default)]
    ended: Option<Ended>,
    #[serde(default)]
    builder: Option<Builder>,
    #[serde(default)]
    vnc_port: Option<u16>,
    finish_requested: bool,
    /// Set while the session waits for a user whose last connection was lost to come back.
    #[serde(with = "time::serde::rfc3339::option", default)]
    reconnect_by: Option<OffsetDateTime>,
}

impl Session {
    /// Opens a session for a build that started at `started_at`, as seen at `now`.
    pub fn new(
        build_id: BuildId,
        policy: Policy,
        started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Self> {
        policy.validate()?;
        // The platform's clock and ours may disagree a little; beyond that it is a mistake.
        if started_at > later(now, MAX_CLOCK_SKEW) {
            return Err(Error::invalid(
                "started_at",
                "the build cannot start in the future (more than 60 s ahead of this clock)",
            ));
        }
        let started_at = started_at.min(now);
        let session = Self {
            build_id,
            policy,
            started_at,
            steps_completed_at: None,
            live: BTreeMap::new(),
            ever_connected: false,
            ended: None,
            finish_requested: false,
            builder: None,
            vnc_port: None,
            reconnect_by: None,
        };
        if now >= session.deadline() {
            return Err(Error::invalid("started_at", "the build has already run past its maximum duration"));
        }
        Ok(session)
    }

    /// The same session with a route to its builder.
    pub fn with_builder(mut self, builder: Option<Builder>) -> Self {
        self.builder = builder;
        self
    }

    /// The same session with a gateway VNC port of its own.
    pub fn with_vnc_port(mut self, port: Option<u16>) -> Self {
        self.vnc_port = port;
        self
    }

    /// The gateway port users' VNC clients connect to, if the session has VNC.
    pub fn vnc_port(&self) -> Option<u16> {
        self.vnc_port
    }

    /// Where users reach the builder, if known.
    pub fn builder(&self) -> Option<&Builder> {
        self.builder.as_ref()
    }

    /// The build.
    pub fn build_id(&self) -> &BuildId {
        &self.build_id
    }

    /// The time rules in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When the build started.
    pub fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    /// When the steps completed, if they have.
    pub fn steps_completed_at(&self) -> Option<OffsetDateTime> {
        self.steps_completed_at
    }

    /// Where the session is in its life.
    pub fn phase(&self) -> Phase {
        match (&self.ended, self.steps_completed_at) {
            (Some(_), _) => Phase::Ended,
            (None, Some(_)) => Phase::StepsCompleted,
            (None, None) => Phase::StepsRunning,
        }
    }

    /// Why and when the session ended, once it has.
    pub fn end(&self) -> Option<(&EndReason, OffsetDateTime)> {
        self.ended.as_ref().map(|e| (&e.reason, e.at))
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// The live connections.
    pub fn live_connections(&self) -> impl Iterator<Item = (ConnectionId, Protocol)> + '_ {
        self.live.iter().map(|(id, protocol)| (*id, *protocol))
    }

    /// Whether anyone has connected during the session.
    pub fn ever_connected(&self) -> bool {
        self.ever_connected
    }

    /// The hard deadline: `min(steps completed + grace, started + maximum duration)`, or the
    /// latter alone while the steps run.
    pub fn deadline(&self) -> OffsetDateTime {
        let max = self.max_end();
        match self.steps_completed_at {
            Some(done) => later(done, self.policy.grace).min(max),
            None => max,
        }
    }

    /// The latest end whatever happens: the build's start plus its maximum duration.
    pub fn max_end(&self) -> OffsetDateTime {
        later(self.started_at, self.policy.max_build_duration)
    }

    /// While the session waits for a user whose last connection was lost: the time until
    /// which the same credentials work again. Nobody back by then ends it as
    /// [`EndReason::ConnectionLost`].
    pub fn reconnect_by(&self) -> Option<OffsetDateTime> {
        self.reconnect_by.filter(|_| self.ended.is_none())
    }

    /// The build's rule in words, with its own numbers and, once the steps completed, the
    /// actual deadline: "until 20 minutes after the build steps complete, and never after
    /// 12:00 UTC", "until 11:47 UTC (20 minutes after the build steps completed)", "ended at
    /// 11:47 UTC: user logged out".
    pub fn access_rule(&self) -> String {
        if let Some(Ended { reason, at }) = &self.ended {
            return format!("ended at {}: {reason}", clock_time(*at));
        }
        let max = clock_time(self.max_end());
        let mut rule = match self.steps_completed_at {
            None => format!(
                "until {} after the build steps complete, and never after {max}",
                human(self.policy.grace)
            ),
            Some(_) if self.deadline() < self.max_end() => format!(
                "until {} ({} after the build steps completed)",
                clock_time(self.deadline()),
                human(self.policy.grace)
            ),
            Some(_) => format!("until {max} (the build's maximum duration)"),
        };
        if let Some(by) = self.reconnect_by() {
            rule.push_str(&format!("; the connection was lost: reconnect by {}", clock_time(by)));
        }
        rule
    }

    /// The next time at which the clock alone would end the session, or `None` once ended.
    pub fn next_deadline(&self) -> Option<OffsetDateTime> {
        self.due_end().map(|(at, _)| at)
    }

    /// Feeds one input at time `now` and returns what the caller must do.
    pub fn handle(&mut self, input: Input, now: OffsetDateTime) -> Transition {
        let mut t = Transition::default();
        self.end_if_due(now, &mut t);
        match input {
            Input::Tick => {}
            Input::StepsCompleted => {
                // Idempotent: a repeated report must not push the deadline back.
                if self.ended.is_none() && self.steps_completed_at.is_none() {
                    let before = self.deadline();
                    self.steps_completed_at = Some(now);
                    t.events.push(self.event(EventKind::StepsCompleted, now, "all build steps completed"));
                    let deadline = self.deadline();
                    if deadline != before {
                        let reason = format!("access now ends at {} at the latest", rfc3339(deadline));
                        t.events.push(self.event(EventKind::DeadlineChanged { deadline }, now, reason));
                    }
                    // A zero grace (or zero unused time) ends access right here.
                    self.end_if_due(now, &mut t);
                }
            }
            Input::BuildFinished => self.finish(EndReason::BuildFinished, now, &mut t),
            Input::Cancelled => self.finish(EndReason::Cancelled, now, &mut t),
            Input::Revoke { reason } => self.finish(EndReason::Revoked(reason), now, &mut t),
            Input::Connected { connection, protocol } => {
                if let Some(Ended { reason, .. }) = &self.ended {
                    t.refused = Some(reason.clone());
                } else if self.live.insert(connection, protocol).is_none() {
                    self.ever_connected = true;
                    // The user is back: no more waiting for them.
                    self.reconnect_by = None;
                    let reason = format!("{} connection {connection} opened", protocol.as_str());
                    t.events.push(self.event(EventKind::Connected { connection, protocol }, now, reason));
                }
            }
            Input::Disconnected { connection } => {
                if let Some(protocol) = self.live.remove(&connection) {
                    let reason = format!("{} connection {connection} closed", protocol.as_str());
                    t.events.push(self.event(EventKind::Disconnected { connection, protocol }, now, reason));
                    if self.ended.is_none() && self.steps_completed_at.is_some() && self.live.is_empty() {
                        self.finish(EndReason::LoggedOut, now, &mut t);
                    }
                }
            }
            Input::Lost { connection } => {
                if let Some(protocol) = self.live.remove(&connection) {
                    let mut reason = format!("{} connection {connection} lost", protocol.as_str());
                    if self.ended.is_none() && self.steps_completed_at.is_some() && self.live.is_empty() {
                        let by = later(now, self.policy.reconnect_window).min(self.deadline());
                        self.reconnect_by = Some(by);
                        reason = format!("{reason}; the same credentials work again until {}", rfc3339(by));
                    }
                    t.events.push(self.event(EventKind::Dropped { connection, protocol }, now, reason));
                    // A zero window (or one cut short by the deadline) ends it here.
                    self.end_if_due(now, &mut t);
                }
            }
            Input::Detached { connection } => {
                if let Some(protocol) = self.live.remove(&connection) {
                    let reason = format!(
                        "{} connection {connection} closed by the gateway shutting down",
                        protocol.as_str()
                    );
                    let kind = EventKind::Disconnected { connection, protocol };
                    t.events.push(self.event(kind, now, reason));
                }
            }
        }
        t
    }

    fn end_if_due(&mut self, now: OffsetDateTime, t: &mut Transition) {
        if let Some((_, reason)) = self.due_end().filter(|(at, _)| now >= *at) {
            self.finish(reason, now, t);
        }
    }

    /// The earliest end the clock would cause, and why.
    fn due_end(&self) -> Option<(OffsetDateTime, EndReason)> {
        if self.ended.is_some() {
            return None;
        }
        let mut due = (self.max_end(), EndReason::MaxDurationReached);
        if let Some(done) = self.steps_completed_at {
            let grace = later(done, self.policy.grace);
            if grace < due.0 {
                due = (grace, EndReason::GraceElapsed);
            }
            if let (Some(unused), false) = (self.policy.finish_if_unused_after, self.ever_connected) {
                let unused = later(done, unused);
                if unused < due.0 {
                    due = (unused, EndReason::NobodyConnected);
                }
            }
        }
        // Strictly earlier only: a window that runs into the deadline ends by the deadline.
        if let Some(by) = self.reconnect_by.filter(|by| *by < due.0) {
            due = (by, EndReason::ConnectionLost);
        }
        Some(due)
    }

    /// Ends the session (once): revoke, cut, and finish the build when only access kept it alive.
    fn finish(&mut self, reason: EndReason, now: OffsetDateTime, t: &mut Transition) {
        if self.ended.is_some() {
            return;
        }
        // A cancelled or platform-finished build needs no finishing; a revoke during the steps
        // takes away access but lets the build run on.
        let finish_build = match &reason {
            EndReason::Cancelled | EndReason::BuildFinished => false,
            EndReason::Revoked(_) => self.steps_completed_at.is_some(),
            _ => true,
        };
        t.actions.push(Action::RevokeCredentials);
        t.actions.push(Action::CutConnections);
        t.events.push(self.event(reason.event_kind(), now, reason.to_string()));
        if finish_build && !self.finish_requested {
            self.finish_requested = true;
            t.actions.push(Action::FinishBuild);
            t.events.push(self.event(EventKind::FinishBuild, now, reason.to_string()));
        }
        self.ended = Some(Ended { reason, at: now });
        self.reconnect_by = None;
    }

    fn event(&self, kind: EventKind, at: OffsetDateTime, reason: impl Into<String>) -> Event {
        Event { build_id: self.build_id.clone(), at, kind, reason: reason.into() }
    }
}

/// A time as people read it in a banner: "11:47 UTC" (seconds when there are some).
fn clock_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let format = if at.second() == 0 {
        time::macros::format_description!("[hour]:[minute] UTC")
    } else {
        time::macros::format_description!("[hour]:[minute]:[second] UTC")
    };
    at.format(&format).unwrap_or_else(|_| rfc3339(at))
}
