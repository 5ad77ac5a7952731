//! The SSH gateway against real peers: the real `ssh` client runs the generated script through
//! the gateway to a real `sshd` playing the builder.

use std::process::Stdio;
use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::builds::*;
use remote_access_core::{
    AuthorityOptions, BuildRequest, ConnectionInfo, Credentials, Policy, ScriptOptions, Subscription,
};
use remote_access_test_peers::*;
use tokio::process::Command;

/// One builder sshd, one authority and a running gateway in front of it.
struct Fixture {
    builder: Sshd,
    authority: remote_access_core::Authority,
    gateway: remote_access_core::Gateway,
    running: Option<remote_access_core::RunningGateway>,
    scratch: tempfile::TempDir,
}

/// One issued build, as a user holds it.
struct UserKit {
    creds: Credentials,
    info: ConnectionInfo,
    script: PathBuf,
    /// An ssh_config for direct use (`ssh -F config remote-access-gateway ...`).
    config: PathBuf,
}

impl Fixture {
    async fn new(options: AuthorityOptions) -> Fixture {
        Self::with(options, gateway_options()).await
    }

    async fn with(options: AuthorityOptions, gateway_options: remote_access_core::GatewayOptions) -> Fixture {
        let builder = Sshd::start();
        let authority = authority(options);
        let gateway = remote_access_core::Gateway::new(authority.clone(), gateway_options).unwrap();
        let running = gateway.start("127.0.0.1:0").await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        Fixture { builder, authority, gateway, running: Some(running), scratch }
    }

    fn port(&self) -> u16 {
        self.running.as_ref().unwrap().local_addr().port()
    }

    async fn issue(&self, id: &str) -> UserKit {
        self.issue_with(crate::builds::request(id, self.builder.builder()), None).await
    }

    async fn issue_with(&self, request: BuildRequest, build_dir: Option<&str>) -> UserKit {
        let creds = self.authority.issue(request).await.unwrap();
        self.builder.authorize(&creds.authorized_keys_line());
        let session = self.authority.session(creds.build_id()).await.unwrap();
        let mut options = ScriptOptions::new("127.0.0.1", self.port());
        if let Some(dir) = build_dir {
            options.build_dir = dir.to_owned();
        }
        let info = ConnectionInfo::new(&creds, &session, self.gateway.host_key(), &options).unwrap();
        let id = creds.build_id().to_string();
        let dir = self.scratch.path();
        let script = write_script(dir, &format!("{id}.sh"), info.posix_script(&creds).unwrap().expose());
        let key = write_script(dir, &format!("{id}.key"), creds.private_key_openssh().unwrap().expose());
        let known = write_script(dir, &format!("{id}.known_hosts"), &info.known_hosts().unwrap());
        let text = info.ssh_config(key.to_str().unwrap(), known.to_str().unwrap()).unwrap();
        let config = write_script(dir, &format!("{id}.config"), &(text + "  BatchMode yes\n"));
        UserKit { creds, info, script, config }
    }
}

/// Runs `ssh -F config ARGS...`; returns (exit code, stdout, stderr).
async fn ssh(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("ssh").arg("-F").arg(config).args(args).stdin(Stdio::null()).finish(),
    )
    .await
    .expect("ssh finishes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn count(events: &mut Subscription, kind: &str) -> usize {
    std::iter::from_fn(|| events.try_next()).filter(|e| e.kind.as_str() == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_script_runs_commands_on_the_builder_in_the_build_directory() {
    let builder = Sshd::start();
    let authority = authority(AuthorityOptions::default());
    let gateway = gateway(&authority);
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let creds = authority.issue(request("e2e-1", builder.builder())).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let port = running.local_addr().port();
    let script = posix_script(&authority, &gateway, port, &creds, scratch.path(), "connect.sh").await;

    let (code, stdout, stderr) = run_script(&script, &["printenv FCI_BUILD_DIR; pwd"]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}\nsshd: {}", builder.log());
    let build_dir = builder.build_dir.display().to_string();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), [build_dir.as_str(), build_dir.as_str()]);
    // The script's banner states the build's own rule; the gateway's SSH banner (shown by the
    // jump hop's ssh) the policy's rules and what logging out does.
    let session = authority.session(creds.build_id()).await.unwrap();
    assert!(stderr.contains(&format!("access lasts {}", session.access_rule())), "{stderr}");
    assert!(stderr.contains("until 20 minutes after the build steps complete, and never after"), "{stderr}");
    assert!(
        stderr.contains(
            "remote-access: access to a build lasts until 20 minutes after the build steps complete"
        ) && stderr.contains("logging out (exit) finishes the build"),
        "the gateway's banner: {stderr}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_command_the_script_opens_a_login_shell_in_the_build_directory() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let kit = fx.issue("shell-1").await;
    // No terminal here, so the login shell reads its commands from stdin.
    let mut child = script_command(&kit.script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"pwd\nexit 0\n").await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), fx.builder.build_dir.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cuts_the_live_connection_and_the_script_then_fails_to_authenticate() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let mut events = fx.authority.subscribe();
    let kit = fx.issue("revoke-1").await;
    let live = start_long_script(&kit.script).await;
    next_event(&mut events, "connected").await;

    fx.authority.revoke(kit.creds.build_id(), "security review").await.unwrap();
    let (code, stderr) = exit_of(live).await;
    assert_ne!(code, 0, "the cut connection failed: {stderr}");
    assert!(stderr.contains("remote access to this build has ended"), "{stderr}");

    let (code, _, stderr) = run_script(&kit.script, &["true"]).await;
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_the_live_connection_is_cut_and_the_build_finished_once() {
    let mut options = AuthorityOptions::default();
    options.policy = Policy::default();
    options.policy.grace = Duration::from_secs(2);
    let fx = Fixture::new(options).await;
    let mut events = fx.authority.subscribe();
    let kit = fx.issue("deadline-1").await;
    let live = start_long_script(&kit.script).await;
    next_event(&mut events, "connected").await;
    fx.authority.steps_completed(kit.creds.build_id()).await.unwrap();

    // Nobody calls the authority now: the gateway's own expiry task must end the session.
    let (code, stderr) = exit_of(live).await;
    assert_ne!(code, 0, "{stderr}");
    let expired = next_event(&mut events, "expired").await;
    assert_eq!(expired.reason, "grace period after the build steps elapsed");
    next_event(&mut events, "finish_build").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the disconnect land
    assert_eq!(count(&mut events, "finish_build"), 0, "finish-build only once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_finishes_the_build_once_after_the_steps_but_not_while_they_run() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let mut events = fx.authority.subscribe();
    let kit = fx.issue("logout-1").await;

    // While the steps run, leaving is not a logout.
    let (code, _, stderr) = run_script(&kit.script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    next_event(&mut events, "disconnected").await;
    assert_eq!(count(&mut events, "finish_build"), 0);
    assert!(!fx.authority.session(kit.creds.build_id()).await.unwrap().is_ended());

    // After the steps, the last connection closing is.
    fx.authority.steps_completed(kit.creds.build_id()).await.unwrap();
    let (code, _, stderr) = run_script(&kit.script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    let logged_out = next_event(&mut events, "logged_out").await;
    assert_eq!(logged_out.build_id, *kit.creds.build_id());
    next_event(&mut events, "finish_build").await;
    assert_eq!(count(&mut events, "finish_build"), 0, "finish-build only once");
    let (code, _, _) = run_script(&kit.script, &["true"]).await;
    assert_eq!(code, 255, "no way back in after the logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_but_the_own_builder_is_refused_and_the_user_keeps_working() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let mut events = fx.authority.subscribe();
    let a = fx.issue("mine").await;
    // Another build, on another builder (a second sshd) that user A must not reach.
    let other = Sshd::start_on("127.0.0.2");
    let b = fx.issue_with(crate::builds::request("theirs", other.builder()), None).await;

    // Another build's key, a wrong username: plain authentication failures.
    let config_a = std::fs::read_to_string(&a.config).unwrap();
    let with_b_user = config_a.replace(&a.info.gateway_user, &b.info.gateway_user);
    let with_nobody = config_a.replace(&a.info.gateway_user, "ra-nobody");
    for (name, text) in [("b-user", with_b_user), ("nobody", with_nobody)] {
        let path = write_script(fx.scratch.path(), name, &text);
        let (code, _, stderr) =
            ssh(&path, &["-W", &format!("127.0.0.1:{}", fx.builder.port), "remote-access-gateway"]).await;
        assert_eq!(code, 255, "{name}: {stderr}");
        assert!(stderr.contains("Permission denied (publickey)"), "{name}: {stderr}");
    }

    // Forbidden targets for an authenticated user.
    let forbidden = [
        format!("127.0.0.2:{}", other.port),      // another build's builder
        format!("127.0.0.2:{}", fx.builder.port), // another address on this builder's port
        format!("127.0.0.1:{}", fx.port()),       // the gateway itself
        "127.0.0.1:1".to_owned(),                 // another port on the builder's address
        "169.254.169.254:80".to_owned(),          // cloud metadata
        format!("[::ffff:127.0.0.1]:{}", fx.builder.port), // the builder, as an IPv6 form
        format!("localhost:{}", fx.builder.port), // the builder, by a name
    ];
    for target in &forbidden {
        let (code, _, stderr) = ssh(&a.config, &["-W", target, "remote-access-gateway"]).await;
        assert_eq!(code, 255, "{target}: {stderr}");
        assert!(stderr.contains("only this build's builder"), "{target}: {stderr}");
        let refused = next_event(&mut events, "refused").await;
        assert!(refused.reason.starts_with("direct-tcpip to "), "{}", refused.reason);
    }

    // A shell on the gateway: the session channel is refused with a pointer to the script.
    let (code, _, stderr) = ssh(&a.config, &["remote-access-gateway", "id"]).await;
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("only forwards SSH to your build's builder"), "{stderr}");
    assert_eq!(next_event(&mut events, "refused").await.reason, "a session on the gateway itself refused");

    // Remote forwarding from a user.
    let (code, _, stderr) = ssh(
        &a.config,
        &["-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "remote-access-gateway"],
    )
    .await;
    assert_eq!(code, 255, "{stderr}");
    assert!(next_event(&mut events, "refused").await.reason.starts_with("remote forwarding of"));

    // Through all of this, the legitimate user still gets in.
    let (code, stdout, stderr) = run_script(&a.script, &["echo still-here"]).await;
    assert_eq!((code, stdout.trim()), (0, "still-here"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_directory_full_of_shell_syntax_is_entered_literally() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let root = fx.builder.dir.path();
    let dir = root.join("it's $(touch pwned1) `touch pwned2` \"; touch pwned3; \" 100%h");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_text = dir.to_str().unwrap();
    let kit = fx.issue_with(crate::builds::request("literal-1", fx.builder.builder()), Some(dir_text)).await;

    let (code, stdout, stderr) = run_script(&kit.script, &["pwd"]).await;
    assert_eq!((code, stdout.trim_end()), (0, dir_text), "{stderr}");
    // And the interactive path (RemoteCommand in the config) lands there too.
    let mut child = script_command(&kit.script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .start();
    {
        use tokio::io::AsyncWriteExt;
        child.stdin.take().unwrap().write_all(b"pwd\n").await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), dir_text);
    for place in [root, dir.as_path(), Path::new("/root"), fx.builder.build_dir.as_path()] {
        for marker in ["pwned1", "pwned2", "pwned3"] {
            assert!(!place.join(marker).exists(), "{marker} was created in {}", place.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_authenticate_in_time_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = authority(AuthorityOptions::default());
    let mut options = gateway_options();
    options.pre_auth_timeout = Duration::from_secs(3);
    options.max_unauthenticated = 2;
    let gateway = remote_access_core::Gateway::new(authority, options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let addr = running.local_addr();

    // Three silent connections against two slots: the third does not get refused, it takes
    // the slot of the one that has waited longest, which is closed at once; the other two are
    // cut at the pre-auth deadline.
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut banner = [0u8; 21];
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut banner)).await;
        assert!(read.is_ok_and(|r| r.is_ok()), "every newcomer is served");
        assert_eq!(&banner, b"SSH-2.0-remote-access");
        connections.push(tcp);
    }
    let mut first = connections.remove(0);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), first.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the oldest was evicted");
    for tcp in &connections {
        let mut probe = [0u8; 64];
        match tcp.try_read(&mut probe) {
            Ok(0) => panic!("a newer connection was closed with the oldest"),
            Ok(_) => {} // more of the gateway's opening: still open
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("a newer connection failed with the oldest: {err}"),
        }
    }
    for mut tcp in connections {
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "cut at the pre-auth deadline");
    }
    assert_eq!(gateway.stats().evicted, 1);

    // Trickling one byte every 200 ms does not extend the deadline either.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cut_off = tokio::time::timeout(Duration::from_secs(20), async {
        for byte in b"SSH-2.0-slow-client-that-never-finishes".iter().cycle() {
            if trickle.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(cut_off.is_ok(), "the trickling connection was cut");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_vnc_port_that_cannot_be_bound_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![port];
    let authority = remote_access_core::Authority::new(options).unwrap();
    let gateway = remote_access_core::Gateway::new(authority, Default::default()).unwrap();
    match gateway.start("127.0.0.1:0").await {
        Err(remote_access_core::Error::Io(err)) => {
            assert!(err.to_string().contains(&format!("binding VNC port 127.0.0.1:{port}")), "{err}")
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// Bulk data both ways, and a trickle of small writes, through the gateway with the real `ssh`
/// to the real `sshd`: every byte arrives, in order. Run with the connection's tasks on the
/// caller's runtime and on the gateway's own worker threads (`worker_threads`), since the two
/// hand the builder's data to the channel from different threads.
async fn bulk_and_trickle_arrive_intact(worker_threads: usize) {
    use sha2::Digest;
    let mut options = gateway_options();
    options.worker_threads = worker_threads;
    let fx = Fixture::with(AuthorityOptions::default(), options).await;
    let kit = fx.issue(&format!("bulk-{worker_threads}")).await;
    let config = kit.config.to_str().unwrap();
    // 24 MiB and 7 bytes of random data: reads from the builder grow to their largest size
    // and end on an odd one.
    let payload: Vec<u8> = {
        let mut bytes = vec![0u8; (24 << 20) + 7];
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ worker_threads as u64;
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        bytes
    };
    let file = fx.scratch.path().join("payload");
    std::fs::write(&file, &payload).unwrap();
    let hex = |data: &[u8]| sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let expected = hex(&payload);

    // Down: the builder sends the file (the builder is this machine, so it reads the same path).
    let down = Command::new("ssh")
        .args(["-F", config, "remote-access-builder", "cat", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(down.stdout.len(), payload.len(), "bytes down");
    assert_eq!(hex(&down.stdout), expected, "data down");

    // Up: the builder hashes what the user sends.
    let up = Command::new("ssh")
        .args(["-F", config, "remote-access-builder", "sha256sum"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .await
        .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert!(
        String::from_utf8_lossy(&up.stdout).starts_with(&expected),
        "data up: {}",
        String::from_utf8_lossy(&up.stdout)
    );

    // A trickle: many small writes with pauses, as an interactive program makes; reads shrink
    // back and nothing is held back waiting for more.
    let trickle = Command::new("ssh")
        .args([
            "-F",
            config,
            "remote-access-builder",
            "for i in $(seq 1 300); do echo line $i; [ $((i % 50)) -eq 0 ] && sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(trickle.status.success(), "{}", String::from_utf8_lossy(&trickle.stderr));
    let lines: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    assert_eq!(String::from_utf8_lossy(&trickle.stdout).lines().collect::<Vec<_>>(), lines);
    fx.running.unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_and_small_writes_cross_the_gateway_intact() {
    bulk_and_trickle_arrive_intact(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_and_small_writes_cross_the_gateway_intact_on_worker_threads() {
    bulk_and_trickle_arrive_intact(2).await;
}
