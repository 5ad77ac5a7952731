//! Reverse tunnels with real peers: a real `sshd` and x11vnc play a builder on 127.0.0.2, which
//! the gateway is never told to dial (the build is in reverse mode). The real agent program
//! (`src/bin/agent.rs`) dials out; the real `ssh` client and `vncdotool` reach the builder
//! through the gateway; killing and restarting the agent; revoke cuts everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use remote_access_core::{
    Authority, AuthorityOptions, ConnectionInfo, Credentials, Event, Gateway, GatewayOptions, ScriptOptions,
    Secret, Subscription,
};
use remote_access_examples::peers::{BuilderRoute, request, x11vnc_on};
use remote_access_test_peers::*;
use tokio::process::Command;

/// Waits for the next event of `kind`, skipping others; panics after a minute.
async fn next_event(events: &mut Subscription, kind: &str) -> Event {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = events.next().await.expect("the authority is alive");
            if event.kind.as_str() == kind {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event"))
}

struct Agent {
    child: tokio::process::Child,
}

impl Agent {
    fn start(gateway: &str, host_key: &str, creds: &Credentials, key_file: &Path, ports: &[u16]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.args(["--gateway", gateway, "--host-key", host_key, "--user"])
            .arg(creds.agent_username().unwrap())
            .arg("--key-file")
            .arg(key_file)
            .args(["--local", "127.0.0.2"]);
        for port in ports {
            cmd.args(["--port", &port.to_string()]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).kill_on_drop(true).spawn().unwrap();
        Agent { child }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_reachable_only_through_its_agent() {
    let sshd = Sshd::start_on("127.0.0.2");
    let vnc = x11vnc_on("builder-pw", "127.0.0.2");
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![free_port()];
    let authority = Authority::new(options).unwrap();
    // A short rejection delay keeps the refusals below quick.
    let mut gateway_options = GatewayOptions::default();
    gateway_options.auth_rejection_delay = Duration::from_millis(100);
    let gateway = Gateway::new(authority.clone(), gateway_options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let gateway_addr = running.local_addr().to_string();
    let mut events = authority.subscribe();

    // The route names 127.0.0.3, where nothing listens: were the gateway to dial it, users would
    // fail. The builder really listens on 127.0.0.2, which only the agent is told about.
    let mut route = sshd.builder();
    route.address = "127.0.0.3".parse().unwrap();
    route.vnc_port = Some(vnc.port);
    route.reverse_tunnel = true;
    let mut request = request("reverse-1", route);
    request.builder_vnc_password = Some(Secret::new(vnc.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    sshd.authorize(&creds.authorized_keys_line());
    assert!(creds.agent_username().unwrap().starts_with("rt-"));
    assert_ne!(creds.agent_fingerprint(), Some(creds.fingerprint()));

    let session = authority.session(creds.build_id()).await.unwrap();
    let info = ConnectionInfo::new(
        &creds,
        &session,
        gateway.host_key(),
        &ScriptOptions::new("127.0.0.1", running.local_addr().port()),
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let script = write_script(scratch.path(), "connect.sh", info.posix_script(&creds).unwrap().expose());
    let agent_key = write_script(
        scratch.path(),
        "agent.key",
        creds.agent_private_key_openssh().unwrap().unwrap().expose(),
    );
    let vnc_port = info.vnc_port.unwrap();
    let password = creds.vnc_password().expose().clone();
    let ssh_works = || async {
        let (code, _, stderr) = output_of(script_command(&script).arg("pwd")).await;
        if code != 0 {
            eprintln!("ssh not yet through ({code}): {stderr}");
        }
        code == 0
    };
    let vnc_capture = || {
        let shot: PathBuf = scratch.path().join("shot.png");
        let password = password.clone();
        async move {
            let (code, _, _) = output_of(vncdo(vnc_port, &password).arg("capture").arg(&shot)).await;
            (code, std::fs::read(&shot).ok().and_then(|png| png_size(&png)))
        }
    };

    // No agent yet: a clear refusal, not a hang; the gateway never dials 127.0.0.2 itself.
    let (code, _, stderr) = output_of(script_command(&script).arg("true")).await;
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("agent is not connected"), "{stderr}");
    assert_ne!(vnc_capture().await.0, 0);

    // The agent dials out; the user reaches the builder over it.
    let host_key = gateway.host_key().public_key();
    let agent = Agent::start(&gateway_addr, &host_key, &creds, &agent_key, &[sshd.port, vnc.port]);
    eventually("ssh through the agent", ssh_works).await;
    let (code, stdout, stderr) = output_of(script_command(&script).arg("printenv FCI_BUILD_DIR; pwd")).await;
    let build_dir = sshd.build_dir.display().to_string();
    assert_eq!(
        (code, stdout.lines().collect::<Vec<_>>()),
        (0, vec![build_dir.as_str(), build_dir.as_str()]),
        "{stderr}"
    );
    assert_eq!(vnc_capture().await, (0, Some((640, 480))), "VNC through the agent");

    // The agent's credential opens nothing for a user; the user's cannot register a tunnel.
    let known = write_script(scratch.path(), "known_hosts", &info.known_hosts().unwrap());
    let user_key = write_script(scratch.path(), "user.key", creds.private_key_openssh().unwrap().expose());
    let user_config =
        info.ssh_config(user_key.to_str().unwrap(), known.to_str().unwrap()).unwrap() + "  BatchMode yes\n";
    let agent_config = user_config
        .replace(&info.gateway_user, creds.agent_username().unwrap())
        .replace(user_key.to_str().unwrap(), agent_key.to_str().unwrap());
    let agent_config = write_script(scratch.path(), "agent.config", &agent_config);
    let user_config = write_script(scratch.path(), "user.config", &user_config);
    let target = format!("127.0.0.3:{}", sshd.port);
    let (code, _, stderr) = output_of(Command::new("ssh").arg("-F").arg(&agent_config).args([
        "-W",
        &target,
        "remote-access-gateway",
    ]))
    .await;
    assert_eq!(code, 255, "agent credential opened a channel: {stderr}");
    assert!(stderr.contains("open failed: administratively prohibited"), "logged in, then refused: {stderr}");
    let (code, _, stderr) = output_of(Command::new("ssh").arg("-F").arg(&user_config).args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "0:127.0.0.1:22",
        "remote-access-gateway",
    ]))
    .await;
    assert_eq!(code, 255, "user credential registered a tunnel: {stderr}");
    assert!(stderr.contains("remote port forwarding failed"), "logged in, then refused: {stderr}");
    assert!(ssh_works().await, "the real agent's tunnel is untouched");

    // A second agent for the build replaces the first, which stops instead of fighting back.
    let mut first = agent;
    let agent = Agent::start(&gateway_addr, &host_key, &creds, &agent_key, &[sshd.port, vnc.port]);
    let status = tokio::time::timeout(Duration::from_secs(30), first.child.wait())
        .await
        .expect("replaced agent stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
    eventually("ssh through the second agent", ssh_works).await;

    // Kill the agent mid-session: users are refused; a restarted agent restores access.
    drop(agent);
    eventually("refusal while the agent is away", || async {
        let (code, _, stderr) = output_of(script_command(&script).arg("true")).await;
        code == 255 && stderr.contains("agent is not connected")
    })
    .await;
    let mut agent = Agent::start(&gateway_addr, &host_key, &creds, &agent_key, &[sshd.port, vnc.port]);
    eventually("ssh after the agent restarted", ssh_works).await;

    // Revoke cuts everything: the live SSH and VNC connections, and the agent, which exits 0.
    let mut live_ssh = script_command(&script)
        .arg("sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .start();
    let mut live_vnc = vncdo(vnc_port, &password)
        .args(["pause", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .start();
    let _ = next_event(&mut events, "connected").await;
    let _ = next_event(&mut events, "connected").await;
    authority.revoke(creds.build_id(), "done").await.unwrap();
    for child in [&mut live_ssh, &mut live_vnc] {
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("cut at revoke").unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(30), agent.child.wait())
        .await
        .expect("the agent exits")
        .unwrap();
    assert!(status.success(), "the agent exits cleanly when the session ends: {status:?}");
    running.stop().await.unwrap();
}
