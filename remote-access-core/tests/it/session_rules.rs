//! The time rules of one session, step by step, with explicit times (no clock at all).

use std::time::Duration;

use remote_access_core::{
    Action, BuildId, ConnectionId, EndReason, Error, EventKind, Input, Phase, Policy, Protocol, Session,
    Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

const START: OffsetDateTime = datetime!(2026-03-01 09:00 UTC);

fn min(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

fn at(m: u64) -> OffsetDateTime {
    START + min(m)
}

fn session(policy: Policy) -> Session {
    Session::new(BuildId::new("b-1").unwrap(), policy, START, START).unwrap()
}

fn connect(s: &mut Session, id: u32, m: u64) -> Transition {
    s.handle(Input::Connected { connection: ConnectionId::new(0, id), protocol: Protocol::Ssh }, at(m))
}

fn disconnect(s: &mut Session, id: u32, m: u64) -> Transition {
    s.handle(Input::Disconnected { connection: ConnectionId::new(0, id) }, at(m))
}

fn kinds(t: &Transition) -> Vec<&'static str> {
    t.events.iter().map(|e| e.kind.as_str()).collect()
}

const END_ACTIONS: [Action; 2] = [Action::RevokeCredentials, Action::CutConnections];
const END_AND_FINISH: [Action; 3] = [Action::RevokeCredentials, Action::CutConnections, Action::FinishBuild];

#[test]
fn while_steps_run_the_deadline_is_the_maximum_duration() {
    let mut s = session(Policy::default());
    assert_eq!(s.phase(), Phase::StepsRunning);
    assert_eq!(s.deadline(), at(120));
    assert!(s.handle(Input::Tick, at(119)).actions.is_empty());
    let t = s.handle(Input::Tick, at(120));
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(kinds(&t), ["expired", "finish_build"]);
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::MaxDurationReached));
}

#[test]
fn after_the_steps_the_deadline_is_grace_or_maximum_whichever_is_first() {
    let mut early = session(Policy::default());
    early.handle(Input::StepsCompleted, at(30));
    assert_eq!(early.phase(), Phase::StepsCompleted);
    assert_eq!(early.deadline(), at(50));
    assert!(early.handle(Input::Tick, at(49)).actions.is_empty());
    early.handle(Input::Tick, at(50));
    assert_eq!(early.end().map(|(r, _)| r.clone()), Some(EndReason::GraceElapsed));

    let mut late = session(Policy::default());
    late.handle(Input::StepsCompleted, at(110));
    assert_eq!(late.deadline(), at(120), "grace is cut short by the maximum duration");
    late.handle(Input::Tick, at(120));
    assert_eq!(late.end().map(|(r, _)| r.clone()), Some(EndReason::MaxDurationReached));
}

#[test]
fn repeated_steps_completed_does_not_move_the_deadline() {
    let mut s = session(Policy::default());
    s.handle(Input::StepsCompleted, at(10));
    let t = s.handle(Input::StepsCompleted, at(25));
    assert!(!t.changed());
    assert_eq!(s.deadline(), at(30));
}

#[test]
fn last_logout_after_the_steps_ends_the_session_and_finishes_the_build_once() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 5);
    connect(&mut s, 2, 6);
    s.handle(Input::StepsCompleted, at(10));
    let t = disconnect(&mut s, 1, 11);
    assert_eq!(kinds(&t), ["disconnected"], "one connection is still open");
    let t = disconnect(&mut s, 2, 12);
    assert_eq!(kinds(&t), ["disconnected", "logged_out", "finish_build"]);
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::LoggedOut));
    // Nothing after the end finishes the build again.
    for input in [Input::Tick, Input::Cancelled, Input::BuildFinished, Input::StepsCompleted] {
        assert!(s.handle(input, at(100)).actions.is_empty());
    }
}

#[test]
fn disconnecting_while_the_steps_run_is_not_a_logout() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 1);
    let t = disconnect(&mut s, 1, 2);
    assert_eq!(kinds(&t), ["disconnected"]);
    assert_eq!(s.phase(), Phase::StepsRunning);
    let t = connect(&mut s, 2, 3);
    assert_eq!(kinds(&t), ["connected"]);
    assert!(t.refused.is_none());
}

#[test]
fn steps_completing_with_nobody_connected_starts_the_grace_only() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 1);
    disconnect(&mut s, 1, 2);
    let t = s.handle(Input::StepsCompleted, at(10));
    assert_eq!(kinds(&t), ["steps_completed", "deadline_changed"]);
    assert_eq!(s.phase(), Phase::StepsCompleted);
}

#[test]
fn cancel_ends_at_once_without_finishing_the_build() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 1);
    let t = s.handle(Input::Cancelled, at(2));
    assert_eq!(t.actions, END_ACTIONS);
    assert_eq!(kinds(&t), ["revoked"]);
    assert_eq!(t.events[0].reason, "build cancelled");
}

#[test]
fn revoke_finishes_the_build_only_once_the_steps_completed() {
    let mut running = session(Policy::default());
    let t = running.handle(Input::Revoke { reason: "abuse".into() }, at(3));
    assert_eq!(t.actions, END_ACTIONS, "a build whose steps still run keeps running");
    assert_eq!(t.events[0].reason, "revoked: abuse");

    let mut done = session(Policy::default());
    done.handle(Input::StepsCompleted, at(3));
    let t = done.handle(Input::Revoke { reason: "done".into() }, at(4));
    assert_eq!(t.actions, END_AND_FINISH);
}

#[test]
fn build_finished_by_the_platform_needs_no_finishing() {
    let mut s = session(Policy::default());
    s.handle(Input::StepsCompleted, at(3));
    let t = s.handle(Input::BuildFinished, at(4));
    assert_eq!(t.actions, END_ACTIONS);
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::BuildFinished));
}

#[test]
fn finish_if_unused_applies_only_when_nobody_ever_connected() {
    let mut policy = Policy::default();
    policy.finish_if_unused_after = Some(min(5));

    let mut unused = session(policy);
    unused.handle(Input::StepsCompleted, at(10));
    assert_eq!(unused.next_deadline(), Some(at(15)));
    assert_eq!(unused.deadline(), at(30), "the hard deadline is unchanged");
    let t = unused.handle(Input::Tick, at(15));
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(unused.end().map(|(r, _)| r.clone()), Some(EndReason::NobodyConnected));

    let mut used = session(policy);
    connect(&mut used, 1, 1);
    disconnect(&mut used, 1, 2);
    used.handle(Input::StepsCompleted, at(10));
    assert!(used.handle(Input::Tick, at(20)).actions.is_empty());
    assert_eq!(used.next_deadline(), Some(at(30)));
}

#[test]
fn a_connection_after_the_end_is_refused_with_the_reason() {
    let mut s = session(Policy::default());
    s.handle(Input::Cancelled, at(1));
    let t = connect(&mut s, 1, 2);
    assert_eq!(t.refused, Some(EndReason::Cancelled));
    assert!(!t.changed());
}

#[test]
fn a_connection_after_the_deadline_ends_the_session_first_and_is_refused() {
    let mut s = session(Policy::default());
    s.handle(Input::StepsCompleted, at(10));
    let t = connect(&mut s, 1, 31);
    assert_eq!(t.refused, Some(EndReason::GraceElapsed));
    assert_eq!(kinds(&t), ["expired", "finish_build"]);
}

#[test]
fn zero_grace_ends_access_when_the_steps_complete() {
    let mut policy = Policy::default();
    policy.grace = Duration::ZERO;
    let mut s = session(policy);
    let t = s.handle(Input::StepsCompleted, at(10));
    assert_eq!(kinds(&t), ["steps_completed", "deadline_changed", "expired", "finish_build"]);
}

#[test]
fn sessions_refuse_impossible_starts() {
    let id = BuildId::new("b-2").unwrap();
    // A little clock skew is absorbed (the start is taken as now); a minute or more is refused.
    let skewed = Session::new(id.clone(), Policy::default(), START + Duration::from_secs(30), START);
    assert_eq!(skewed.unwrap().started_at(), START);
    let future = Session::new(id.clone(), Policy::default(), at(2), START);
    assert!(matches!(future, Err(Error::InvalidInput { what: "started_at", .. })));
    let too_old = Session::new(id.clone(), Policy::default(), START, at(120));
    assert!(matches!(too_old, Err(Error::InvalidInput { what: "started_at", .. })));
    let mut zero = Policy::default();
    zero.max_build_duration = Duration::ZERO;
    let bad = Session::new(id, zero, START, START);
    assert!(matches!(bad, Err(Error::InvalidInput { what: "policy.max_build_duration", .. })));
}

#[test]
fn every_event_names_the_build_time_and_reason() {
    let mut s = session(Policy::default());
    let t = connect(&mut s, 7, 4);
    let event = &t.events[0];
    assert_eq!(event.build_id.as_str(), "b-1");
    assert_eq!(event.at, at(4));
    assert!(matches!(
        event.kind,
        EventKind::Connected { connection, protocol: Protocol::Ssh } if connection == ConnectionId::new(0, 7)
    ));
    assert_eq!(event.reason, "ssh connection 0000000000000007 opened");
}

#[test]
fn build_ids_are_checked() {
    for good in ["b", "build-42", "A.b_c-1", &"x".repeat(128)] {
        assert!(BuildId::new(good).is_ok(), "{good}");
    }
    for bad in ["", "-x", ".x", "a b", "a/b", "a\nb", "ü", "a;rm", &"x".repeat(129)] {
        assert!(matches!(BuildId::new(bad), Err(Error::InvalidInput { what: "build id", .. })), "{bad:?}");
    }
}

#[test]
fn sessions_survive_serialization_for_networked_stores() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 1);
    connect(&mut s, 2, 2);
    s.handle(Input::StepsCompleted, at(3));
    let live = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Session>(&live).unwrap(), s);
    s.handle(Input::Revoke { reason: "r".into() }, at(4));
    let ended = serde_json::to_string(&s).unwrap();
    let back: Session = serde_json::from_str(&ended).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.end().map(|(r, at)| (r.clone(), at)), Some((EndReason::Revoked("r".into()), at(4))));
    // A stored build id is validated on the way back in.
    let forged = live.replace("\"b-1\"", "\"a;rm -rf\"");
    assert!(serde_json::from_str::<Session>(&forged).is_err());
}

fn lose(s: &mut Session, id: u32, m: u64) -> Transition {
    s.handle(Input::Lost { connection: ConnectionId::new(0, id) }, at(m))
}

#[test]
fn a_lost_last_connection_after_the_steps_waits_for_the_user_to_come_back() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 5);
    s.handle(Input::StepsCompleted, at(10));
    let t = lose(&mut s, 1, 12);
    assert!(t.actions.is_empty(), "a drop is no logout: {t:?}");
    assert_eq!(kinds(&t), ["dropped"]);
    assert_eq!(s.reconnect_by(), Some(at(14)), "the default window is 2 minutes");
    assert!(t.events[0].reason.contains("work again until"), "{}", t.events[0].reason);
    assert!(s.handle(Input::Tick, at(13)).actions.is_empty());
    // Back within the window: the session goes on, and a later logout is a logout.
    assert!(!connect(&mut s, 2, 13).changed() || s.reconnect_by().is_none());
    assert_eq!(s.reconnect_by(), None);
    assert!(s.handle(Input::Tick, at(20)).actions.is_empty());
    let t = disconnect(&mut s, 2, 21);
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::LoggedOut));
}

#[test]
fn nobody_back_within_the_window_ends_the_session_as_connection_lost() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 5);
    connect(&mut s, 2, 6);
    s.handle(Input::StepsCompleted, at(10));
    // One of two lost: the other is still there, nothing waits.
    assert!(lose(&mut s, 1, 11).actions.is_empty());
    assert_eq!(s.reconnect_by(), None);
    lose(&mut s, 2, 12);
    assert_eq!(s.next_deadline(), Some(at(14)));
    let t = s.handle(Input::Tick, at(14));
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(kinds(&t), ["connection_lost", "finish_build"]);
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::ConnectionLost));
    // The same credentials are refused from then on.
    assert_eq!(connect(&mut s, 3, 15).refused, Some(EndReason::ConnectionLost));
}

#[test]
fn the_window_never_runs_past_the_deadline() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 5);
    s.handle(Input::StepsCompleted, at(10));
    lose(&mut s, 1, 29);
    assert_eq!(s.reconnect_by(), Some(at(30)), "cut short by the grace period's end");
    s.handle(Input::Tick, at(30));
    assert_eq!(s.end().map(|(r, _)| r.clone()), Some(EndReason::GraceElapsed));
}

#[test]
fn a_zero_window_ends_the_session_at_the_drop() {
    let mut policy = Policy::default();
    policy.reconnect_window = Duration::ZERO;
    let mut s = session(policy);
    connect(&mut s, 1, 5);
    s.handle(Input::StepsCompleted, at(10));
    let t = lose(&mut s, 1, 12);
    assert_eq!(t.actions, END_AND_FINISH);
    assert_eq!(kinds(&t), ["dropped", "connection_lost", "finish_build"]);
}

#[test]
fn a_drop_while_the_steps_run_is_only_recorded() {
    let mut s = session(Policy::default());
    connect(&mut s, 1, 5);
    let t = lose(&mut s, 1, 6);
    assert_eq!(kinds(&t), ["dropped"]);
    assert_eq!(s.reconnect_by(), None);
    // Steps complete with nobody connected: the grace period alone decides.
    s.handle(Input::StepsCompleted, at(10));
    assert_eq!(s.next_deadline(), Some(at(30)));
}

#[test]
fn the_steps_completing_moves_the_deadline_and_says_so() {
    let mut s = session(Policy::default());
    let t = s.handle(Input::StepsCompleted, at(10));
    assert_eq!(kinds(&t), ["steps_completed", "deadline_changed"]);
    assert_eq!(t.events[1].kind, EventKind::DeadlineChanged { deadline: at(30) });
    // Late steps whose grace reaches past the maximum: the deadline does not move.
    let mut late = session(Policy::default());
    assert_eq!(kinds(&late.handle(Input::StepsCompleted, at(110))), ["steps_completed"]);
}

#[test]
fn the_rule_in_words_has_the_builds_own_numbers() {
    let mut policy = Policy::default();
    policy.grace = min(5);
    let mut s = session(policy);
    assert_eq!(s.access_rule(), "until 5 minutes after the build steps complete, and never after 11:00 UTC");
    s.handle(Input::StepsCompleted, at(10));
    assert_eq!(s.access_rule(), "until 09:15 UTC (5 minutes after the build steps completed)");
    connect(&mut s, 1, 11);
    lose(&mut s, 1, 12);
    assert_eq!(
        s.access_rule(),
        "until 09:15 UTC (5 minutes after the build steps completed); the connection was lost: reconnect by 09:14 UTC"
    );
    s.handle(Input::Tick, at(14));
    assert_eq!(s.access_rule(), "ended at 09:14 UTC: user's connection lost and not resumed in time");
    assert_eq!(
        Policy::default().describe(),
        "until 20 minutes after the build steps complete, and never more than 2 hours after the build started"
    );
}
