//! A fleet of gateway processes (`src/bin/gateway.rs`) on one real `redis-server`, with the
//! real `ssh` client, a real `sshd` builder and the real agent program: a gateway killed with
//! SIGKILL and started again serves the same sessions; a reverse-mode build is reachable
//! through whichever gateway the user lands on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use remote_access_core::{
    Authority, AuthorityOptions, ConnectionInfo, Credentials, Error, HostKey, RedisOptions, ScriptOptions,
    StoreOptions,
};
use remote_access_examples::peers::{BuilderRoute, request};
use remote_access_test_peers::*;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The fleet's `max_store_outage`.
const OUTAGE: Duration = Duration::from_secs(2);

/// A gateway process on `address` (fixed, so a restart comes back on the same one).
struct GatewayProcess {
    child: Child,
    address: String,
}

impl GatewayProcess {
    async fn start(redis: &RedisServer, key_file: &Path, address: &str) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--listen", address, "--redis", &redis.url(), "--host-key-file"])
            .arg(key_file)
            // Short, so that a killed gateway's connections are detached within seconds.
            .args(["--max-store-outage-secs", &OUTAGE.as_secs().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let Ok(Ok(Some(line))) = first else { panic!("the gateway did not start: {first:?}") };
        assert_eq!(line, format!("listening on {address}"));
        // Keep reading its events so that its stdout never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        GatewayProcess { child, address: address.to_owned() }
    }

    /// SIGKILL: no cleanup of any kind, as in a crash.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

fn platform(redis: &RedisServer) -> Authority {
    let mut options = AuthorityOptions::default();
    options.store = StoreOptions::Redis(RedisOptions::new(redis.url()));
    Authority::new(options).unwrap()
}

async fn script_for(
    platform: &Authority,
    host_key: &HostKey,
    gateway: &GatewayProcess,
    creds: &Credentials,
    dir: &Path,
) -> PathBuf {
    let (host, port) = gateway.address.rsplit_once(':').unwrap();
    let name = format!("{}-{host}.sh", creds.build_id());
    let session = platform.session(creds.build_id()).await.unwrap();
    let options = ScriptOptions::new(host, port.parse().unwrap());
    let info = ConnectionInfo::new(creds, &session, host_key, &options).unwrap();
    write_script(dir, &name, info.posix_script(creds).unwrap().expose())
}

fn host_key_file(dir: &Path) -> (HostKey, PathBuf) {
    let key = HostKey::generate().unwrap();
    let path = write_script(dir, "host_key", key.to_openssh().unwrap().expose());
    (key, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_and_restarted_serves_the_same_sessions() {
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let (host_key, key_file) = host_key_file(scratch.path());
    let address = format!("127.0.0.1:{}", free_port());
    let gateway = GatewayProcess::start(&redis, &key_file, &address).await;
    let platform = platform(&redis);

    let live = platform.issue(request("restart-live", builder.builder())).await.unwrap();
    let gone = platform.issue(request("restart-revoked", builder.builder())).await.unwrap();
    for creds in [&live, &gone] {
        builder.authorize(&creds.authorized_keys_line());
    }
    let live_script = script_for(&platform, &host_key, &gateway, &live, scratch.path()).await;
    let gone_script = script_for(&platform, &host_key, &gateway, &gone, scratch.path()).await;
    let (code, _, stderr) = run_script(&live_script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    platform.revoke(gone.build_id(), "tombstone before the crash").await.unwrap();
    let deadline = platform.session(live.build_id()).await.unwrap().deadline();
    // A shell is open through the gateway when it dies.
    let shell = start_long_script(&live_script).await;
    assert_eq!(platform.session(live.build_id()).await.unwrap().live_connections().count(), 1);

    gateway.kill().await;
    let (code, _) = exit_of(shell).await;
    assert_ne!(code, 0, "the shell died with its gateway");
    let (code, _, _) = run_script(&live_script, &["true"]).await;
    assert_eq!(code, 255, "nothing serves while the gateway is down");
    let gateway = GatewayProcess::start(&redis, &key_file, &address).await;

    // The credentials still work, the tombstone still refuses, the deadline is unchanged.
    let (code, stdout, stderr) = run_script(&live_script, &["echo after restart"]).await;
    assert_eq!((code, stdout.trim()), (0, "after restart"), "{stderr}");
    let (code, _, stderr) = run_script(&gone_script, &["true"]).await;
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    let session = platform.session(live.build_id()).await.unwrap();
    assert_eq!(session.deadline(), deadline);
    assert!(!session.is_ended());
    let refused = platform.verify_ssh(gone.username(), gone.public_key()).await;
    assert!(matches!(refused, Err(Error::AccessDenied { .. })), "{refused:?}");

    // The dead gateway's connection is detached from the session by the fleet (here the
    // restarted gateway, which is a new instance) once its heartbeat is older than the bound,
    // so the user's logout still ends the session and finishes the build.
    eventually("the dead gateway's connection is detached", || async {
        platform.session(live.build_id()).await.unwrap().live_connections().count() == 0
    })
    .await;
    platform.steps_completed(live.build_id()).await.unwrap();
    let (code, _, stderr) = run_script(&live_script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    eventually("the logout ends the session", || async {
        platform
            .session(live.build_id())
            .await
            .unwrap()
            .end()
            .is_some_and(|(reason, _)| reason.code() == "logged_out")
    })
    .await;
    gateway.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_build_is_reached_through_whichever_gateway_the_user_lands_on() {
    let redis = RedisServer::start();
    // The builder listens on 127.0.0.2 only; its route names 127.0.0.3, where nothing
    // listens, so no gateway can dial it: only the agent's tunnels reach it.
    let builder = Sshd::start_on("127.0.0.2");
    let scratch = tempfile::tempdir().unwrap();
    let (host_key, key_file) = host_key_file(scratch.path());
    let a = GatewayProcess::start(&redis, &key_file, &format!("127.0.0.1:{}", free_port())).await;
    let b = GatewayProcess::start(&redis, &key_file, &format!("127.0.0.4:{}", free_port())).await;
    let platform = platform(&redis);
    let mut route = builder.builder();
    route.address = "127.0.0.3".parse().unwrap();
    route.reverse_tunnel = true;
    let creds = platform.issue(request("fleet-reverse", route)).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let agent_key = write_script(
        scratch.path(),
        "agent.key",
        creds.agent_private_key_openssh().unwrap().unwrap().expose(),
    );
    let mut agent = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["--gateway", &a.address, "--gateway", &b.address, "--host-key", &host_key.public_key()])
        .arg("--user")
        .arg(creds.agent_username().unwrap())
        .arg("--key-file")
        .arg(&agent_key)
        .args(["--local", "127.0.0.2", "--port", &builder.port.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    for gateway in [&a, &b] {
        let script = script_for(&platform, &host_key, gateway, &creds, scratch.path()).await;
        eventually(&format!("ssh through {}", gateway.address), || async {
            let (code, stdout, _) = run_script(&script, &["pwd"]).await;
            code == 0 && stdout.trim() == builder.build_dir.display().to_string()
        })
        .await;
    }

    // Revoked through the platform: both tunnels are cut and the agent exits 0.
    platform.revoke(creds.build_id(), "done").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), agent.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    a.kill().await;
    b.kill().await;
}
