//! Replacing a gateway without downtime: a second gateway listens on the same SSH and VNC
//! ports (`GatewayOptions::reuse_port`), then the first drains (`RunningGateway::drain`). The
//! real `ssh` through both to a real `sshd`, and VNC to a real x11vnc. `docs/scaling.md`,
//! "Restarting without downtime".

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::builds::*;
use crate::vnc_viewer::VncViewer;
use remote_access_core::{AuthorityOptions, Gateway, GatewayOptions, HostKey, Secret};
use remote_access_test_peers::*;

/// Connections to `addr` one after another until `stop`, each from another /24 (the rate
/// limits are per address and network), each until the gateway's SSH identification arrives:
/// how many were opened, and what went wrong with those that did not get it (a reset).
fn probe(addr: SocketAddr, task: u8, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut opened, mut failed) = (0usize, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let from = IpAddr::from([127, 3 + task, (opened % 250) as u8, 1 + (opened / 250 % 250) as u8]);
            opened += 1;
            let answered = async {
                let mut tcp = connect_from(from, addr).await?;
                let mut identification = [0u8; 8];
                tcp.read_exact(&mut identification).await?;
                Ok::<_, std::io::Error>(identification)
            };
            match answered.await {
                Ok(identification) if &identification == b"SSH-2.0-" => {}
                other => failed.push(format!("{other:?}")),
            }
        }
        (opened, failed)
    })
}

fn reusing(host_key: &HostKey) -> GatewayOptions {
    let mut options = gateway_options();
    options.host_key = Some(host_key.clone());
    options.reuse_port = true;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_serves_its_live_session_while_new_logins_go_to_the_next() {
    requests_migrate();
    let builder = Sshd::start();
    let screen = x11vnc("restart1");
    let vnc_port = free_port();
    let mut authority_options = AuthorityOptions::default();
    authority_options.vnc_ports = vec![vnc_port];
    let authority = authority(authority_options);
    let host_key = HostKey::generate().unwrap();
    let old = Gateway::new(authority.clone(), reusing(&host_key)).unwrap();
    let mut old_running = old.start("127.0.0.1:0").await.unwrap();
    let addr = old_running.local_addr();

    // Without reuse_port, the ports are taken.
    let mut plain = gateway_options();
    plain.host_key = Some(host_key.clone());
    let taken = Gateway::new(authority.clone(), plain).unwrap().start(&addr.to_string()).await;
    assert!(taken.is_err(), "a second gateway without reuse_port cannot listen there");

    let mut route = builder.builder();
    route.vnc_port = Some(screen.port);
    let mut request = request("restart-1", route);
    request.builder_vnc_password = Some(Secret::new(screen.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script = posix_script(&authority, &old, addr.port(), &creds, scratch.path(), "restart.sh").await;
    let mut events = authority.subscribe();
    let mut live = EchoSession::open(&script).await;
    next_event(&mut events, "connected").await;
    assert_eq!(old.stats().ssh_connections, 1, "the live session is on the first gateway");

    // The next gateway, on the same SSH and VNC ports.
    let new = Gateway::new(authority.clone(), reusing(&host_key)).unwrap();
    let new_running = new.start(&addr.to_string()).await.unwrap();

    // Logins one after another, from before the drain to after it: none may be refused.
    let (stop, logins) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let logging_in = tokio::spawn({
        let (stop, logins, script) = (stop.clone(), logins.clone(), script.clone());
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (code, stdout, stderr) = run_script(&script, &["echo in"]).await;
                if (code, stdout.trim()) != (0, "in") {
                    failures.push(format!("exit {code}: {stderr}"));
                }
                logins.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }
    });
    let logged_in = |at_least: usize| {
        let logins = logins.clone();
        async move {
            while logins.load(Ordering::Relaxed) < at_least {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let probing: Vec<_> = (0..3u8).map(|task| probe(addr, task, stop.clone())).collect();
    logged_in(3).await;
    let draining = tokio::spawn(async move {
        let drained = old_running.drain(Duration::from_secs(600)).await;
        (drained, old_running)
    });
    let before = logins.load(Ordering::Relaxed);
    logged_in(before + 6).await;

    // The first gateway holds only the live session now; it still answers, and VNC on the
    // shared port reaches the builder's screen through the next gateway.
    settle(&old, |s| s.ssh_connections == 1 && s.vnc_connections == 0).await;
    assert_eq!(live.say("still here").await.as_deref(), Some("got still here"));
    let mut viewer = VncViewer::connect(vnc_port, creds.vnc_password().expose()).await;
    viewer.refresh().await;
    drop(viewer);
    assert_eq!(old.stats().vnc_connections, 0, "VNC went to the next gateway");

    stop.store(true, Ordering::Relaxed);
    let failures = logging_in.await.unwrap();
    let total = logins.load(Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of {total} logins failed: {failures:?}", failures.len());
    let (mut probes, mut unanswered) = (0, Vec::new());
    for task in probing {
        let (count, failed) = task.await.unwrap();
        probes += count;
        unanswered.extend(failed);
    }
    assert!(
        unanswered.is_empty(),
        "{} of {probes} connections got no SSH identification: {unanswered:?}",
        unanswered.len()
    );
    eprintln!(
        "{total} logins ({} after the drain began) and {probes} connections, none refused",
        total - before
    );

    // The user leaves: the first gateway has nothing left and stops, long before its 600 s.
    assert!(live.exit().await.success());
    let (drained, _old_running) =
        tokio::time::timeout(Duration::from_secs(60), draining).await.unwrap().unwrap();
    drained.unwrap();
    assert_eq!(old.stats().ssh_connections, 0);
    let session = authority.session(creds.build_id()).await.unwrap();
    assert!(!session.is_ended(), "the steps still run: leaving is no logout");

    // And the next gateway serves on alone.
    let (code, stdout, stderr) = run_script(&script, &["echo in"]).await;
    assert_eq!((code, stdout.trim()), (0, "in"), "{stderr}");
    new_running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_drain_deadline_live_sessions_are_let_go_not_logged_out() {
    let builder = Sshd::start();
    let authority = authority(AuthorityOptions::default());
    let host_key = HostKey::generate().unwrap();
    let old = Gateway::new(authority.clone(), reusing(&host_key)).unwrap();
    let mut old_running = old.start("127.0.0.1:0").await.unwrap();
    let addr = old_running.local_addr();
    let creds = authority.issue(request("restart-2", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script = posix_script(&authority, &old, addr.port(), &creds, scratch.path(), "restart.sh").await;
    let mut events = authority.subscribe();
    let mut live = EchoSession::open(&script).await;
    next_event(&mut events, "connected").await;
    // After the steps, the user leaving would end the build: being let go must not.
    authority.steps_completed(creds.build_id()).await.unwrap();

    old_running.drain(Duration::from_secs(1)).await.unwrap();
    let let_go = next_event(&mut events, "disconnected").await;
    assert!(let_go.reason.contains("closed by the gateway shutting down"), "{}", let_go.reason);
    assert_eq!(live.say("anyone?").await, None, "the session was let go");
    assert!(!live.exit().await.success());
    assert_eq!(old.stats().ssh_connections, 0);
    let session = authority.session(creds.build_id()).await.unwrap();
    assert!(!session.is_ended(), "let go at the drain deadline is no logout: {:?}", session.end());

    // The user logs in again through the next gateway.
    let new = Gateway::new(authority.clone(), reusing(&host_key)).unwrap();
    let new_running = new.start(&addr.to_string()).await.unwrap();
    let (code, stdout, stderr) = run_script(&script, &["echo back"]).await;
    assert_eq!((code, stdout.trim()), (0, "back"), "{stderr}");
    new_running.stop().await.unwrap();
}
