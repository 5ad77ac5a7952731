//! The session state machine under arbitrary sequences of inputs and clock steps.
//!
//! Bytes 0-2 choose the policy; every following pair of bytes is one input. After each input
//! the machine's invariants are checked: the deadline rule, one end, at most one finish-build,
//! nothing accepted or asked for after the end.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use remote_access_core::{
    Action, BuildId, ConnectionId, EventKind, Input, Policy, Protocol, Session,
};
use time::macros::datetime;

fuzz_target!(|data: &[u8]| {
    let [grace, max, unused, rest @ ..] = data else { return };
    let mut policy = Policy::default();
    policy.grace = Duration::from_secs(u64::from(*grace % 61) * 60);
    policy.max_build_duration = Duration::from_secs((1 + u64::from(*max % 240)) * 60);
    policy.finish_if_unused_after = (unused & 0x80 != 0).then(|| Duration::from_secs(u64::from(unused % 61) * 60));
    policy.reconnect_window = Duration::from_secs(u64::from(*grace / 64) * 60);

    let start = datetime!(2026-01-01 00:00 UTC);
    let Ok(id) = BuildId::new("fuzz") else { return };
    let Ok(mut session) = Session::new(id, policy, start, start) else { return };
    let max_deadline = start + policy.max_build_duration;
    let (mut now, mut finishes, mut ends) = (start, 0, 0);

    for pair in rest.chunks_exact(2) {
        let (op, arg) = (pair[0] % 8, pair[1]);
        let input = match op {
            0 => {
                now += Duration::from_secs(u64::from(arg) * 30);
                Input::Tick
            }
            1 => Input::StepsCompleted,
            2 => Input::BuildFinished,
            3 => Input::Cancelled,
            4 => Input::Revoke { reason: "fuzz".into() },
            5 => {
                let protocol = if arg & 1 == 0 { Protocol::Ssh } else { Protocol::Vnc };
                Input::Connected { connection: ConnectionId::new(0, u32::from(arg)), protocol }
            }
            6 => Input::Disconnected { connection: ConnectionId::new(0, u32::from(arg)) },
            7 => Input::Lost { connection: ConnectionId::new(0, u32::from(arg)) },
            _ => Input::Tick,
        };
        let was_ended = session.is_ended();
        let connecting = matches!(input, Input::Connected { .. });
        let t = session.handle(input, now);

        finishes += t.actions.iter().filter(|a| **a == Action::FinishBuild).count();
        ends += t.events.iter().filter(|e| matches!(e.kind, EventKind::Revoked | EventKind::Expired | EventKind::LoggedOut | EventKind::ConnectionLost)).count();
        assert!(finishes <= 1 && ends <= 1);
        assert_eq!(ends == 1, session.is_ended());
        assert!(!was_ended || t.actions.is_empty());
        assert!(!connecting || t.refused.is_some() == session.is_ended());
        assert!(session.deadline() <= max_deadline);
        if let Some(done) = session.steps_completed_at() {
            assert!(session.deadline() <= done + policy.grace);
        }
        assert!(session.is_ended() || now < session.deadline());
        // The reconnect window: only while nobody is connected, never past the deadline.
        if let Some(by) = session.reconnect_by() {
            assert!(session.live_connections().next().is_none() && now < by && by <= session.deadline());
        }
    }
});
