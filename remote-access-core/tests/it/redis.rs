//! The Redis store against a real `redis-server` (started by the tests on a free loopback
//! port): the store's contract, several gateways sharing one Redis with the real `ssh` client
//! and a real `sshd` builder, and failing closed while Redis is gone.
//!
//! The gateways here share one test process but nothing else: each has its own authority,
//! its own Redis connections and its own cut signals, as separate processes would.
//! `examples/tests/cluster.rs` runs them as processes and kills them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builds::*;
use remote_access_core::unstable::{Conflict, CredentialRecord, Insert, RedisStore, Revocation, Store};
use remote_access_core::{
    Authority, AuthorityOptions, BuildId, DenialReason, Error, Gateway, HostKey, Policy, RedisOptions,
    RunningGateway, Secret, Session, StoreOptions, SystemClock, TlsIdentity,
};
use remote_access_test_peers::*;
use time::OffsetDateTime;

fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::new(RedisOptions::new(redis.url())).unwrap()
}

fn authority_on(redis: &RedisServer, options: AuthorityOptions) -> Authority {
    remote_access_core::unstable::authority(options, Arc::new(store(redis)), Arc::new(SystemClock)).unwrap()
}

fn record(id: &BuildId, n: u8) -> CredentialRecord {
    let mut record = CredentialRecord::new(
        id.clone(),
        format!("user{n}"),
        format!("SHA256:key{n}"),
        Secret::new(format!("pw{n}")),
        [n; 32],
    );
    record.builder_vnc_password = Some(Secret::new("builder".to_owned()));
    record
}

async fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .finish()
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_store_keeps_the_contract_atomically_and_with_expiries() {
    let redis = RedisServer::start();
    let store = store(&redis);
    let now = OffsetDateTime::now_utc();
    let keep_until = now + Duration::from_secs(3600);
    let one = BuildId::new("one").unwrap();
    let session = Session::new(one.clone(), Policy::default(), now, now).unwrap().with_vnc_port(Some(5901));
    assert_eq!(store.insert(session.clone(), record(&one, 1), keep_until).await.unwrap(), Insert::Done);

    // Each unique value clashes, live or tombstone; nothing of a refused insert is stored.
    let two = BuildId::new("two").unwrap();
    let fresh = |port| Session::new(two.clone(), Policy::default(), now, now).unwrap().with_vnc_port(port);
    let clash = |edit: fn(&mut CredentialRecord)| {
        let mut r = record(&two, 2);
        edit(&mut r);
        r
    };
    let cases: [(CredentialRecord, Option<u16>, Conflict); 4] = [
        (clash(|r| r.username = "user1".into()), None, Conflict::Username),
        (clash(|r| r.key_fingerprint = "SHA256:key1".into()), None, Conflict::Key),
        (clash(|r| r.password_digest = [1; 32]), None, Conflict::Password),
        (record(&two, 2), Some(5901), Conflict::VncPort),
    ];
    for (r, port, conflict) in cases {
        assert_eq!(store.insert(fresh(port), r, keep_until).await.unwrap(), Insert::Conflict(conflict));
    }
    assert!(store.session(&two).await.unwrap().is_none());
    let mut other = session.clone();
    other = other.with_vnc_port(None);
    assert_eq!(
        store.insert(other, record(&BuildId::new("x").unwrap(), 9), keep_until).await.unwrap(),
        Insert::Conflict(Conflict::BuildId)
    );

    // Reads give back what was written, secrets included.
    let found = store.credential_for_user("user1").await.unwrap().unwrap();
    assert_eq!(found.build_id, one);
    assert_eq!(found.vnc_password.expose(), "pw1");
    assert_eq!(found.password_digest, [1; 32]);
    assert_eq!(found.builder_vnc_password.unwrap().expose(), "builder");
    assert_eq!(store.session_for_vnc_port(5901).await.unwrap(), Some(one.clone()));
    assert_eq!(store.next_deadline().await.unwrap(), session.next_deadline().map(ceil_ms));

    // Every key carries an expiry at keep_until (the VNC port's at the deadline).
    for key in ["session:one", "credential:one", "user:user1", "key:SHA256:key1"] {
        let ms: i64 =
            redis_cli(&redis, &["PEXPIRETIME", &format!("remote-access:{key}")]).await.parse().unwrap();
        assert_eq!(ms, ceil_ms(keep_until).unix_timestamp_nanos() as i64 / 1_000_000, "{key}");
    }
    let port_expiry: i64 =
        redis_cli(&redis, &["PEXPIRETIME", "remote-access:vnc-port:5901"]).await.parse().unwrap();
    assert_eq!(port_expiry, ceil_ms(session.deadline()).unix_timestamp_nanos() as i64 / 1_000_000);

    // Compare-and-swap: a stale version loses; ending writes the tombstone (the first one
    // stays) and frees the VNC port.
    let current = store.session(&one).await.unwrap().unwrap();
    let mut ended = current.value.clone();
    ended.handle(remote_access_core::Input::Revoke { reason: "test".into() }, now);
    let first = Revocation::new(now, "first");
    assert!(!store.replace_session(ended.clone(), current.version + 1, Some(first.clone())).await.unwrap());
    assert!(store.replace_session(ended.clone(), current.version, Some(first.clone())).await.unwrap());
    let second = Revocation::new(now, "second");
    assert!(store.replace_session(ended.clone(), current.version + 1, Some(second)).await.unwrap());
    let tombstone = store.credential_for_build(&one).await.unwrap().unwrap();
    assert_eq!(tombstone.revoked.unwrap().reason, "first");
    assert_eq!(store.session_for_vnc_port(5901).await.unwrap(), None);
    assert_eq!(store.next_deadline().await.unwrap(), None);

    // Purging forgets the build and its indexes, and only builds ended before the cutoff.
    assert!(store.purge(now - Duration::from_secs(1)).await.unwrap().is_empty());
    assert_eq!(store.purge(now + Duration::from_secs(1)).await.unwrap(), std::slice::from_ref(&one));
    assert!(store.credential_for_user("user1").await.unwrap().is_none());
    assert!(store.session(&one).await.unwrap().is_none());
    // Only the KRL's list of ended builds' keys stays, until the build's latest end.
    assert_eq!(redis_cli(&redis, &["DBSIZE"]).await, "1", "nothing else left behind");
    assert_eq!(redis_cli(&redis, &["ZCARD", "remote-access:revoked-keys"]).await, "1");
    assert_eq!(store.revoked_fingerprints(now).await.unwrap(), ["SHA256:key1"]);
    store.purge(now + Duration::from_secs(30 * 86_400)).await.unwrap();
    assert_eq!(redis_cli(&redis, &["DBSIZE"]).await, "0", "nothing left behind once it passed");

    // Heartbeats: a silent instance is claimed once, by one caller, until the claim lapses; a
    // live one never. Forgetting it is refused once it has written a heartbeat since.
    store.heartbeat(7, now - Duration::from_secs(60)).await.unwrap();
    store.heartbeat(8, now).await.unwrap();
    let before = now - Duration::from_secs(30);
    let until = now + Duration::from_secs(60);
    let (first, second) = tokio::join!(
        store.claim_silent_instances(before, until),
        store.claim_silent_instances(before, until)
    );
    let mut claims = [first.unwrap(), second.unwrap()];
    claims.sort();
    assert_eq!(claims, [vec![], vec![7]]);
    let lapsed = until + Duration::from_secs(1);
    store.heartbeat(8, lapsed + Duration::from_secs(1)).await.unwrap(); // 8 lives on
    assert_eq!(
        store.claim_silent_instances(lapsed, lapsed).await.unwrap(),
        [7],
        "a lapsed claim is silent again"
    );
    store.heartbeat(7, now).await.unwrap(); // it came back
    store.forget_instance(7, lapsed).await.unwrap();
    let members = redis_cli(&redis, &["ZRANGE", "remote-access:instances", "0", "-1"]).await;
    assert_eq!(members.lines().collect::<Vec<_>>(), ["7", "8"], "a returned instance is not forgotten");
    store.forget_instance(8, now).await.unwrap();
    assert_eq!(redis_cli(&redis, &["ZCARD", "remote-access:instances"]).await, "2", "only a claimed one is");
    redis_cli(&redis, &["DEL", "remote-access:instances"]).await;

    // Something else writing under the prefix is an error, never a panic or a wrong answer.
    redis_cli(&redis, &["HSET", "remote-access:session:bad", "v", "0", "s", "{not json"]).await;
    let bad = store.session(&BuildId::new("bad").unwrap()).await;
    assert!(matches!(bad, Err(Error::StoreUnavailable { .. })), "{bad:?}");
}

fn ceil_ms(at: OffsetDateTime) -> OffsetDateTime {
    let ns = at.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos((ns + 999_999).div_euclid(1_000_000) * 1_000_000).unwrap()
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_redis_is_a_clear_error() {
    let bad = RedisStore::new(RedisOptions::new("http://example.invalid"));
    assert!(matches!(bad, Err(Error::InvalidInput { .. })), "{bad:?}");
    // TLS settings for a plain URL, and a CA that is no PEM, are refused without quoting the URL.
    let mut plain_with_ca = RedisOptions::new("redis://:secret@redis.internal:6379/0");
    plain_with_ca.tls_ca_pem = Some("-----BEGIN CERTIFICATE-----".to_owned());
    let plain = RedisStore::new(plain_with_ca).unwrap_err();
    assert!(plain.to_string().contains("use rediss://"), "{plain}");
    let mut bad_ca = RedisOptions::new("rediss://:secret@redis.internal:6380/0");
    bad_ca.tls_ca_pem =
        Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_owned());
    let unusable = RedisStore::new(bad_ca).unwrap_err();
    assert!(
        matches!(unusable, Error::InvalidInput { .. }) && unusable.to_string().contains("TLS CA"),
        "{unusable}"
    );
    for err in [&plain, &unusable] {
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let mut options = RedisOptions::new(format!("redis://127.0.0.1:{}/0", free_port()));
    options.timeout = Duration::from_millis(500);
    let nowhere = RedisStore::new(options).unwrap();
    let err = nowhere.ping().await.unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err:?}");
}

/// TLS to Redis (`rediss://`) against a real `redis-server` that serves only TLS and asks for
/// client certificates: every wrong setting is refused by the TLS handshake (and shows as the
/// store being unavailable, so the authority fails closed), and with the platform's CA and a
/// client certificate two gateways share the Redis: a login through one with the real `ssh`,
/// a revocation through the platform's authority refused on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_a_redis_over_tls_with_a_private_ca_and_client_certificates() {
    let server_tls = TlsIdentity::generate(&["127.0.0.1"]).unwrap();
    let client_tls = TlsIdentity::generate(&["gateway.fleet.example"]).unwrap();
    let redis = RedisServer::start_tls(
        &server_tls.certificate_pem(),
        server_tls.private_key_pem().expose(),
        &client_tls.certificate_pem(),
    );
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let tls_options = |ca: Option<&TlsIdentity>, client: Option<&TlsIdentity>| {
        let mut options = RedisOptions::new(redis.url());
        options.tls_ca_pem = ca.map(TlsIdentity::certificate_pem);
        options.tls_client = client.map(|c| (c.certificate_pem(), c.private_key_pem()));
        options
    };
    for (why, options) in [
        ("no client certificate", tls_options(Some(&server_tls), None)),
        ("the system's roots, which do not know this CA", tls_options(None, Some(&client_tls))),
        ("another CA", tls_options(Some(&client_tls), Some(&client_tls))),
        ("plain RESP to the TLS port", RedisOptions::new(redis.url().replacen("rediss://", "redis://", 1))),
    ] {
        let store = RedisStore::new(options).unwrap();
        let err = store.ping().await.unwrap_err();
        assert!(matches!(err, Error::StoreUnavailable { .. }), "{why}: {err:?}");
    }

    let on_tls = || {
        let mut options = AuthorityOptions::default();
        options.store = StoreOptions::Redis(tls_options(Some(&server_tls), Some(&client_tls)));
        Authority::new(options).unwrap()
    };
    let builder = Sshd::start();
    let host_key = HostKey::generate().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut fleet = Vec::new();
    for host in ["127.0.0.1", "127.0.0.2"] {
        let authority = on_tls();
        let mut options = gateway_options();
        options.host_key = Some(host_key.clone());
        let running =
            Gateway::new(authority.clone(), options).unwrap().start(&format!("{host}:0")).await.unwrap();
        fleet.push(Member { authority, running, host: host.to_owned() });
    }
    let platform = on_tls();
    let creds = platform.issue(request("fleet-tls", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let via_a = fleet[0].script(&platform, &host_key, &creds, scratch.path()).await;
    let via_b = fleet[1].script(&platform, &host_key, &creds, scratch.path()).await;
    let (code, stdout, stderr) = run_script(&via_a, &["echo over-tls"]).await;
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.starts_with("over-tls"), "{stdout}");

    platform.revoke(creds.build_id(), "revoked over TLS").await.unwrap();
    for script in [&via_a, &via_b] {
        let (code, _, stderr) = run_script(script, &["true"]).await;
        assert_eq!(code, 255, "{stderr}");
    }
    let refused = fleet[1].authority.verify_ssh(creds.username(), creds.public_key()).await;
    assert!(matches!(refused, Err(Error::AccessDenied { reason: DenialReason::Revoked, .. })), "{refused:?}");
    for m in fleet {
        m.running.stop().await.unwrap();
    }
}

/// One gateway of a fleet: its own authority and store connections, the fleet's host key, on
/// its own loopback address.
struct Member {
    authority: Authority,
    running: RunningGateway,
    host: String,
}

async fn member(redis: &RedisServer, host_key: &HostKey, host: &str, options: AuthorityOptions) -> Member {
    member_with(redis, host_key, host, options, gateway_options()).await
}

/// The same with `gateway_options` (the host key set here).
async fn member_with(
    redis: &RedisServer,
    host_key: &HostKey,
    host: &str,
    options: AuthorityOptions,
    mut gateway_options: remote_access_core::GatewayOptions,
) -> Member {
    let authority = authority_on(redis, options);
    gateway_options.host_key = Some(host_key.clone());
    let gateway = Gateway::new(authority.clone(), gateway_options).unwrap();
    let running = gateway.start(&format!("{host}:0")).await.unwrap();
    Member { authority, running, host: host.to_owned() }
}

impl Member {
    async fn script(
        &self,
        platform: &Authority,
        host_key: &HostKey,
        creds: &remote_access_core::Credentials,
        dir: &std::path::Path,
    ) -> std::path::PathBuf {
        let name = format!("{}-{}.sh", creds.build_id(), self.host);
        posix_script_at(platform, host_key, (&self.host, self.running.local_addr().port()), creds, dir, &name)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_redis_and_a_revocation_through_one_cuts_the_others() {
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let host_key = HostKey::generate().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut fleet = Vec::new();
    for host in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        fleet.push(member(&redis, &host_key, host, AuthorityOptions::default()).await);
    }
    // The platform's API process: issues and revokes, serves no connections.
    let platform = authority_on(&redis, AuthorityOptions::default());
    let creds = platform.issue(request("fleet-1", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());

    // The same credentials work through every gateway.
    let mut scripts = Vec::new();
    for m in &fleet {
        let script = m.script(&platform, &host_key, &creds, scratch.path()).await;
        let (code, stdout, stderr) = run_script(&script, &["echo through; printenv FCI_BUILD_DIR"]).await;
        assert_eq!(code, 0, "via {}: {stdout} {stderr}", m.host);
        assert!(stdout.starts_with("through"), "{stdout}");
        scripts.push(script);
    }

    // Shells stay open on gateways B and C; the revocation goes through gateway A's authority.
    let mut events_b = fleet[1].authority.subscribe();
    let live_b = start_long_script(&scripts[1]).await;
    let live_c = start_long_script(&scripts[2]).await;
    next_event(&mut events_b, "connected").await;
    // Both shells are in the shared session (the earlier commands' disconnects may still be
    // on their way).
    eventually("both connections are in the shared session", || async {
        platform.session(creds.build_id()).await.unwrap().live_connections().count() == 2
    })
    .await;

    let revoked_at = Instant::now();
    fleet[0].authority.revoke(creds.build_id(), "revoked through gateway A").await.unwrap();
    let (code_b, stderr_b) = exit_of(live_b).await;
    let (code_c, stderr_c) = exit_of(live_c).await;
    let took = revoked_at.elapsed();
    assert_ne!(code_b, 0);
    assert_ne!(code_c, 0);
    for stderr in [&stderr_b, &stderr_c] {
        assert!(stderr.contains("remote access to this build has ended"), "{stderr}");
    }
    eprintln!("revoke through A → connections on B and C cut: {took:?}");

    // The tombstone refuses everywhere, and through the platform's own check.
    for (m, script) in fleet.iter().zip(&scripts) {
        let (code, _, stderr) = run_script(script, &["true"]).await;
        assert_eq!(code, 255, "via {}: {stderr}", m.host);
    }
    let refused = platform.verify_ssh(creds.username(), creds.public_key()).await;
    assert!(matches!(refused, Err(Error::AccessDenied { reason: DenialReason::Revoked, .. })), "{refused:?}");
    for m in fleet {
        m.running.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_logins_are_refused_and_connections_cut_then_service_resumes() {
    let mut redis = RedisServer::start();
    let builder = Sshd::start();
    let host_key = HostKey::generate().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut options = AuthorityOptions::default();
    options.max_store_outage = Duration::from_secs(3);
    let metrics_port = free_port();
    let mut gateway_options = gateway_options();
    gateway_options.metrics_address = Some(std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let gateway = member_with(&redis, &host_key, "127.0.0.1", options, gateway_options).await;
    assert_eq!(http(metrics_port, "GET", "/healthz").await.0, 200);
    let mut events = gateway.authority.subscribe();
    let platform = authority_on(&redis, AuthorityOptions::default());
    let creds = platform.issue(request("outage-1", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    // The steps are done, so the user's last connection closing would be a logout: the
    // outage's cut must not count as one.
    platform.steps_completed(creds.build_id()).await.unwrap();
    let deadline = platform.session(creds.build_id()).await.unwrap().deadline();
    let script = gateway.script(&platform, &host_key, &creds, scratch.path()).await;
    let live = start_long_script(&script).await;
    next_event(&mut events, "connected").await;
    // A second build whose deadline passes while Redis is gone: 2 s of grace from now.
    let mut short = request("outage-2", builder.builder());
    let mut policy = Policy::default();
    policy.grace = Duration::from_secs(2);
    short.policy = Some(policy);
    let short_creds = platform.issue(short).await.unwrap();
    builder.authorize(&short_creds.authorized_keys_line());
    platform.steps_completed(short_creds.build_id()).await.unwrap();
    let short_script = gateway.script(&platform, &host_key, &short_creds, scratch.path()).await;

    redis.kill();
    let lost_at = Instant::now();
    // New logins are refused (the gateway drops the connection: it cannot check the key).
    let (code, _, stderr) = run_script(&script, &["true"]).await;
    assert_eq!(code, 255, "{stderr}");
    // The health check tells the load balancer (from the next ping: one a second); the
    // metrics say why logins fail.
    let mut health = http(metrics_port, "GET", "/healthz").await;
    for _ in 0..50 {
        if health.0 != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = http(metrics_port, "GET", "/healthz").await;
    }
    let (status, why) = health;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("the session store does not answer"), "{why}");
    let (_, text) = http(metrics_port, "GET", "/metrics").await;
    assert_eq!(metric(&text, "remote_access_store_up"), 0.0, "{text}");
    // The ping that failed first is what refused the login (fail closed).
    assert!(
        metric(&text, "remote_access_logins_refused_total{protocol=\"ssh\",reason=\"store_unavailable\"}")
            >= 1.0,
        "{text}"
    );
    // The live connection is cut once the outage passes the bound, with an event.
    let (code, _) = exit_of(live).await;
    let cut_after = lost_at.elapsed();
    assert_ne!(code, 0);
    let event = next_event(&mut events, "store_unreachable").await;
    assert_eq!(event.build_id, *creds.build_id());
    assert!(event.reason.contains("fail closed"), "{}", event.reason);
    assert!(cut_after >= Duration::from_secs(2), "cut only after the bound: {cut_after:?}");
    eprintln!("Redis killed → live connection cut after {cut_after:?} (bound 3 s, pinged every 1 s)");

    // Redis comes back with its data. The cut connection's end, which the outage held back,
    // is recorded as let go by the gateway, not as a logout: nothing is left counted and the
    // session goes on, its deadline unchanged.
    redis.restart();
    eventually("the held-back disconnect is recorded", || async {
        matches!(platform.session(creds.build_id()).await, Ok(s) if s.live_connections().count() == 0)
    })
    .await;
    let session = platform.session(creds.build_id()).await.unwrap();
    assert!(!session.is_ended(), "{:?}", session.end());
    assert_eq!(session.deadline(), deadline);
    // The build whose deadline passed meanwhile is over: expired, and its login refused.
    let (code, _, stderr) = run_script(&short_script, &["true"]).await;
    assert_eq!(code, 255, "{stderr}");
    let ended = platform.session(short_creds.build_id()).await.unwrap();
    assert_eq!(ended.end().map(|(reason, _)| reason.code()), Some("grace_elapsed"));
    // The same credentials work again, and leaving now is the logout that ends the session.
    let back = Instant::now();
    loop {
        let (code, stdout, stderr) = run_script(&script, &["echo back"]).await;
        if code == 0 {
            assert_eq!(stdout.trim(), "back");
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(30), "service never resumed: {stderr}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eventually("the logout ends the session", || async {
        platform.session(creds.build_id()).await.unwrap().end().is_some_and(|(r, _)| r.code() == "logged_out")
    })
    .await;
    assert_eq!(http(metrics_port, "GET", "/healthz").await.0, 200);
    gateway.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_change_feed_survives_its_liveness_probe_and_reports_ends() {
    let redis = RedisServer::start();
    let store = store(&redis);
    let (sender, mut notices) = tokio::sync::mpsc::channel(16);
    let watching = tokio::spawn(async move { store.watch(sender).await });
    assert_eq!(
        notices.recv().await,
        Some(remote_access_core::unstable::Notice::Missed),
        "first: check everything"
    );
    // Past the first probe (every 5 s): a failed probe would start over with another `Missed`.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    redis_cli(&redis, &["PUBLISH", "remote-access:ended", "not a build id!"]).await;
    redis_cli(&redis, &["PUBLISH", "remote-access:ended", "build-7"]).await;
    let next = notices.recv().await;
    assert_eq!(next, Some(remote_access_core::unstable::Notice::Ended(BuildId::new("build-7").unwrap())));
    assert!(notices.try_recv().is_err(), "the malformed message was dropped, nothing else came");
    drop(notices);
    tokio::time::timeout(Duration::from_secs(10), watching)
        .await
        .expect("stops once nobody listens")
        .unwrap();
}

/// The reconnect window lives in the shared session: a user whose connection through gateway
/// A dropped may come back through gateway B; and when nobody comes back, whichever gateway's
/// housekeeping sees the window close ends the session as `connection_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_dropped_on_one_gateway_may_reconnect_through_another() {
    use crate::drops::Shell;
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let host_key = HostKey::generate().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let a = member(&redis, &host_key, "127.0.0.1", AuthorityOptions::default()).await;
    let b = member(&redis, &host_key, "127.0.0.2", AuthorityOptions::default()).await;
    let platform = authority_on(&redis, AuthorityOptions::default());
    let mut events = platform.subscribe();
    let mut request = request("fleet-drop", builder.builder());
    let mut policy = Policy::default();
    policy.reconnect_window = Duration::from_secs(3);
    request.policy = Some(policy);
    let creds = platform.issue(request).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    platform.steps_completed(creds.build_id()).await.unwrap();
    let (script_a, script_b) = (
        a.script(&platform, &host_key, &creds, scratch.path()).await,
        b.script(&platform, &host_key, &creds, scratch.path()).await,
    );
    let session = || async { platform.session(creds.build_id()).await.unwrap() };

    let shell = Shell::open(&script_a).await;
    shell.kill_hard();
    eventually("gateway A recorded the drop", || async { session().await.reconnect_by().is_some() }).await;

    // Through gateway B, inside the window: the window closes and the build goes on.
    let shell = Shell::open(&script_b).await;
    let now = session().await;
    assert!(!now.is_ended(), "{:?}", now.end());
    assert_eq!(now.reconnect_by(), None);

    // Dropped again, and nobody comes back: the fleet ends it when the window closes.
    shell.kill_hard();
    eventually("the session ended", || async { session().await.is_ended() }).await;
    assert_eq!(
        session().await.end().map(|(r, _)| r.clone()),
        Some(remote_access_core::EndReason::ConnectionLost)
    );
    let ended =
        std::iter::from_fn(|| events.try_next()).filter(|e| e.kind.as_str() == "connection_lost").count();
    assert!(ended <= 1);
    let (code, _, _) = run_script(&script_a, &["true"]).await;
    assert_eq!(code, 255, "refused after the window, on every gateway");
    a.running.stop().await.unwrap();
    b.running.stop().await.unwrap();
}

/// Runs of failed logins (`add_failure`, `failures`, `take_back_failures`): the same contract
/// from the in-memory store and from Redis, and Redis forgets a run 15 minutes after its last
/// failure by itself.
#[tokio::test]
async fn runs_of_failed_logins_keep_one_contract_in_memory_and_on_redis() {
    use remote_access_core::unstable::{FAILURE_MEMORY, MemoryStore};
    let redis = RedisServer::start();
    let stores: [(&str, Box<dyn Store>); 2] =
        [("memory", Box::new(MemoryStore::new())), ("redis", Box::new(store(&redis)))];
    for (name, store) in stores {
        let count = |run: Option<remote_access_core::unstable::Failures>| run.map(|run| run.count);
        assert_eq!(store.failures("net").await.unwrap(), None, "{name}");
        assert_eq!(store.add_failure("net", Some("user:a")).await.unwrap(), 1, "{name}");
        assert_eq!(store.add_failure("net", Some("user:a")).await.unwrap(), 2, "{name}");
        assert_eq!(store.add_failure("net", None).await.unwrap(), 3, "{name}");
        for tag in ["b", "c", "d", "e", "f"] {
            store.add_failure("net", Some(&format!("user:{tag}"))).await.unwrap();
        }
        let run = store.failures("net").await.unwrap().unwrap();
        assert_eq!(run.count, 8, "{name}");
        assert!(run.ago < Duration::from_secs(5), "{name}: {run:?}");
        // A success takes back its own tag's failures only; past four tags, failures count
        // but nobody's success takes them back.
        assert_eq!(count(store.take_back_failures("net", Some("user:a")).await.unwrap()), Some(6), "{name}");
        assert_eq!(count(store.take_back_failures("net", Some("user:a")).await.unwrap()), Some(6), "{name}");
        assert_eq!(count(store.take_back_failures("net", Some("user:f")).await.unwrap()), Some(6), "{name}");
        assert_eq!(count(store.take_back_failures("net", Some("user:b")).await.unwrap()), Some(5), "{name}");
        assert_eq!(count(store.failures("other").await.unwrap()), None, "{name}: per key");
        // A run whose failures are all taken back is gone; so is one taken back whole.
        store.add_failure("mine", Some("user:z")).await.unwrap();
        assert_eq!(store.take_back_failures("mine", Some("user:z")).await.unwrap(), None, "{name}");
        assert_eq!(store.failures("mine").await.unwrap(), None, "{name}");
        assert_eq!(store.take_back_failures("net", None).await.unwrap(), None, "{name}");
        assert_eq!(store.failures("net").await.unwrap(), None, "{name}");
    }
    let redis_store = store(&redis);
    redis_store.add_failure("expiring", None).await.unwrap();
    let ttl: u64 = redis_cli(&redis, &["PTTL", "remote-access:failures:expiring"]).await.parse().unwrap();
    let memory = u64::try_from(FAILURE_MEMORY.as_millis()).unwrap();
    assert!(ttl <= memory && ttl > memory - 60_000, "PTTL {ttl}");
}

/// The KRL from any process of the fleet lists the keys of builds ended through another
/// (ssh-keygen reads it), and the index behind it forgets a build once its latest end passed.
#[tokio::test]
async fn every_authority_on_redis_revokes_the_keys_of_builds_ended_anywhere() {
    let redis = RedisServer::start();
    let (platform, gateway_side) = (
        authority_on(&redis, AuthorityOptions::default()),
        authority_on(&redis, AuthorityOptions::default()),
    );
    let request = |id: &str| {
        remote_access_core::BuildRequest::new(
            BuildId::new(id).unwrap(),
            remote_access_core::Trigger::Manual,
            true,
        )
    };
    // A build started almost its maximum duration ago: its certificate expires in 4 s.
    let mut short = request("krl-1");
    let mut policy = Policy::default();
    policy.max_build_duration = Duration::from_secs(3600);
    short.policy = Some(policy);
    short.started_at = Some(OffsetDateTime::now_utc() - Duration::from_secs(3600 - 4));
    let short = platform.issue(short).await.unwrap();
    let long = platform.issue(request("krl-2")).await.unwrap();
    let live = platform.issue(request("krl-3")).await.unwrap();
    for creds in [&short, &long] {
        platform.revoke(creds.build_id(), "ended").await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let query = |krl: Vec<u8>, creds: &remote_access_core::Credentials| {
        let (krl_path, key_path) = (dir.path().join("krl"), dir.path().join("k.pub"));
        std::fs::write(&krl_path, krl).unwrap();
        std::fs::write(&key_path, format!("{}\n", creds.public_key())).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(&krl_path)
            .arg(&key_path)
            .finish();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let krl = gateway_side.revoked_keys().await.unwrap();
    assert!(query(krl.clone(), &short).contains("REVOKED"));
    assert!(query(krl.clone(), &long).contains("REVOKED"));
    assert!(query(krl, &live).contains("ok"));
    // Purging the ended builds' records (a tombstone retention shorter than a build's maximum
    // duration) leaves their keys on the list while their certificates are valid.
    let purged = store(&redis).purge(OffsetDateTime::now_utc() + Duration::from_secs(1)).await.unwrap();
    assert_eq!(purged.len(), 2);
    assert!(query(gateway_side.revoked_keys().await.unwrap(), &long).contains("REVOKED"));
    // Past its latest end a certificate is refused anyway: the build leaves the list.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let krl = gateway_side.revoked_keys().await.unwrap();
    assert!(query(krl.clone(), &short).contains("ok"), "an expired build is no longer listed");
    assert!(query(krl, &long).contains("REVOKED"));
}
