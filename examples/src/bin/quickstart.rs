//! The quickstart: a gateway and a stand-in builder on loopback, with the in-memory defaults.
//!
//! It issues credentials for one build, writes the connection script to a private file, prints
//! how to run it and when access ends, and serves until Ctrl-C or until the session ends (log
//! out of the builder to end it: the build's steps are already complete, so logging out
//! finishes the build).
//!
//! `--self-test` runs the generated script itself with the system `ssh`, prints what came back,
//! logs out, and exits 0 only if everything worked.
//!
//! Run: `cargo run -p remote-access-examples --bin quickstart [-- --self-test]`
//!
//! Only warnings are logged (to stderr) by default, since it prints every event itself;
//! `RUST_LOG=info` or `RUST_LOG=debug` shows what the gateway logs too.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, ConnectionInfo, EventKind, Gateway,
    GatewayOptions, ScriptOptions, TlsIdentity, Trigger,
};
use remote_access_examples::stand_in_builder::StandInBuilder;
use remote_access_examples::stand_in_vnc::{HEIGHT, StandInVnc, WIDTH, fetch_frame};

#[tokio::main]
async fn main() -> ExitCode {
    remote_access_examples::logging::init("quickstart", tracing_subscriber::filter::LevelFilter::WARN, false);
    match run(std::env::args().any(|a| a == "--self-test")).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("quickstart failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(self_test: bool) -> Result<bool, Box<dyn std::error::Error>> {
    let work = PrivateDir::create()?;
    let build_dir = work.0.join("build");
    std::fs::create_dir(&build_dir)?;
    std::fs::write(build_dir.join("README.txt"), "This is the stand-in builder's build directory.\n")?;

    // The platform side: an authority with one VNC port, and a gateway on loopback.
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()];
    let authority = Authority::new(options)?;
    // VNC over TLS (VeNCrypt, and wss:// for browsers) with a self-signed certificate; a
    // production gateway uses one from a CA its users trust, persisted like the host key.
    let vnc_tls = TlsIdentity::generate(&["127.0.0.1", "localhost"])?;
    let vnc_ca = work.0.join("vnc-ca.pem");
    std::fs::write(&vnc_ca, vnc_tls.certificate_pem())?;
    let mut gateway_options = GatewayOptions::default();
    gateway_options.vnc_tls = Some(vnc_tls.clone());
    let gateway = Gateway::new(authority.clone(), gateway_options)?;
    let running = gateway.start("127.0.0.1:0").await?;
    // The builder: an SSH server and a VNC server, waiting for the build's secrets.
    let builder = StandInBuilder::start(build_dir.clone()).await?;
    let vnc = StandInVnc::start().await?;
    let mut events = authority.subscribe();

    // A user starts build 1 by hand with remote access enabled.
    let build_id = BuildId::new("quickstart-1")?;
    let mut request = BuildRequest::new(build_id.clone(), Trigger::Manual, true);
    let mut route = Builder::new(builder.addr.ip());
    route.ssh_port = builder.addr.port();
    route.user = builder.user.clone();
    route.host_key = Some(builder.host_key.clone());
    route.vnc_port = Some(vnc.addr.port());
    request.builder = Some(route);
    let credentials = authority.issue(request).await?;
    // Install the build's secrets on the builder: the user's public key for sshd, and the VNC
    // password generated for this build (never shown to users) for its VNC server. Being per
    // build, it is worth nothing to a user who captures it on their builder.
    builder.authorize(&credentials.authorized_keys_line())?;
    let builder_vnc_password =
        credentials.builder_vnc_password().ok_or("no builder VNC password was generated")?;
    vnc.install_password(builder_vnc_password);
    // The build's steps are done: remote access runs for the grace period, or until logout.
    authority.steps_completed(&build_id).await?;

    let session = authority.session(&build_id).await?;
    let mut options = ScriptOptions::new("127.0.0.1", running.local_addr().port());
    options.vnc_tls_fingerprint = Some(vnc_tls.fingerprint().to_owned());
    let info = ConnectionInfo::new(&credentials, &session, gateway.host_key(), &options)?;
    let script = work.0.join("connect.sh");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&script)?
        .write_all(info.posix_script(&credentials)?.expose().as_bytes())?;
    let vnc_file = work.0.join("vnc.txt");
    if let Some(text) = info.vnc_instructions(&credentials)? {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&vnc_file)?
            .write_all(text.expose().as_bytes())?;
    }
    // Only the self-test plays the user's VNC client; the password otherwise stays in the file.
    let user_vnc_password = self_test.then(|| credentials.vnc_password().clone());
    drop(credentials); // the private key now lives only in the script

    println!("gateway:     127.0.0.1:{} (host key {})", info.gateway_port, info.gateway_host_key_fingerprint);
    println!(
        "builder:     {}:{} (stand-in, build dir {})",
        info.builder_host,
        info.builder_port,
        build_dir.display()
    );
    println!("script:      {}", script.display());
    println!("access:      {}; logging out (exit) after the steps finishes the build", info.access_rule);
    if let (Some(host), Some(port)) = (&info.vnc_host, info.vnc_port) {
        let file = vnc_file.display();
        println!("vnc:         {host}::{port} (stand-in screen {WIDTH}x{HEIGHT}); password in {file}");
        println!(
            "vnc over TLS: xtigervncviewer -SecurityTypes X509Vnc -X509CA {} {host}::{port}",
            vnc_ca.display()
        );
    }
    if let Some(url) = &info.vnc_websocket_url {
        println!("vnc browser: {url} (noVNC)");
    }

    if let (Some(password), Some(port)) = (user_vnc_password, info.vnc_port) {
        return self_test_run(&script, &build_dir, port, password.expose(), &mut events).await;
    }
    println!("\nIn another terminal run:\n\n    sh {}\n\nCtrl-C here stops everything.\n", script.display());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("stopping");
                break;
            }
            event = events.next() => {
                let Some(event) = event else { break };
                println!("event: {:<16} {}", event.kind.as_str(), event.reason);
                if event.kind == EventKind::FinishBuild {
                    println!("the session is over; the platform would now finish the build");
                    break;
                }
            }
        }
    }
    running.stop().await?;
    Ok(true)
}

/// Runs the generated script with the system ssh and checks what came back.
async fn self_test_run(
    script: &std::path::Path,
    build_dir: &std::path::Path,
    vnc_port: u16,
    vnc_password: &str,
    events: &mut remote_access_core::Subscription,
) -> Result<bool, Box<dyn std::error::Error>> {
    // VNC first, held open while SSH runs: only the last connection to close is the logout.
    println!("\nself-test: VNC to 127.0.0.1::{vnc_port} with the build's password");
    let mut vnc = tokio::net::TcpStream::connect(("127.0.0.1", vnc_port)).await?;
    let vnc_ok = match fetch_frame(&mut vnc, vnc_password).await {
        Ok(size) => {
            println!("self-test: VNC framebuffer {}x{} received", size.0, size.1);
            size == (WIDTH, HEIGHT)
        }
        Err(err) => {
            println!("self-test: VNC failed: {err}");
            false
        }
    };
    println!("self-test: sh {} 'printenv FCI_BUILD_DIR; pwd'", script.display());
    let out = tokio::process::Command::new("sh")
        .arg(script)
        .arg("printenv FCI_BUILD_DIR; pwd")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let expected = build_dir.display().to_string();
    let ssh_ok =
        out.status.success() && stdout.lines().collect::<Vec<_>>() == [expected.as_str(), expected.as_str()];
    let ok = vnc_ok && ssh_ok;
    // Closing VNC, the last connection, is the user's logout.
    drop(vnc);
    let mut finished = false;
    while let Ok(Some(event)) = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await
    {
        println!("event: {:<16} {}", event.kind.as_str(), event.reason);
        if event.kind == EventKind::FinishBuild {
            finished = true;
            break;
        }
    }
    println!("self-test: {}", if ok && finished { "passed" } else { "FAILED" });
    Ok(ok && finished)
}

/// A private (0700) working directory, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("remote-access-quickstart-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
