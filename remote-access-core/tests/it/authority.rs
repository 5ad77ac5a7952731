//! The credential lifecycle through the `Authority`, on the in-memory store and a manual clock.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use remote_access_core::unstable::MemoryStore;
use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, DenialReason, EndReason, Error, Event, EventKind,
    ManualClock, Phase, Policy, Protocol, Subscription, Trigger,
};
use remote_access_test_peers::Run;
use time::macros::datetime;

fn min(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

fn setup() -> (Authority, ManualClock) {
    let clock = ManualClock::new(datetime!(2026-05-04 10:00 UTC));
    let authority = Authority::with_clock(AuthorityOptions::default(), Arc::new(clock.clone())).unwrap();
    (authority, clock)
}

fn id(s: &str) -> BuildId {
    BuildId::new(s).unwrap()
}

fn drain(sub: &mut Subscription) -> Vec<Event> {
    std::iter::from_fn(|| sub.try_next()).collect()
}

fn denial(result: Result<BuildId, Error>) -> DenialReason {
    match result {
        Err(Error::AccessDenied { reason }) => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn only_manual_builds_with_remote_access_enabled_get_credentials() {
    let (authority, _) = setup();
    let mut webhook = BuildRequest::new(id("w"), Trigger::Manual, true);
    webhook.trigger = Trigger::Webhook;
    assert!(matches!(authority.issue(webhook).await, Err(Error::NotManuallyTriggered { .. })));
    let mut disabled = BuildRequest::new(id("d"), Trigger::Manual, true);
    disabled.remote_access_enabled = false;
    let err = authority.issue(disabled).await.unwrap_err();
    assert!(matches!(err, Error::RemoteAccessDisabled { .. }));
    assert_eq!(err.to_string(), "remote access is not enabled for build d");
}

#[tokio::test]
async fn each_build_gets_exactly_one_credential_set() {
    let (authority, _) = setup();
    authority.issue(BuildRequest::new(id("once"), Trigger::Manual, true)).await.unwrap();
    let again = authority.issue(BuildRequest::new(id("once"), Trigger::Manual, true)).await;
    assert!(matches!(again, Err(Error::BuildExists { .. })));
}

#[tokio::test]
async fn ssh_verification_needs_the_right_user_and_key_of_a_live_session() {
    let (authority, _) = setup();
    let a = authority.issue(BuildRequest::new(id("a"), Trigger::Manual, true)).await.unwrap();
    let b = authority.issue(BuildRequest::new(id("b"), Trigger::Manual, true)).await.unwrap();

    assert_eq!(authority.verify_ssh(a.username(), a.public_key()).await.unwrap(), id("a"));
    // The key's comment does not matter; the key does.
    let with_comment = format!("{} someone@laptop", a.public_key());
    assert_eq!(authority.verify_ssh(a.username(), &with_comment).await.unwrap(), id("a"));

    assert_eq!(denial(authority.verify_ssh(a.username(), b.public_key()).await), DenialReason::WrongKey);
    assert_eq!(denial(authority.verify_ssh("ra-nobody", a.public_key()).await), DenialReason::UnknownUser);
    let long = "u".repeat(10_000);
    assert_eq!(denial(authority.verify_ssh(&long, a.public_key()).await), DenialReason::UnknownUser);
    let garbage = authority.verify_ssh(a.username(), "ssh-ed25519 not-base64!").await;
    assert!(matches!(garbage, Err(Error::InvalidInput { what: "public key", .. })));
}

#[tokio::test]
async fn revoked_credentials_are_refused_forever_until_the_tombstone_is_purged() {
    let (authority, clock) = setup();
    let creds = authority.issue(BuildRequest::new(id("r"), Trigger::Manual, true)).await.unwrap();
    let password = creds.vnc_password().expose().clone();
    authority.revoke(&id("r"), "security review").await.unwrap();

    for _ in 0..3 {
        assert_eq!(
            denial(authority.verify_ssh(creds.username(), creds.public_key()).await),
            DenialReason::Revoked
        );
        let vnc = authority.verify_vnc(&id("r"), &password).await;
        assert!(matches!(vnc, Err(Error::AccessDenied { reason: DenialReason::Revoked })));
        clock.advance(Duration::from_secs(24 * 3600));
    }
    // Within the retention the tombstone stays.
    assert_eq!(authority.purge().await.unwrap(), 0);
    let session = authority.session(&id("r")).await.unwrap();
    assert_eq!(session.end().map(|(r, _)| r.clone()), Some(EndReason::Revoked("security review".into())));

    clock.advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(authority.purge().await.unwrap(), 1);
    // Purged: the username is unknown now, still refused.
    assert_eq!(
        denial(authority.verify_ssh(creds.username(), creds.public_key()).await),
        DenialReason::UnknownUser
    );
    assert!(matches!(authority.session(&id("r")).await, Err(Error::UnknownBuild { .. })));
}

#[tokio::test]
async fn vnc_password_is_checked_per_session() {
    let (authority, _) = setup();
    let a = authority.issue(BuildRequest::new(id("va"), Trigger::Manual, true)).await.unwrap();
    let b = authority.issue(BuildRequest::new(id("vb"), Trigger::Manual, true)).await.unwrap();
    authority.verify_vnc(&id("va"), a.vnc_password().expose()).await.unwrap();
    for wrong in [b.vnc_password().expose().as_str(), "", "x", &"y".repeat(4096)] {
        let result = authority.verify_vnc(&id("va"), wrong).await;
        assert!(matches!(result, Err(Error::AccessDenied { reason: DenialReason::WrongPassword })));
    }
    let unknown = authority.verify_vnc(&id("nope"), "whatever").await;
    assert!(matches!(unknown, Err(Error::UnknownBuild { .. })));
}

#[tokio::test]
async fn the_deadline_expires_the_session_on_the_clock() {
    let (authority, clock) = setup();
    let mut events = authority.subscribe();
    let creds = authority.issue(BuildRequest::new(id("e"), Trigger::Manual, true)).await.unwrap();
    authority.steps_completed(&id("e")).await.unwrap();
    assert_eq!(authority.next_deadline().await.unwrap(), Some(authority.now() + min(20)));

    clock.advance(min(19));
    assert_eq!(authority.expire_due().await.unwrap(), 0);
    authority.verify_ssh(creds.username(), creds.public_key()).await.unwrap();

    clock.advance(min(1));
    assert_eq!(authority.expire_due().await.unwrap(), 1);
    assert_eq!(
        denial(authority.verify_ssh(creds.username(), creds.public_key()).await),
        DenialReason::Revoked
    );
    assert_eq!(authority.next_deadline().await.unwrap(), None);

    let kinds: Vec<_> = drain(&mut events).iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["issued", "steps_completed", "deadline_changed", "expired", "finish_build"]);
}

#[tokio::test]
async fn verification_alone_enforces_a_passed_deadline() {
    // Nobody runs the expiry task: verification must still refuse after the deadline.
    let (authority, clock) = setup();
    let creds = authority.issue(BuildRequest::new(id("lazy"), Trigger::Manual, true)).await.unwrap();
    clock.advance(min(120));
    assert_eq!(
        denial(authority.verify_ssh(creds.username(), creds.public_key()).await),
        DenialReason::Revoked
    );
    let session = authority.session(&id("lazy")).await.unwrap();
    assert_eq!(session.end().map(|(r, _)| r.clone()), Some(EndReason::MaxDurationReached));
}

#[tokio::test]
async fn logout_after_the_steps_finishes_the_build_exactly_once() {
    let (authority, _) = setup();
    let mut events = authority.subscribe();
    let build = id("l");
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let ssh = authority.connected(&build, Protocol::Ssh).await.unwrap();
    let vnc = authority.connected(&build, Protocol::Vnc).await.unwrap();
    authority.steps_completed(&build).await.unwrap();
    vnc.disconnect().await.unwrap();
    assert_eq!(authority.session(&build).await.unwrap().phase(), Phase::StepsCompleted);
    ssh.disconnect().await.unwrap();
    assert_eq!(authority.session(&build).await.unwrap().phase(), Phase::Ended);

    let events = drain(&mut events);
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "issued",
            "connected",
            "connected",
            "steps_completed",
            "deadline_changed",
            "disconnected",
            "disconnected",
            "logged_out",
            "finish_build"
        ]
    );
    assert!(events.iter().all(|e| e.build_id == build && !e.reason.is_empty()));
    assert!(matches!(events[1].kind, EventKind::Connected { protocol: Protocol::Ssh, .. }));
}

#[tokio::test]
async fn a_connection_dropped_without_a_report_is_recorded_as_lost() {
    // A gateway task that panics or is cancelled drops its LiveConnection: the guard reports it,
    // as lost (nobody saw the user leave), so the session waits for them, then ends.
    let (authority, clock) = setup();
    let mut events = authority.subscribe();
    let build = id("dropped");
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let live = authority.connected(&build, Protocol::Ssh).await.unwrap();
    authority.steps_completed(&build).await.unwrap();
    drop(live);
    while !matches!(events.next().await.unwrap().kind, EventKind::Dropped { protocol: Protocol::Ssh, .. }) {}
    let session = authority.session(&build).await.unwrap();
    assert_eq!(session.reconnect_by(), Some(authority.now() + Policy::default().reconnect_window));
    clock.advance(Policy::default().reconnect_window);
    assert_eq!(authority.expire_due().await.unwrap(), 1);
    loop {
        let event = events.next().await.unwrap();
        if event.kind == EventKind::FinishBuild {
            assert_eq!(event.reason, EndReason::ConnectionLost.to_string());
            break;
        }
    }
    assert_eq!(authority.session(&build).await.unwrap().phase(), Phase::Ended);
}

#[tokio::test]
async fn a_cancelled_disconnect_report_is_completed_by_the_guard() {
    let (authority, _) = setup();
    let build = id("cancelled-report");
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let live = authority.connected(&build, Protocol::Vnc).await.unwrap();
    authority.steps_completed(&build).await.unwrap();
    // Poll the report once, then drop it: whatever point it reached, the logout must land.
    let report = live.disconnect();
    let _ = futures_poll_once(report).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(authority.session(&build).await.unwrap().phase(), Phase::Ended);
}

/// Polls a future once and drops it.
async fn futures_poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match future.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test]
async fn revoking_cuts_live_connections_and_refuses_new_ones() {
    let (authority, _) = setup();
    let build = id("c");
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let live = authority.connected(&build, Protocol::Ssh).await.unwrap();
    let mut cut = live.cut_signal();
    assert!(!cut.is_cut());
    let waiter = tokio::spawn(async move { cut.cut().await });

    authority.revoke(&build, "admin").await.unwrap();
    waiter.await.unwrap();
    assert!(live.cut_signal().is_cut());

    let late = authority.connected(&build, Protocol::Vnc).await;
    match late {
        Err(Error::SessionEnded { reason, .. }) => {
            assert_eq!(reason, EndReason::Revoked("admin".into()))
        }
        other => panic!("expected SessionEnded, got {other:?}"),
    }
    // Other builds are untouched.
    authority.issue(BuildRequest::new(id("other"), Trigger::Manual, true)).await.unwrap();
    let other = authority.connected(&id("other"), Protocol::Ssh).await.unwrap();
    assert!(!other.cut_signal().is_cut());
}

#[tokio::test]
async fn revoke_reasons_are_checked() {
    let (authority, _) = setup();
    authority.issue(BuildRequest::new(id("rr"), Trigger::Manual, true)).await.unwrap();
    for bad in ["line\nbreak", &"x".repeat(257)] {
        let result = authority.revoke(&id("rr"), bad).await;
        assert!(matches!(result, Err(Error::InvalidInput { what: "revoke reason", .. })));
    }
    assert!(matches!(authority.revoke(&id("none"), "x").await, Err(Error::UnknownBuild { .. })));
}

#[tokio::test]
async fn a_build_started_earlier_keeps_its_maximum_duration() {
    let (authority, _) = setup();
    let mut request = BuildRequest::new(id("old"), Trigger::Manual, true);
    request.started_at = Some(authority.now() - min(100));
    authority.issue(request).await.unwrap();
    assert_eq!(authority.next_deadline().await.unwrap(), Some(authority.now() + min(20)));

    let mut too_old = BuildRequest::new(id("older"), Trigger::Manual, true);
    too_old.started_at = Some(authority.now() - min(121));
    assert!(matches!(authority.issue(too_old).await, Err(Error::InvalidInput { what: "started_at", .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_are_all_counted_and_logout_happens_once() {
    let (authority, _) = setup();
    let mut events = authority.subscribe();
    let build = id("busy");
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (authority, build) = (authority.clone(), build.clone());
        tasks.push(tokio::spawn(async move { authority.connected(&build, Protocol::Ssh).await.unwrap() }));
    }
    let mut live = Vec::new();
    for task in tasks {
        live.push(task.await.unwrap());
    }
    assert_eq!(authority.session(&build).await.unwrap().live_connections().count(), 64);
    authority.steps_completed(&build).await.unwrap();
    let mut tasks = Vec::new();
    for connection in live {
        tasks.push(tokio::spawn(async move { connection.disconnect().await.unwrap() }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = drain(&mut events);
    let count = |kind: &str| events.iter().filter(|e| e.kind.as_str() == kind).count();
    assert_eq!((count("connected"), count("disconnected")), (64, 64));
    assert_eq!((count("logged_out"), count("finish_build")), (1, 1));
}

#[tokio::test]
async fn the_expiry_task_enforces_deadlines_while_nothing_else_happens() {
    let (authority, clock) = setup();
    let mut events = authority.subscribe();
    authority.issue(BuildRequest::new(id("t"), Trigger::Manual, true)).await.unwrap();
    authority.steps_completed(&id("t")).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let authority = authority.clone();
        async move { authority.run_housekeeping(async { stopped.await.unwrap_or(()) }).await }
    });
    clock.advance(min(21));
    loop {
        let event = events.next().await.unwrap();
        if event.kind == EventKind::FinishBuild {
            assert_eq!(event.reason, "grace period after the build steps elapsed");
            break;
        }
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn exported_keys_are_what_openssh_reads() {
    let (authority, _) = setup();
    let creds = authority.issue(BuildRequest::new(id("k-1"), Trigger::Manual, true)).await.unwrap();
    assert!(creds.public_key().starts_with("ssh-ed25519 AAAA"));
    assert_eq!(creds.authorized_keys_line(), format!("{} remote-access build k-1", creds.public_key()));

    let dir = std::env::temp_dir().join(format!("ra-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("id_ed25519");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let pem = creds.private_key_openssh().unwrap();
        assert!(pem.expose().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        file.write_all(pem.expose().as_bytes()).unwrap();
    }
    let public = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path).finish();
    let fingerprint = Command::new("ssh-keygen").arg("-l").arg("-f").arg(&path).finish();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(public.status.success(), "{}", String::from_utf8_lossy(&public.stderr));
    assert_eq!(String::from_utf8_lossy(&public.stdout).trim(), creds.public_key());
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout).to_string();
    assert!(fingerprint.starts_with(&format!("256 {} ", creds.fingerprint())), "{fingerprint}");
}

/// A store that yields to the scheduler inside every call, so that concurrent callers
/// interleave between reading a session and swapping it; it counts the session writes, and
/// refuses them, or never answers them, while told to (as a store out of reach would).
#[derive(Default)]
struct YieldingStore {
    inner: MemoryStore,
    writes: std::sync::atomic::AtomicUsize,
    refuse_writes: std::sync::atomic::AtomicBool,
    hang_writes: std::sync::atomic::AtomicBool,
}

impl remote_access_core::unstable::Store for YieldingStore {
    fn insert(
        &self,
        session: remote_access_core::Session,
        credential: remote_access_core::unstable::CredentialRecord,
        keep_until: time::OffsetDateTime,
    ) -> remote_access_core::unstable::StoreFuture<'_, remote_access_core::unstable::Insert> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.inner.insert(session, credential, keep_until).await
        })
    }
    fn session<'a>(
        &'a self,
        build_id: &'a BuildId,
    ) -> remote_access_core::unstable::StoreFuture<
        'a,
        Option<remote_access_core::unstable::Versioned<remote_access_core::Session>>,
    > {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.inner.session(build_id).await
        })
    }
    fn replace_session(
        &self,
        session: remote_access_core::Session,
        version: u64,
        revocation: Option<remote_access_core::unstable::Revocation>,
    ) -> remote_access_core::unstable::StoreFuture<'_, bool> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.hang_writes.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.refuse_writes.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::StoreUnavailable { message: "refused by the test".into(), source: None });
            }
            self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.replace_session(session, version, revocation).await
        })
    }
    fn credential_for_user<'a>(
        &'a self,
        username: &'a str,
    ) -> remote_access_core::unstable::StoreFuture<'a, Option<remote_access_core::unstable::CredentialRecord>>
    {
        self.inner.credential_for_user(username)
    }
    fn credential_for_build<'a>(
        &'a self,
        build_id: &'a BuildId,
    ) -> remote_access_core::unstable::StoreFuture<'a, Option<remote_access_core::unstable::CredentialRecord>>
    {
        self.inner.credential_for_build(build_id)
    }
    fn session_for_vnc_port(
        &self,
        port: u16,
    ) -> remote_access_core::unstable::StoreFuture<'_, Option<BuildId>> {
        self.inner.session_for_vnc_port(port)
    }
    fn due_sessions(
        &self,
        now: time::OffsetDateTime,
    ) -> remote_access_core::unstable::StoreFuture<'_, Vec<BuildId>> {
        self.inner.due_sessions(now)
    }
    fn next_deadline(&self) -> remote_access_core::unstable::StoreFuture<'_, Option<time::OffsetDateTime>> {
        self.inner.next_deadline()
    }
    fn purge(
        &self,
        ended_before: time::OffsetDateTime,
    ) -> remote_access_core::unstable::StoreFuture<'_, Vec<BuildId>> {
        self.inner.purge(ended_before)
    }
    fn live_sessions(&self) -> remote_access_core::unstable::StoreFuture<'_, Vec<BuildId>> {
        self.inner.live_sessions()
    }
    fn revoked_fingerprints(
        &self,
        now: time::OffsetDateTime,
    ) -> remote_access_core::unstable::StoreFuture<'_, Vec<String>> {
        self.inner.revoked_fingerprints(now)
    }
    fn add_failure<'a>(
        &'a self,
        key: &'a str,
        tag: Option<&'a str>,
    ) -> remote_access_core::unstable::StoreFuture<'a, u32> {
        self.inner.add_failure(key, tag)
    }
    fn failures<'a>(
        &'a self,
        key: &'a str,
    ) -> remote_access_core::unstable::StoreFuture<'a, Option<remote_access_core::unstable::Failures>> {
        self.inner.failures(key)
    }
    fn take_back_failures<'a>(
        &'a self,
        key: &'a str,
        tag: Option<&'a str>,
    ) -> remote_access_core::unstable::StoreFuture<'a, Option<remote_access_core::unstable::Failures>> {
        self.inner.take_back_failures(key, tag)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connections_against_a_revoke_are_all_cut() {
    for round in 0..20 {
        let clock = ManualClock::new(datetime!(2026-05-04 10:00 UTC));
        let store = Arc::new(YieldingStore::default());
        let authority =
            remote_access_core::unstable::authority(AuthorityOptions::default(), store, Arc::new(clock))
                .unwrap();
        let mut events = authority.subscribe();
        let build = id(&format!("race-{round}"));
        let creds = authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let (authority, build) = (authority.clone(), build.clone());
            tasks.push(tokio::spawn(async move {
                if i == 12 {
                    authority.revoke(&build, "race").await.unwrap();
                    None
                } else {
                    authority.connected(&build, Protocol::Ssh).await.ok()
                }
            }));
        }
        let mut accepted = Vec::new();
        for task in tasks {
            accepted.extend(task.await.unwrap());
        }
        // Whoever got in before the revoke is cut now; nobody gets in after it.
        assert!(
            accepted.iter().all(|c| c.cut_signal().is_cut()),
            "round {round}: a connection survived the revoke"
        );
        assert!(authority.connected(&build, Protocol::Ssh).await.is_err());
        assert!(authority.verify_ssh(creds.username(), creds.public_key()).await.is_err());
        let ends = drain(&mut events).iter().filter(|e| e.kind == EventKind::Revoked).count();
        assert_eq!(ends, 1);
    }
}

/// An authority on a [`YieldingStore`], with a build that has 16 live connections.
async fn sixteen_connections(
    build: &BuildId,
) -> (Authority, Arc<YieldingStore>, Vec<remote_access_core::LiveConnection>) {
    let store = Arc::new(YieldingStore::default());
    let clock = ManualClock::new(datetime!(2026-05-04 10:00 UTC));
    let authority =
        remote_access_core::unstable::authority(AuthorityOptions::default(), store.clone(), Arc::new(clock))
            .unwrap();
    authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();
    let mut live = Vec::new();
    for _ in 0..16 {
        live.push(authority.connected(build, Protocol::Ssh).await.unwrap());
    }
    (authority, store, live)
}

/// A revocation ends all of a build's connections at once, and each reports its end from a
/// task of its own (as the gateway's do): the ends go to the store together, not in a
/// compare-and-swap race of one write each, and every one of them is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ends_of_a_revoked_builds_connections_are_written_together() {
    let build = id("cut-together");
    let (authority, store, live) = sixteen_connections(&build).await;
    let mut events = authority.subscribe();
    authority.revoke(&build, "done").await.unwrap();
    let writes_before = store.writes.load(std::sync::atomic::Ordering::SeqCst);
    let start = Arc::new(tokio::sync::Barrier::new(live.len()));
    let mut tasks = Vec::new();
    for connection in live {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            connection.disconnect().await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let writes = store.writes.load(std::sync::atomic::Ordering::SeqCst) - writes_before;
    assert!(writes < 16, "{writes} session writes for 16 connection ends");
    assert_eq!(authority.session(&build).await.unwrap().live_connections().count(), 0);
    let closed = drain(&mut events).iter().filter(|e| e.kind.as_str() == "disconnected").count();
    assert_eq!(closed, 16);
}

/// Ends written together fail together: each reporter hears why, and every end is kept and
/// recorded once the store takes writes again. Nothing is lost to the batching.
#[tokio::test]
async fn ends_written_together_are_kept_when_the_store_fails_and_recorded_later() {
    let build = id("kept-together");
    let (authority, store, live) = sixteen_connections(&build).await;
    authority.revoke(&build, "done").await.unwrap();
    store.refuse_writes.store(true, std::sync::atomic::Ordering::SeqCst);
    // Started together on this task: the first report's write is in flight while the rest queue.
    let reports = live.iter().map(|connection| connection.disconnect());
    for result in futures_util::future::join_all(reports).await {
        match result {
            Err(Error::StoreUnavailable { message, .. }) => {
                assert!(message.contains("refused by the test"), "{message}")
            }
            other => panic!("expected the store's refusal, got {other:?}"),
        }
    }
    assert_eq!(authority.session(&build).await.unwrap().live_connections().count(), 16);

    store.refuse_writes.store(false, std::sync::atomic::Ordering::SeqCst);
    housekeeping_until_no_connection_is_left(&authority, &build).await;
}

/// Runs the housekeeping until the build's session counts no live connection. Its first round
/// starts at once and records the kept ends; the 100 checks a second apart only turn a bug into
/// a failure instead of a hang.
async fn housekeeping_until_no_connection_is_left(authority: &Authority, build: &BuildId) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let housekeeping = tokio::spawn({
        let authority = authority.clone();
        async move { authority.run_housekeeping(async { stopped.await.unwrap_or(()) }).await }
    });
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = authority.session(build).await.unwrap().live_connections().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(left, 0, "ends still unrecorded after 100 s of housekeeping");
    stop.send(()).unwrap();
    housekeeping.await.unwrap();
}

/// The task that writes a build's ends runs on the runtime of the report that started it.
/// Should that runtime shut down in the middle of a write, the ends it held are not lost: the
/// housekeeping records them.
#[test]
fn ends_held_by_a_writer_whose_runtime_shut_down_are_recorded_later() {
    let main = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let build = id("runtime-gone");
    let (authority, store, live) = main.block_on(sixteen_connections(&build));
    main.block_on(authority.revoke(&build, "done")).unwrap();

    store.hang_writes.store(true, std::sync::atomic::Ordering::SeqCst);
    let other = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let unanswered = other.block_on(async {
        let reports = futures_util::future::join_all(live.iter().map(|connection| connection.disconnect()));
        tokio::time::timeout(Duration::from_millis(200), reports).await.is_err()
    });
    assert!(unanswered, "the reports finished although the store never answered");
    // The writer task goes with its runtime, in the middle of its write (or before it ran).
    drop(other);
    store.hang_writes.store(false, std::sync::atomic::Ordering::SeqCst);

    // `live` is still held: its drop guards report nothing, so only the kept ends can count.
    main.block_on(housekeeping_until_no_connection_is_left(&authority, &build));
    drop(live);
}

/// An embedder may poll a report on an executor of its own, outside any tokio runtime: the
/// end is then written right there.
#[test]
fn an_end_reported_outside_a_tokio_runtime_is_written_there() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let build = id("no-runtime");
    let (authority, _store, live) = runtime.block_on(sixteen_connections(&build));
    block_on_this_thread(live[0].disconnect()).unwrap();
    let left = runtime.block_on(authority.session(&build)).unwrap().live_connections().count();
    assert_eq!(left, 15);
}

/// Polls `future` to the end on this thread, with no runtime: the simplest executor there is.
fn block_on_this_thread<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[tokio::test]
async fn guessing_a_password_tells_the_platform_and_never_locks_the_owner_out() {
    let (authority, _clock) = setup();
    let mut events = authority.subscribe();
    let creds = authority.issue(BuildRequest::new(id("guessed"), Trigger::Manual, true)).await.unwrap();
    let password = creds.vnc_password().expose().clone();
    let vnc = |guess: String| {
        let authority = authority.clone();
        async move {
            match authority.verify_vnc(&id("guessed"), &guess).await {
                Ok(()) => None,
                Err(Error::AccessDenied { reason }) => Some(reason),
                Err(other) => panic!("{other}"),
            }
        }
    };
    // Nine mistakes are just mistakes: the right password still works, and ends the run.
    for _ in 0..9 {
        assert_eq!(vnc("wrong123".into()).await, Some(DenialReason::WrongPassword));
    }
    assert_eq!(vnc(password.clone()).await, None);
    assert!(drain(&mut events).iter().all(|e| e.kind != EventKind::Guessing));

    // Ten in a row: the platform hears of it, and again at 20, 40, 80 (not at every failure);
    // the right password works throughout, and the build's SSH key is not affected.
    for _ in 0..80 {
        assert_eq!(vnc("wrong123".into()).await, Some(DenialReason::WrongPassword));
    }
    let counts: Vec<String> =
        drain(&mut events).into_iter().filter(|e| e.kind == EventKind::Guessing).map(|e| e.reason).collect();
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts[0].starts_with("10 failed logins in a row (wrong VNC password)"), "{}", counts[0]);
    assert!(counts[3].starts_with("80 failed logins"), "{}", counts[3]);
    assert_eq!(vnc(password).await, None);
    assert_eq!(authority.verify_ssh(creds.username(), creds.public_key()).await.unwrap(), id("guessed"));
}

#[tokio::test]
async fn a_slow_subscriber_is_told_how_many_events_it_missed_and_a_fast_one_misses_none() {
    let clock = ManualClock::new(datetime!(2026-05-04 10:00 UTC));
    let mut options = AuthorityOptions::default();
    options.event_queue = 4;
    let authority = Authority::with_clock(options, Arc::new(clock.clone())).unwrap();
    let (mut slow, mut fast) = (authority.subscribe(), authority.subscribe());
    let mut fast_got = Vec::new();
    for n in 0..10 {
        authority.issue(BuildRequest::new(id(&format!("lag-{n}")), Trigger::Manual, true)).await.unwrap();
        fast_got.extend(drain(&mut fast));
        clock.advance(min(1));
    }

    // The slow one read nothing while ten builds were issued: it gets the first four, then one
    // event in place of the six it missed, starting with the fifth build's.
    let got = drain(&mut slow);
    let shown: Vec<(&str, &str)> = got.iter().map(|e| (e.kind.as_str(), e.build_id.as_str())).collect();
    assert_eq!(
        shown,
        [
            ("issued", "lag-0"),
            ("issued", "lag-1"),
            ("issued", "lag-2"),
            ("issued", "lag-3"),
            ("lagged", "lag-4")
        ]
    );
    let lagged = &got[4];
    assert_eq!(lagged.kind, EventKind::Lagged { dropped: 6 });
    assert!(lagged.reason.contains("6 events were not delivered"), "{}", lagged.reason);
    // It stands for the first event missed: the fifth build's `issued`, which the fast one got.
    assert_eq!(lagged.at, fast_got[4].at);
    assert_ne!(lagged.at, got[3].at);

    // Having caught up, it gets what happens next, in order.
    authority.revoke(&id("lag-9"), "no longer needed").await.unwrap();
    authority.steps_completed(&id("lag-8")).await.unwrap();
    let next: Vec<(&str, String)> =
        drain(&mut slow).into_iter().map(|e| (e.kind.as_str(), e.build_id.to_string())).collect();
    assert_eq!(
        next,
        [
            ("revoked", "lag-9".to_owned()),
            ("steps_completed", "lag-8".to_owned()),
            ("deadline_changed", "lag-8".to_owned())
        ]
    );

    // The fast one, reading as it went, got every event and no lag.
    fast_got.extend(drain(&mut fast));
    let kinds: Vec<&str> = fast_got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, [vec!["issued"; 10], vec!["revoked", "steps_completed", "deadline_changed"]].concat());
    let builds: Vec<&str> = fast_got[..10].iter().map(|e| e.build_id.as_str()).collect();
    assert_eq!(builds, (0..10).map(|n| format!("lag-{n}")).collect::<Vec<_>>());

    // The bound is checked: zero would drop everything, and a huge one is no bound.
    for bad in [0, 1_000_001] {
        let mut options = AuthorityOptions::default();
        options.event_queue = bad;
        let refused = Authority::new(options);
        assert!(matches!(refused, Err(Error::InvalidInput { what: "event_queue", .. })), "{refused:?}");
    }
}
