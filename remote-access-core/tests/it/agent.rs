//! The builder agent's Rust API against a real gateway and a real `sshd` on 127.0.0.2: it
//! reconnects with backoff when the gateway goes away and comes back, refuses a gateway whose
//! host key is not the pinned one, and returns when the session ends.

use std::process::Stdio;
use std::time::Duration;

use crate::builds::*;
use remote_access_core::{
    AgentExit, AgentOptions, AuthorityOptions, Error, Gateway, GatewayOptions, HostKey, run_agent,
};
use remote_access_test_peers::*;

async fn script_works(script: &std::path::Path) -> bool {
    let mut run = script_command(script).arg("true").stdin(Stdio::null()).stderr(Stdio::null()).start();
    matches!(tokio::time::timeout(Duration::from_secs(60), run.wait()).await, Ok(Ok(status)) if status.success())
}

async fn eventually_works(script: &std::path::Path) {
    let start = std::time::Instant::now();
    while !script_works(script).await {
        assert!(start.elapsed() < Duration::from_secs(30), "the agent never (re)connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_the_gateway_restarts_and_stops_when_the_session_ends() {
    let sshd = Sshd::start_on("127.0.0.2");
    let authority = authority(AuthorityOptions::default());
    let mut options = GatewayOptions::default();
    options.host_key = Some(HostKey::generate().unwrap());
    let gateway = Gateway::new(authority.clone(), options).unwrap();
    // A port below the kernel's ephemeral range (32768 up): the gateway restarts on the same
    // address below, and while it is away another test's outgoing connection could take an
    // ephemeral port as its source port (the rebind then failed with "Address already in use").
    let mut ports = (20_000 + u16::try_from(std::process::id() % 5_000).unwrap()..32_000).step_by(7);
    let listener = loop {
        let port = ports.next().expect("a free port below the ephemeral range");
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            break listener;
        }
    };
    let addr = listener.local_addr().unwrap();
    let running = gateway.start_on(listener).unwrap();

    let mut route = sshd.builder();
    route.reverse_tunnel = true;
    let creds = authority.issue(crate::builds::request("agent-api", route)).await.unwrap();
    sshd.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script = posix_script(&authority, &gateway, addr.port(), &creds, scratch.path(), "connect.sh").await;

    let agent_options = |pinned: String| {
        let mut o = AgentOptions::new(
            addr.to_string(),
            pinned,
            creds.agent_username().unwrap(),
            creds.agent_private_key_openssh().unwrap().unwrap(),
        );
        o.local_host = "127.0.0.2".parse().unwrap();
        o.ports = vec![sshd.port];
        o.min_backoff = Duration::from_millis(100);
        o.max_backoff = Duration::from_millis(400);
        o
    };

    // A gateway presenting another key is never trusted.
    let wrong = HostKey::generate().unwrap().public_key();
    let refused = run_agent(agent_options(wrong), std::future::pending()).await;
    assert!(matches!(refused, Err(Error::HostKeyMismatch { .. })), "{refused:?}");

    let agent =
        tokio::spawn(run_agent(agent_options(gateway.host_key().public_key()), std::future::pending()));
    eventually_works(&script).await;

    // The gateway goes away and comes back on the same address: the agent finds it again.
    running.stop().await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let running = gateway.start_on(listener).unwrap();
    eventually_works(&script).await;

    // The session ends: the agent's connection is cut and run_agent returns.
    authority.revoke(creds.build_id(), "done").await.unwrap();
    let exit =
        tokio::time::timeout(Duration::from_secs(30), agent).await.expect("the agent returns").unwrap();
    assert_eq!(exit.unwrap(), AgentExit::SessionEnded);
    running.stop().await.unwrap();
}
