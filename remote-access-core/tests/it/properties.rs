//! Property tests: for any sequence of build events, connections and clock steps, the time
//! rules hold. One suite drives the pure `Session`; the other drives the whole `Authority`
//! (store, credentials, events) with a manual clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use remote_access_core::{
    Action, Authority, AuthorityOptions, BuildId, BuildRequest, ConnectionId, Credentials, EndReason,
    EventKind, Input, LiveConnection, ManualClock, Policy, Protocol, Session, Trigger,
};
use time::OffsetDateTime;
use time::macros::datetime;

const START: OffsetDateTime = datetime!(2026-07-01 08:00 UTC);

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    StepsCompleted,
    BuildFinished,
    Cancel,
    Revoke,
    Connect(bool),
    Disconnect(usize),
    Lose(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..=90 * 60).prop_map(Op::Advance),
        2 => Just(Op::StepsCompleted),
        1 => Just(Op::BuildFinished),
        1 => Just(Op::Cancel),
        1 => Just(Op::Revoke),
        3 => any::<bool>().prop_map(Op::Connect),
        3 => (0usize..8).prop_map(Op::Disconnect),
        3 => (0usize..8).prop_map(Op::Lose),
        2 => Just(Op::Tick),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (0u64..=60, 1u64..=240, proptest::option::of(0u64..=60), 0u64..=600).prop_map(
        |(grace, max, unused, window)| {
            let mut p = Policy::default();
            p.grace = Duration::from_secs(grace * 60);
            p.max_build_duration = Duration::from_secs(max * 60);
            p.finish_if_unused_after = unused.map(|m| Duration::from_secs(m * 60));
            p.reconnect_window = Duration::from_secs(window);
            p
        },
    )
}

/// Whether a session that ended for `reason` must ask the platform to finish the build.
fn must_finish(reason: &EndReason, steps_completed: bool) -> bool {
    match reason {
        EndReason::Cancelled | EndReason::BuildFinished => false,
        EndReason::Revoked(_) => steps_completed,
        _ => true,
    }
}

fn is_end_event(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Revoked | EventKind::Expired | EventKind::LoggedOut | EventKind::ConnectionLost)
}

proptest! {
    #[test]
    fn session_time_rules_hold_for_any_sequence(policy in policy(), ops in proptest::collection::vec(op(), 0..60)) {
        let mut session = Session::new(BuildId::new("p").unwrap(), policy, START, START).unwrap();
        let max_deadline = START + policy.max_build_duration;
        let mut now = START;
        let mut next_id = 0u32;
        let mut finishes = 0;
        let mut ends = 0;
        let mut ended_as: Option<(EndReason, OffsetDateTime)> = None;
        // When the user's last connection was lost after the steps, if nobody came back since.
        let mut lost_at: Option<OffsetDateTime> = None;

        let mut feed = |session: &mut Session, input: Input, now: OffsetDateTime| {
            let was_ended = session.is_ended();
            let deadline_before = session.deadline();
            let t = session.handle(input.clone(), now);
            // A lost connection is never a logout.
            if let Input::Lost { .. } = input {
                prop_assert!(!t.events.iter().any(|e| e.kind == EventKind::LoggedOut), "a loss is no logout");
            }
            // The deadline moves only with the steps completing, and says so.
            let moved = t.events.iter().filter(|e| matches!(e.kind, EventKind::DeadlineChanged { .. })).count();
            if session.deadline() != deadline_before && !session.is_ended() {
                prop_assert_eq!(input.clone(), Input::StepsCompleted);
                prop_assert_eq!(moved, 1);
            }
            for event in &t.events {
                if let EventKind::DeadlineChanged { deadline } = event.kind {
                    prop_assert_eq!(deadline, session.deadline());
                }
            }
            // The window: only while nobody is connected after the steps, never past the
            // deadline, always in the future while live.
            if let Some(by) = session.reconnect_by() {
                prop_assert!(session.live_connections().next().is_none());
                prop_assert!(session.steps_completed_at().is_some());
                prop_assert!(by <= session.deadline());
                prop_assert!(now < by);
            }
            let finish_actions = t.actions.iter().filter(|a| **a == Action::FinishBuild).count();
            let finish_events = t.events.iter().filter(|e| e.kind == EventKind::FinishBuild).count();
            prop_assert_eq!(finish_actions, finish_events);
            finishes += finish_events;
            ends += t.events.iter().filter(|e| is_end_event(&e.kind)).count();
            if was_ended {
                prop_assert!(t.actions.is_empty(), "an ended session asks for nothing more");
            }
            if let Input::Connected { .. } = input {
                prop_assert_eq!(t.refused.is_some(), session.is_ended(), "connections are accepted exactly while live");
            }
            // The deadline rule.
            prop_assert!(session.deadline() <= max_deadline);
            if let Some(done) = session.steps_completed_at() {
                prop_assert!(session.deadline() <= done + policy.grace);
            }
            // Nothing stays live past its deadline once it has seen the clock.
            if !session.is_ended() {
                prop_assert!(now < session.deadline());
                prop_assert!(session.next_deadline().is_some_and(|at| now < at));
            }
            prop_assert!(finishes <= 1, "finish-build at most once");
            prop_assert!(ends <= 1, "a session ends once");
            Ok(())
        };

        for op in ops {
            let input = match op {
                Op::Advance(secs) => { now += Duration::from_secs(secs); Input::Tick }
                Op::StepsCompleted => Input::StepsCompleted,
                Op::BuildFinished => Input::BuildFinished,
                Op::Cancel => Input::Cancelled,
                Op::Revoke => Input::Revoke { reason: "test".into() },
                Op::Connect(vnc) => {
                    next_id += 1;
                    let protocol = if vnc { Protocol::Vnc } else { Protocol::Ssh };
                    Input::Connected { connection: ConnectionId::new(0, next_id), protocol }
                }
                Op::Disconnect(i) | Op::Lose(i) => {
                    let live: Vec<_> = session.live_connections().map(|(id, _)| id).collect();
                    let connection =
                        live.get(i % live.len().max(1)).copied().unwrap_or(ConnectionId::new(u32::MAX, u32::MAX));
                    if matches!(op, Op::Lose(_)) {
                        if live.len() == 1 && live[0] == connection && session.steps_completed_at().is_some() {
                            lost_at = Some(now);
                        }
                        Input::Lost { connection }
                    } else {
                        Input::Disconnected { connection }
                    }
                }
                Op::Tick => Input::Tick,
            };
            if let Input::Connected { .. } = input {
                lost_at = None;
            }
            feed(&mut session, input, now)?;
            if let Some((reason, at)) = session.end() {
                match &ended_as {
                    None => {
                        if *reason == EndReason::ConnectionLost {
                            // Only a loss with nobody back for the whole window ends it so.
                            let lost = lost_at.expect("connection_lost without a lost last connection");
                            prop_assert!(at >= lost + policy.reconnect_window);
                        }
                        ended_as = Some((reason.clone(), at));
                    }
                    Some(first) => prop_assert_eq!(first, &(reason.clone(), at), "the end never changes"),
                }
            }
        }

        // Let the clock run out: every session ends by its maximum duration at the latest.
        now = now.max(max_deadline);
        feed(&mut session, Input::Tick, now)?;
        let (reason, _) = session.end().map(|(r, at)| (r.clone(), at)).unwrap();
        prop_assert_eq!(ends, 1);
        prop_assert_eq!(finishes, usize::from(must_finish(&reason, session.steps_completed_at().is_some())));
    }
}

#[derive(Debug, Clone)]
enum AOp {
    Issue,
    Advance(u64),
    Steps(usize),
    Cancel(usize),
    Revoke(usize),
    Connect(usize),
    Disconnect(usize),
    Lose(usize),
    VerifySsh(usize),
    VerifyVnc(usize),
    ExpireDue,
}

fn aop() -> impl Strategy<Value = AOp> {
    prop_oneof![
        2 => Just(AOp::Issue),
        3 => (0u64..=60 * 60).prop_map(AOp::Advance),
        2 => (0usize..4).prop_map(AOp::Steps),
        1 => (0usize..4).prop_map(AOp::Cancel),
        1 => (0usize..4).prop_map(AOp::Revoke),
        3 => (0usize..4).prop_map(AOp::Connect),
        3 => (0usize..4).prop_map(AOp::Disconnect),
        2 => (0usize..4).prop_map(AOp::Lose),
        4 => (0usize..4).prop_map(AOp::VerifySsh),
        2 => (0usize..4).prop_map(AOp::VerifyVnc),
        1 => Just(AOp::ExpireDue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_credential_is_accepted_after_its_session_ended(ops in proptest::collection::vec(aop(), 1..50)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async move {
            let clock = ManualClock::new(START);
            let authority = Authority::with_clock(AuthorityOptions::default(), Arc::new(clock.clone())).unwrap();
            let mut events = authority.subscribe();
            let mut builds: Vec<Credentials> = Vec::new();
            let mut live: HashMap<usize, Vec<LiveConnection>> = HashMap::new();
            let mut ended: HashSet<BuildId> = HashSet::new();
            let mut finished: HashMap<BuildId, usize> = HashMap::new();
            let mut fingerprints = HashSet::new();
            let mut passwords = HashSet::new();

            for op in ops {
                let pick = |i: usize| (!builds.is_empty()).then(|| i % builds.len());
                match op {
                    AOp::Issue => {
                        let id = BuildId::new(format!("b{}", builds.len())).unwrap();
                        let creds = authority.issue(BuildRequest::new(id, Trigger::Manual, true)).await.unwrap();
                        prop_assert!(fingerprints.insert(creds.fingerprint().to_owned()), "a key was issued twice");
                        prop_assert!(passwords.insert(creds.vnc_password().expose().clone()), "a password was issued twice");
                        builds.push(creds);
                    }
                    AOp::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                    AOp::Steps(i) => if let Some(i) = pick(i) { authority.steps_completed(builds[i].build_id()).await.unwrap() },
                    AOp::Cancel(i) => if let Some(i) = pick(i) { authority.cancel(builds[i].build_id()).await.unwrap() },
                    AOp::Revoke(i) => if let Some(i) = pick(i) { authority.revoke(builds[i].build_id(), "test").await.unwrap() },
                    AOp::Connect(i) => if let Some(i) = pick(i)
                        && let Ok(c) = authority.connected(builds[i].build_id(), Protocol::Ssh).await
                    {
                        live.entry(i).or_default().push(c);
                    },
                    AOp::Disconnect(i) => if let Some(i) = pick(i)
                        && let Some(c) = live.get_mut(&i).and_then(Vec::pop)
                    {
                        c.disconnect().await.unwrap();
                    },
                    AOp::Lose(i) => if let Some(i) = pick(i)
                        && let Some(c) = live.get_mut(&i).and_then(Vec::pop)
                    {
                        c.lost().await.unwrap();
                    },
                    AOp::VerifySsh(i) => if let Some(i) = pick(i) {
                        let c = &builds[i];
                        let accepted = authority.verify_ssh(c.username(), c.public_key()).await.is_ok();
                        collect(&mut events, &mut ended, &mut finished);
                        prop_assert_eq!(accepted, !ended.contains(c.build_id()), "ssh verification disagrees with the session's end");
                    },
                    AOp::VerifyVnc(i) => if let Some(i) = pick(i) {
                        let c = &builds[i];
                        let accepted = authority.verify_vnc(c.build_id(), c.vnc_password().expose()).await.is_ok();
                        collect(&mut events, &mut ended, &mut finished);
                        prop_assert_eq!(accepted, !ended.contains(c.build_id()), "vnc verification disagrees with the session's end");
                    },
                    AOp::ExpireDue => { authority.expire_due().await.unwrap(); }
                }
                collect(&mut events, &mut ended, &mut finished);
                prop_assert!(finished.values().all(|n| *n <= 1), "finish-build twice for a build");
                // A session ended by its deadline is seen as ended, whoever looks first.
                for c in &builds {
                    let session = authority.session(c.build_id()).await.unwrap();
                    collect(&mut events, &mut ended, &mut finished);
                    prop_assert_eq!(session.is_ended(), ended.contains(c.build_id()));
                    prop_assert!(session.is_ended() || authority.now() < session.deadline());
                    // A window is open only while nobody is connected, and ends in the future.
                    if let Some(by) = session.reconnect_by() {
                        prop_assert!(session.live_connections().next().is_none());
                        prop_assert!(authority.now() < by && by <= session.deadline());
                    }
                }
            }
            Ok(())
        })?;
    }
}

fn collect(
    events: &mut remote_access_core::Subscription,
    ended: &mut HashSet<BuildId>,
    finished: &mut HashMap<BuildId, usize>,
) {
    while let Some(event) = events.try_next() {
        if is_end_event(&event.kind) {
            assert!(ended.insert(event.build_id.clone()), "two end events for {}", event.build_id);
        }
        if event.kind == EventKind::FinishBuild {
            *finished.entry(event.build_id).or_default() += 1;
        }
    }
}
