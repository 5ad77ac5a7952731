//! Failed logins counted for the whole fleet: two gateways sharing a real Redis allow a network
//! no more guesses than one gateway does, the platform hears of guesses against a build once
//! whichever gateways they reached, and the owner's own success takes back only their own
//! failures. The guesser is russh offering wrong keys from loopback addresses of its own; the
//! owner is the real `ssh` to a real `sshd`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::builds::*;
use remote_access_core::unstable::{RedisStore, Store};
use remote_access_core::{
    Authority, AuthorityOptions, Gateway, HostKey, RedisOptions, RunningGateway, StoreOptions,
};
use remote_access_test_peers::*;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};

const REFUSED: &str = "remote_access_logins_refused_total{protocol=\"ssh\",reason=";
const BACKED_OFF: &str = "remote_access_logins_refused_total{protocol=\"ssh\",reason=\"backing_off\"}";

/// SSH logins refused, for any reason.
fn refused(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(REFUSED))
        .filter_map(|line| line.split(' ').nth(1)?.parse::<f64>().ok())
        .sum()
}

fn on(redis: &RedisServer) -> Authority {
    let mut options = AuthorityOptions::default();
    options.store = StoreOptions::Redis(RedisOptions::new(redis.url()));
    Authority::new(options).unwrap()
}

/// Two gateways on one Redis (each its own authority, as separate processes would have).
async fn two_gateways(redis: &RedisServer, failures_before_backoff: usize) -> Vec<(Gateway, RunningGateway)> {
    let host_key = HostKey::generate().unwrap();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let mut options = gateway_options();
        options.host_key = Some(host_key.clone());
        options.failures_before_backoff = failures_before_backoff;
        let gateway = Gateway::new(on(redis), options).unwrap();
        let running = gateway.start("127.0.0.1:0").await.unwrap();
        gateways.push((gateway, running));
    }
    gateways
}

/// An SSH client from `from` that has finished its key exchange with `to`.
async fn client_from(from: IpAddr, to: SocketAddr) -> russh::client::Handle<AnyKey> {
    let tcp = connect_from(from, to).await.unwrap();
    russh::client::connect_stream(Arc::new(russh::client::Config::default()), tcp, AnyKey).await.unwrap()
}

/// Logs in as `user` with a fresh random key; the gateway refuses (or closes) either way.
async fn guess(client: &mut russh::client::Handle<AnyKey>, user: &str) {
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
    if let Ok(outcome) = client.authenticate_publickey(user.to_owned(), key).await {
        assert!(!outcome.success(), "a random key got in");
    }
}

/// A guess through `gateway`: whether it was checked (refused as a wrong key or an unknown
/// user), or refused unchecked because the network is backed off, read from the gateway's
/// own counters.
async fn checked(gateway: &Gateway, client: &mut russh::client::Handle<AnyKey>, user: &str) -> bool {
    let before = gateway.metrics_text();
    guess(client, user).await;
    let after = gateway.metrics_text();
    assert_eq!(refused(&after) - refused(&before), 1.0, "one verdict per guess:\n{after}");
    metric(&after, BACKED_OFF) == metric(&before, BACKED_OFF)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_through_two_gateways_are_backed_off_as_through_one() {
    let redis = RedisServer::start();
    let gateways = two_gateways(&redis, 4).await;
    let (a, b) = (&gateways[0], &gateways[1]);
    // Both connections are in before any guess, so neither gateway's admission could stop them:
    // what stops the fifth guess is the check made before each credential.
    let guesser = IpAddr::from([127, 9, 1, 7]);
    let mut to_a = client_from(guesser, a.1.local_addr()).await;
    let mut to_b = client_from(guesser, b.1.local_addr()).await;
    // Four failures in a row, two through each gateway, are each checked...
    for n in 1..=4 {
        let (gateway, client) = if n % 2 == 1 { (&a.0, &mut to_a) } else { (&b.0, &mut to_b) };
        assert!(checked(gateway, client, "nobody").await, "guess {n} was not checked");
    }
    // ... and the fifth is not, through either: each has seen only two of them itself, and
    // alone would check two more.
    assert!(!checked(&a.0, &mut to_a, "nobody").await, "the fleet's fifth guess was checked");
    let store = RedisStore::new(RedisOptions::new(redis.url())).unwrap();
    let run = store.failures("network:127.9.1.0/24").await.unwrap().expect("the network's run");
    assert_eq!(run.count, 4, "{run:?}");
    // New connections from that network are closed at once by both now, before any round trip
    // to the store: each gateway's own count is the fleet's since its last look.
    for (gateway, running) in [a, b] {
        let tcp = connect_from(guesser, running.local_addr()).await.unwrap();
        let config = Arc::new(russh::client::Config::default());
        assert!(russh::client::connect_stream(config, tcp, AnyKey).await.is_err(), "closed at once");
        let closed =
            "remote_access_connections_closed_before_login_total{protocol=\"ssh\",reason=\"backing_off\"}";
        assert_eq!(metric(&gateway.metrics_text(), closed), 1.0);
    }
    // Another network is not held back by it.
    let mut elsewhere = client_from(IpAddr::from([127, 9, 2, 7]), b.1.local_addr()).await;
    assert!(checked(&b.0, &mut elsewhere, "nobody").await);
    for (_, running) in gateways {
        running.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_hears_of_guesses_spread_over_the_fleet_once_and_the_owner_gets_in() {
    let redis = RedisServer::start();
    let builder = Sshd::start();
    // A backoff far away: here every guess comes from a network of its own anyway.
    let gateways = two_gateways(&redis, 1000).await;
    let platform = on(&redis);
    let mut log = platform.fleet_events(None).await.unwrap();
    let creds = platform.issue(request("guessed", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let user = creds.username().to_owned();
    // Twelve wrong keys, from twelve networks, alternating between the gateways: six each, so
    // neither reached the ten of a `guessing` event by itself.
    for n in 0..12u8 {
        let (gateway, running) = &gateways[usize::from(n % 2)];
        let mut client = client_from(IpAddr::from([127, 10, n, 1]), running.local_addr()).await;
        assert!(checked(gateway, &mut client, &user).await);
    }
    // The owner mistypes once from their own network, then logs in with the real `ssh`
    // through the other gateway: their failure against their own username is taken back.
    let owner = IpAddr::from([127, 0, 0, 1]);
    let mut client = client_from(owner, gateways[0].1.local_addr()).await;
    assert!(checked(&gateways[0].0, &mut client, &user).await);
    let store = RedisStore::new(RedisOptions::new(redis.url())).unwrap();
    assert_eq!(store.failures("network:127.0.0.0/24").await.unwrap().map(|run| run.count), Some(1));
    let scratch = tempfile::tempdir().unwrap();
    let port = gateways[1].1.local_addr().port();
    let script = posix_script(&platform, &gateways[1].0, port, &creds, scratch.path(), "owner.sh").await;
    let (code, _, stderr) = run_script(&script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(store.failures("network:127.0.0.0/24").await.unwrap(), None, "the owner's own failure");
    // The log: one `guessing` event, at ten, from whichever gateway saw the tenth.
    // Read until the owner's disconnect, then 3 s more: a second `guessing` would be a fault.
    let (mut guessing, mut kinds) = (Vec::new(), Vec::new());
    let mut wait = Duration::from_secs(60);
    while let Ok(next) = tokio::time::timeout(wait, log.next()).await {
        let next = next.unwrap();
        kinds.push(next.event.kind.as_str().to_owned());
        match next.event.kind.as_str() {
            "guessing" => guessing.push(next.event.reason),
            "disconnected" => wait = Duration::from_secs(3),
            _ => {}
        }
    }
    assert!(kinds.contains(&"disconnected".to_owned()), "{kinds:?}");
    assert_eq!(guessing.len(), 1, "{guessing:?} in {kinds:?}");
    assert!(guessing[0].starts_with("10 failed logins in a row (wrong SSH key)"), "{}", guessing[0]);
    // The owner's login ended the run against their key.
    assert_eq!(store.failures("build:guessed:ssh-key").await.unwrap(), None);
    for (_, running) in gateways {
        running.stop().await.unwrap();
    }
}
