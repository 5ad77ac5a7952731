//! The operator's HTTP endpoint (`GatewayOptions::metrics_address`), read with `curl` while
//! real clients use the gateway: the real `ssh` through it to a real `sshd`, a second SSH
//! client (russh) with a wrong key, an RFB client with a wrong password. Each counter moves
//! with what they did. (`tests/it/redis.rs` checks `/healthz` through a store outage.)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::builds::*;
use crate::vnc_viewer::VncViewer;
use remote_access_core::{AuthorityOptions, Gateway};
use remote_access_test_peers::*;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_follow_logins_refusals_cuts_and_bytes() {
    let builder = Sshd::start();
    let vnc_port = free_port();
    let mut authority_options = AuthorityOptions::default();
    authority_options.vnc_ports = vec![vnc_port];
    let authority = authority(authority_options);
    let metrics_port = free_port();
    let mut options = gateway_options();
    options.metrics_address = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let gateway = Gateway::new(authority.clone(), options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let addr = running.local_addr();

    let (status, before) = http(metrics_port, "GET", "/metrics").await;
    assert_eq!(status, 200, "{before}");
    assert!(before.contains("# TYPE remote_access_connections gauge\n"), "{before}");
    assert_eq!(metric(&before, "remote_access_connections{protocol=\"ssh\"}"), 0.0);
    assert_eq!(metric(&before, "remote_access_store_up"), 1.0);
    assert_eq!(http(metrics_port, "GET", "/healthz").await, (200, "ready\n".to_owned()));

    let mut route = builder.builder();
    route.vnc_port = Some(free_port()); // never reached: the password is wrong
    let creds = authority.issue(request("metrics-1", route)).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script = posix_script(&authority, &gateway, addr.port(), &creds, scratch.path(), "metrics.sh").await;
    let mut events = authority.subscribe();

    // A login with the real ssh, a wrong key from russh, a wrong VNC password.
    let (code, stdout, stderr) = run_script(&script, &["echo in"]).await;
    assert_eq!((code, stdout.trim()), (0, "in"), "{stderr}");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut client =
        russh::client::connect_stream(Arc::new(russh::client::Config::default()), tcp, AnyKey).await.unwrap();
    let wrong =
        PrivateKey::random(&mut russh::keys::key::safe_rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let refused = client
        .authenticate_publickey(creds.username(), PrivateKeyWithHashAlg::new(Arc::new(wrong), None))
        .await
        .unwrap();
    assert!(!refused.success());
    drop(client);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", vnc_port)).await.unwrap();
    let refused = VncViewer::login(Box::new(tcp), "not-it").await.err().unwrap();
    assert!(refused.contains("Authentication failed"), "{refused}");

    // A live session, cut by a revocation.
    let live = start_long_script(&script).await;
    next_event(&mut events, "connected").await;
    let (status, during) = http(metrics_port, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&during, "remote_access_connections{protocol=\"ssh\"}"), 1.0, "{during}");
    assert_eq!(metric(&during, "remote_access_builder_channels"), 1.0, "{during}");
    authority.revoke(creds.build_id(), "metrics test").await.unwrap();
    let (code, _) = exit_of(live).await;
    assert_ne!(code, 0);

    let after =
        eventually_metrics(metrics_port, |text| metric(text, "remote_access_cut_seconds_count") == 1.0).await;
    for (series, want) in [
        ("remote_access_logins_accepted_total{protocol=\"ssh\"}", 2.0),
        ("remote_access_logins_refused_total{protocol=\"ssh\",reason=\"wrong_key\"}", 1.0),
        ("remote_access_logins_refused_total{protocol=\"vnc\",reason=\"wrong_password\"}", 1.0),
        ("remote_access_connections{protocol=\"ssh\"}", 0.0),
    ] {
        assert_eq!(metric(&after, series), want, "{series}:\n{after}");
    }
    assert!(metric(&after, "remote_access_cut_seconds_sum") > 0.0, "{after}");
    assert!(metric(&after, "remote_access_cut_seconds_bucket{le=\"+Inf\"}") == 1.0, "{after}");
    // Both directions carried the two SSH sessions (tens of KiB with the key exchanges).
    assert!(metric(&after, "remote_access_user_bytes_total{direction=\"from_users\"}") > 4096.0, "{after}");
    assert!(metric(&after, "remote_access_user_bytes_total{direction=\"to_users\"}") > 4096.0, "{after}");
    assert!(metric(&after, "remote_access_store_round_trip_seconds_count") >= 1.0, "{after}");

    // What else the endpoint answers.
    let (status, head) = http(metrics_port, "HEAD", "/metrics").await;
    assert_eq!((status, head.as_str()), (200, ""));
    assert_eq!(http(metrics_port, "POST", "/metrics").await.0, 405);
    assert_eq!(http(metrics_port, "GET", "/admin").await.0, 404);
    running.stop().await.unwrap();
}

/// Scrapes until `want` holds of the text (a cut is recorded just after the client sees it).
async fn eventually_metrics(port: u16, want: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let (_, text) = http(port, "GET", "/metrics").await;
        if want(&text) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the metrics never showed it: {}", http(port, "GET", "/metrics").await.1);
}
