//! The fleet's event log (`Authority::fleet_events`): every authority's events, read from any
//! process and resumed after the last id handled. In memory (one process) and on a real Redis
//! shared by two gateways, with the real `ssh` through both to a real `sshd`.

use std::time::Duration;

use crate::builds::*;
use remote_access_core::{AuthorityOptions, FleetEvents, Gateway};
use remote_access_test_peers::*;

/// The next `n` events of the log, within a minute: (id, kind, build).
async fn read(events: &mut FleetEvents, n: usize) -> Vec<(String, String, String)> {
    let mut read = Vec::new();
    while read.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("an event within a minute");
        let next = next.unwrap();
        read.push((next.id, next.event.kind.as_str().to_owned(), next.event.build_id.to_string()));
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_the_log_is_this_processs_events_and_a_reader_resumes_after_an_id() {
    let builder = Sshd::start();
    let authority = authority(AuthorityOptions::default());
    let gateway = Gateway::new(authority.clone(), gateway_options()).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let mut log = authority.fleet_events(None).await.unwrap();
    let creds = authority.issue(request("fleet-mem", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script =
        posix_script(&authority, &gateway, running.local_addr().port(), &creds, scratch.path(), "m.sh").await;
    let (code, _, stderr) = run_script(&script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    let seen = read(&mut log, 3).await;
    let kinds: Vec<&str> = seen.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["issued", "connected", "disconnected"]);
    // A reader started after the first event reads on from there.
    let mut resumed = authority.fleet_events(Some(&seen[0].0)).await.unwrap();
    assert_eq!(read(&mut resumed, 2).await, seen[1..]);
    assert!(authority.fleet_events(Some("not an id")).await.is_err());
    // A gateway started again on the same authority goes on appending.
    running.stop().await.unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let script =
        posix_script(&authority, &gateway, running.local_addr().port(), &creds, scratch.path(), "m2.sh")
            .await;
    let (code, _, stderr) = run_script(&script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    let more = read(&mut log, 2).await;
    let kinds: Vec<&str> = more.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["connected", "disconnected"]);
    running.stop().await.unwrap();
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_platform_reads_every_gateways_events_and_resumes_after_a_restart() {
    use remote_access_core::{Authority, HostKey, RedisOptions, StoreOptions};
    let on = |redis: &RedisServer| {
        let mut options = AuthorityOptions::default();
        options.store = StoreOptions::Redis(RedisOptions::new(redis.url()));
        Authority::new(options).unwrap()
    };
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let host_key = HostKey::generate().unwrap();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let mut options = gateway_options();
        options.host_key = Some(host_key.clone());
        let gateway = Gateway::new(on(&redis), options).unwrap();
        let running = gateway.start("127.0.0.1:0").await.unwrap();
        gateways.push((gateway, running));
    }
    let platform = on(&redis);
    // The platform process runs its housekeeping too: its own events (issued) go to the log.
    let housekeeping = tokio::spawn({
        let platform = platform.clone();
        async move { platform.run_housekeeping(std::future::pending()).await }
    });
    let mut log = platform.fleet_events(None).await.unwrap();
    let creds = platform.issue(request("fleet-redis", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    for (n, (gateway, running)) in gateways.iter().enumerate() {
        let name = format!("r{n}.sh");
        let script =
            posix_script(&platform, gateway, running.local_addr().port(), &creds, scratch.path(), &name)
                .await;
        let (code, _, stderr) = run_script(&script, &["true"]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    // Issued by the platform, then a login through each gateway: five events from three
    // authorities, in the order each appended them.
    let seen = read(&mut log, 5).await;
    let mut kinds: Vec<&str> = seen.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds[0], "issued");
    kinds.sort_unstable();
    assert_eq!(kinds, ["connected", "connected", "disconnected", "disconnected", "issued"]);
    assert!(seen.iter().all(|(_, _, build)| build == "fleet-redis"));
    // A platform restarted (a new authority, a new reader) resumes after the last id it had
    // handled: it gets the rest and nothing twice.
    drop(log);
    let restarted = on(&redis);
    let mut resumed = restarted.fleet_events(Some(&seen[2].0)).await.unwrap();
    assert_eq!(read(&mut resumed, 2).await, seen[3..]);
    housekeeping.abort();
    for (_, running) in gateways {
        running.stop().await.unwrap();
    }
}
