//! The VNC proxy against real peers: x11vnc on Xvfb and TigerVNC as the builder's VNC server
//! (with their own passwords, written by the library's password-file helper), vncdotool and
//! vncsnapshot as the user's clients through the gateway with the per-build password.

use std::process::Stdio;
use std::time::Duration;

use crate::builds::*;
use remote_access_core::{AuthorityOptions, BuildRequest, Credentials};
use remote_access_test_peers::*;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

struct Fixture {
    authority: remote_access_core::Authority,
    running: remote_access_core::RunningGateway,
    scratch: tempfile::TempDir,
}

impl Fixture {
    async fn new(mut options: AuthorityOptions) -> Fixture {
        options.vnc_ports = vec![free_port(), free_port(), free_port()];
        let authority = authority(options);
        let running = gateway(&authority).start("127.0.0.1:0").await.unwrap();
        Fixture { authority, running, scratch: tempfile::tempdir().unwrap() }
    }

    /// Issues a build whose builder runs `server`; returns the credentials and the gateway's
    /// VNC port for it.
    async fn issue(&self, id: &str, server: &VncServer) -> (Credentials, u16) {
        let mut request: BuildRequest = crate::builds::request(id, server.builder());
        request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
        let creds = self.authority.issue(request).await.unwrap();
        let port = self.authority.session(creds.build_id()).await.unwrap().vnc_port().expect("a VNC port");
        (creds, port)
    }
}

/// `vncdo -s 127.0.0.1::PORT -p PASSWORD capture FILE`: (exit code, the PNG's size).
async fn capture(fx: &Fixture, port: u16, password: &str) -> (i32, Option<(u32, u32)>) {
    let shot = fx.scratch.path().join(format!("shot-{port}-{}.png", rand_suffix()));
    let mut vncdo = vncdo(port, password)
        .arg("capture")
        .arg(&shot)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .start();
    let status =
        tokio::time::timeout(Duration::from_secs(60), vncdo.wait()).await.expect("vncdo finishes").unwrap();
    let size = std::fs::read(&shot).ok().and_then(|png| png_size(&png));
    (status.code().unwrap_or(-1), size)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A vncdo session that stays connected (`pause`), to be cut.
fn hold_open(port: u16, password: &str) -> tokio::process::Child {
    vncdo(port, password)
        .args(["pause", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .start()
}

async fn exits(mut child: tokio::process::Child) {
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the VNC connection was cut")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vncdotool_captures_the_builders_screen_through_the_gateway() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    for server in [x11vnc("builder-pw"), tigervnc("tiger-pw")] {
        let (creds, port) = fx.issue(&format!("vnc-{}", server.port), &server).await;
        let (code, size) = capture(&fx, port, creds.vnc_password().expose()).await;
        assert_eq!((code, size), (0, Some((server.width, server.height))), "builder on {}", server.port);
        // The builder's own password is not the user's: it does not open the gateway.
        let (code, _) = capture(&fx, port, &server.password).await;
        assert_ne!(code, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vncsnapshot_speaking_rfb_33_gets_through() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let server = x11vnc("snap-pw");
    let (creds, port) = fx.issue("snap-1", &server).await;
    let passwd = fx.scratch.path().join("user.passwd");
    std::fs::write(&passwd, remote_access_core::vnc_password_file(creds.vnc_password().expose())).unwrap();
    let snap = fx.scratch.path().join("snap.jpg");
    let mut vncsnapshot = Command::new("vncsnapshot")
        .args(["-quiet", "-passwd"])
        .arg(&passwd)
        .arg(format!("127.0.0.1::{port}"))
        .arg(&snap)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .start();
    let status = tokio::time::timeout(Duration::from_secs(60), vncsnapshot.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let jpeg = std::fs::read(&snap).unwrap();
    assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.len() > 1000, "a JPEG of the screen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_other_and_revoked_passwords_are_refused() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let server = x11vnc("builder-pw");
    let (a, port_a) = fx.issue("pw-a", &server).await;
    let (b, _) = fx.issue("pw-b", &server).await;
    assert_eq!(capture(&fx, port_a, "wrongpw1").await.0, 3, "vncdo's exit status for a refused password");
    assert_eq!(capture(&fx, port_a, b.vnc_password().expose()).await.0, 3, "another build's password");
    assert_eq!(capture(&fx, port_a, a.vnc_password().expose()).await.0, 0, "the right one still works");
    fx.authority.revoke(a.build_id(), "done").await.unwrap();
    assert_ne!(capture(&fx, port_a, a.vnc_password().expose()).await.0, 0, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_vnc_connections_are_cut_at_revoke_and_at_the_deadline() {
    let mut options = AuthorityOptions::default();
    options.policy.grace = Duration::from_secs(2);
    let fx = Fixture::new(options).await;
    let mut events = fx.authority.subscribe();
    let server = x11vnc("builder-pw");

    let (a, port_a) = fx.issue("cut-revoke", &server).await;
    let live = hold_open(port_a, a.vnc_password().expose());
    next_event(&mut events, "connected").await;
    fx.authority.revoke(a.build_id(), "admin").await.unwrap();
    exits(live).await;

    let (b, port_b) = fx.issue("cut-deadline", &server).await;
    let live = hold_open(port_b, b.vnc_password().expose());
    next_event(&mut events, "connected").await;
    fx.authority.steps_completed(b.build_id()).await.unwrap();
    exits(live).await;
    assert_eq!(next_event(&mut events, "expired").await.build_id, *b.build_id());
    assert_eq!(next_event(&mut events, "finish_build").await.build_id, *b.build_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_last_vnc_connection_after_the_steps_is_a_logout() {
    let fx = Fixture::new(AuthorityOptions::default()).await;
    let mut events = fx.authority.subscribe();
    let server = tigervnc("builder-pw");
    let (creds, port) = fx.issue("vnc-logout", &server).await;
    fx.authority.steps_completed(creds.build_id()).await.unwrap();
    assert_eq!(capture(&fx, port, creds.vnc_password().expose()).await.0, 0);
    let logged_out = next_event(&mut events, "logged_out").await;
    assert_eq!(logged_out.build_id, *creds.build_id());
    next_event(&mut events, "finish_build").await;
    drop(fx.running);
}

/// VNC inside the SSH tunnel (issue 18): `ssh -L` with the generated `ssh_config` to the
/// builder's VNC address is served by the gateway's own VNC proxy in the channel, so the user
/// logs in with the build's VNC password (never the builder's), end to end encrypted from the
/// user's machine. A wrong password is refused; it counts as a VNC connection; revocation
/// cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_through_an_ssh_tunnel_uses_the_builds_password() {
    let authority = authority(AuthorityOptions::default());
    let gateway = gateway(&authority);
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let server = x11vnc("tunnel-pw");
    let mut request: BuildRequest = crate::builds::request("tunnel", server.builder());
    request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    let session = authority.session(creds.build_id()).await.unwrap();
    let options = remote_access_core::ScriptOptions::new("127.0.0.1", running.local_addr().port());
    let info =
        remote_access_core::ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let key = write_script(dir, "tunnel.key", creds.private_key_openssh().unwrap().expose());
    let known = write_script(dir, "tunnel.known_hosts", &info.known_hosts().unwrap());
    let config = info.ssh_config(key.to_str().unwrap(), known.to_str().unwrap()).unwrap();
    let config = write_script(dir, "tunnel.config", &(config + "  BatchMode yes\n"));

    // The tunnel: a local port to the builder's VNC address, through the gateway.
    let local = free_port();
    let forward = format!("127.0.0.1:{local}:127.0.0.1:{}", server.port);
    let mut tunnel = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &forward, "remote-access-gateway"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .start();
    eventually("the tunnel's local port to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", local)).await.is_ok()
    })
    .await;

    let fx = Fixture { authority: authority.clone(), running, scratch };
    let (code, size) = capture(&fx, local, creds.vnc_password().expose()).await;
    assert_eq!((code, size), (0, Some((640, 480))), "the builder's screen through the tunnel");
    // The builder's own password is not the build's, and is refused like any wrong one.
    assert_ne!(
        capture(&fx, local, &server.password).await.0,
        0,
        "the builder's password works through the tunnel"
    );

    // It counts as a VNC connection, and revocation cuts it.
    let mut events = authority.subscribe();
    let held = hold_open(local, creds.vnc_password().expose());
    let connected = next_event(&mut events, "connected").await;
    assert!(matches!(
        connected.kind,
        remote_access_core::EventKind::Connected { protocol: remote_access_core::Protocol::Vnc, .. }
    ));
    authority.revoke(creds.build_id(), "tunnel test").await.unwrap();
    exits(held).await;
    let _ = tunnel.start_kill();
}

/// The generated POSIX script's `--vnc [port]` opens that tunnel and says where to point the
/// VNC client; a build without VNC says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_vnc_switch_opens_the_tunnel() {
    let authority = authority(AuthorityOptions::default());
    let gateway = gateway(&authority);
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let server = tigervnc("script-pw");
    let mut request: BuildRequest = crate::builds::request("script-vnc", server.builder());
    request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let script =
        posix_script(&authority, &gateway, running.local_addr().port(), &creds, scratch.path(), "vnc.sh")
            .await;
    let local = free_port();
    // In a process group of its own: the script's ssh is its child, and must go with it.
    let mut tunnel = script_command(&script)
        .args(["--vnc", &local.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .start();
    let group = tunnel.id().unwrap();
    let mut said = tokio::io::BufReader::new(tunnel.stderr.take().unwrap()).lines();
    let announced = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = said.next_line().await {
            eprintln!("script: {line}");
            if line.contains("connect a VNC client") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("the script announces the tunnel");
    assert!(announced.contains(&format!("127.0.0.1::{local}")), "{announced}");
    tokio::spawn(async move {
        while let Ok(Some(line)) = said.next_line().await {
            eprintln!("script: {line}");
        }
    });
    eventually("the script's tunnel to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", local)).await.is_ok()
    })
    .await;
    let fx = Fixture { authority: authority.clone(), running, scratch };
    let (code, size) = capture(&fx, local, creds.vnc_password().expose()).await;
    assert_eq!(code, 0, "vncdo through the script's tunnel");
    assert!(size.is_some(), "a screenshot through the script's tunnel");
    let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{group}")]).finish().await;
    let _ = tunnel.wait().await;

    // A build without VNC.
    let builder = Sshd::start();
    let plain = authority.issue(crate::builds::request("script-no-vnc", builder.builder())).await.unwrap();
    let port = fx.running.local_addr().port();
    let script = posix_script(&authority, &gateway, port, &plain, fx.scratch.path(), "plain.sh").await;
    let out = script_command(&script).arg("--vnc").stdin(Stdio::null()).finish().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this build has no VNC"));
}
