//! Real test peers: an OpenSSH `sshd` playing the builder, started and stopped by PID.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, Gateway, GatewayOptions, Trigger,
};

/// A free loopback port (bind :0, read it, close it).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on the loopback port.
pub fn wait_for_port(port: u16) {
    wait_for(("127.0.0.1", port));
}

/// Waits until something accepts TCP connections at the address.
pub fn wait_for(addr: (&str, u16)) {
    wait_for_or(addr, String::new);
}

/// [`wait_for`], showing `log()` if it never comes up.
pub fn wait_for_or(addr: (&str, u16), log: impl Fn() -> String) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {addr:?}: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real OpenSSH sshd on a loopback port, as the builder. Root logs in with keys from
/// `authorized_keys`; `FCI_BUILD_DIR` is set for every session.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub address: std::net::IpAddr,
    pub port: u16,
    pub host_key: String,
    pub build_dir: PathBuf,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_on("127.0.0.1")
    }

    /// An sshd listening on another loopback address (e.g. 127.0.0.2).
    pub fn start_on(address: &str) -> Sshd {
        let dir = tempfile::Builder::new().prefix("ra-sshd-").tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let build_dir = d.join("build dir");
        std::fs::create_dir_all(&build_dir).unwrap();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_ed25519")));
        std::fs::write(d.join("authorized_keys"), "").unwrap();
        let config = format!(
            "ListenAddress {address}\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n\
             AllowTcpForwarding yes\nSetEnv \"FCI_BUILD_DIR={b}\"\nLogLevel VERBOSE\n",
            d = d.display(),
            b = build_dir.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let host_key = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
                .spawn()
                .expect("start sshd (apt-get install openssh-server)");
            let start = Instant::now();
            while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect((address, port)).is_ok() {
                    return Sshd { dir, address: address.parse().unwrap(), port, host_key, build_dir, child };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop(&mut child); // the port was taken meanwhile, or sshd failed: try another
        }
        panic!("sshd did not start: {}", std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default());
    }

    /// Lets `line` (an authorized_keys line) log in.
    pub fn authorize(&self, line: &str) {
        use std::io::Write;
        let mut file =
            std::fs::OpenOptions::new().append(true).open(self.dir.path().join("authorized_keys")).unwrap();
        writeln!(file, "{line}").unwrap();
    }

    /// The listening sshd's process id (its per-connection children are reaped into its
    /// `cutime`/`cstime`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The builder route for a build served by this sshd.
    pub fn builder(&self) -> Builder {
        let mut builder = Builder::new(self.address);
        builder.ssh_port = self.port;
        builder.user = "root".into();
        builder.host_key = Some(self.host_key.clone());
        builder
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, a moment to exit, then SIGKILL.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Gateway options for tests: a short rejection delay keeps refusal tests quick.
pub fn gateway_options() -> GatewayOptions {
    let mut options = GatewayOptions::default();
    options.auth_rejection_delay = Duration::from_millis(100);
    options
}

pub fn authority(options: AuthorityOptions) -> Authority {
    Authority::new(options).unwrap()
}

pub fn gateway(authority: &Authority) -> Gateway {
    Gateway::new(authority.clone(), gateway_options()).unwrap()
}

pub fn request(id: &str, builder: Builder) -> BuildRequest {
    let mut request = BuildRequest::new(BuildId::new(id).unwrap(), Trigger::Manual, true);
    request.builder = Some(builder);
    request
}

/// Writes a script (mode 600) and returns its path.
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    path
}

/// The build's POSIX connection script for a gateway on 127.0.0.1:`port`, written to
/// `dir/name` (mode 600).
pub async fn posix_script(
    authority: &Authority,
    gateway: &Gateway,
    port: u16,
    creds: &remote_access_core::Credentials,
    dir: &Path,
    name: &str,
) -> PathBuf {
    posix_script_at(authority, gateway.host_key(), ("127.0.0.1", port), creds, dir, name).await
}

/// The same for a gateway at `address` with `host_key`.
pub async fn posix_script_at(
    authority: &Authority,
    host_key: &remote_access_core::HostKey,
    address: (&str, u16),
    creds: &remote_access_core::Credentials,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let session = authority.session(creds.build_id()).await.unwrap();
    let options = remote_access_core::ScriptOptions::new(address.0, address.1);
    let info = remote_access_core::ConnectionInfo::new(creds, &session, host_key, &options).unwrap();
    write_script(dir, name, info.posix_script(creds).unwrap().expose())
}

/// A child process stopped by PID when dropped (in its own process group, so helpers it
/// forks, like Xtigervnc's xkbcomp, go too).
pub struct Server {
    pub child: Child,
    pub name: &'static str,
}

impl Server {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Server {
        use std::os::unix::process::CommandExt;
        let child =
            cmd.process_group(0).stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Server { child, name }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        // Quiet: the group may be gone already (killed on purpose by the test).
        let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// A free X display number (no socket and no lock file yet). Tests of one process take turns
/// through a counter; processes start at different offsets.
fn free_display() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = 100 + (std::process::id() % 200) * 4;
    (0..2000)
        .map(|_| start + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2000)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display")
}

/// A builder's VNC server with its own password, on a loopback port.
pub struct VncServer {
    pub port: u16,
    pub password: String,
    pub width: u32,
    pub height: u32,
    pub dir: tempfile::TempDir,
    _servers: Vec<Server>,
}

/// Waits until an X display's socket exists.
fn wait_for_display(n: u32) {
    let start = Instant::now();
    while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "X display :{n} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl VncServer {
    /// Xvfb + x11vnc, with a password file written by the library's own helper.
    pub fn x11vnc(password: &str) -> VncServer {
        Self::x11vnc_on(password, "127.0.0.1")
    }

    /// The same, listening on another loopback address (e.g. 127.0.0.2).
    pub fn x11vnc_on(password: &str, address: &str) -> VncServer {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, remote_access_core::vnc_password_file(password)).unwrap();
        let display = free_display();
        let xvfb = Server::spawn(
            "Xvfb",
            Command::new("Xvfb")
                .arg(format!(":{display}"))
                .args(["-screen", "0", "640x480x24", "-nolisten", "tcp"])
                .stderr(Stdio::null()),
        );
        wait_for_display(display);
        let port = free_port();
        let vnc = Server::spawn(
            "x11vnc",
            Command::new("x11vnc")
                .args([
                    "-display",
                    &format!(":{display}"),
                    "-rfbport",
                    &port.to_string(),
                    "-listen",
                    address,
                    "-rfbauth",
                ])
                .arg(&passwd)
                .args(["-forever", "-shared", "-quiet", "-nopw"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("x11vnc.log")).unwrap()),
        );
        let log = dir.path().join("x11vnc.log");
        wait_for_or((address, port), || std::fs::read_to_string(&log).unwrap_or_default());
        VncServer { port, password: password.into(), width: 640, height: 480, dir, _servers: vec![vnc, xvfb] }
    }

    /// TigerVNC's Xtigervnc (its own X server), password file from the library's helper.
    pub fn tigervnc(password: &str) -> VncServer {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, remote_access_core::vnc_password_file(password)).unwrap();
        let display = free_display();
        let port = free_port();
        let vnc = Server::spawn(
            "Xtigervnc",
            Command::new("Xtigervnc")
                .arg(format!(":{display}"))
                .args(["-geometry", "800x600", "-depth", "24", "-rfbport", &port.to_string(), "-localhost=1"])
                .args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
                .arg(&passwd)
                .args(["-nolisten", "tcp", "-desktop", "ci-vm"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_port(port);
        VncServer { port, password: password.into(), width: 800, height: 600, dir, _servers: vec![vnc] }
    }

    /// The builder route, with this VNC server and the SSH side of `sshd` (if any).
    pub fn builder(&self) -> Builder {
        let mut builder = Builder::new("127.0.0.1".parse().unwrap());
        builder.vnc_port = Some(self.port);
        builder
    }
}

/// The width and height in a PNG's header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some((word(16), word(20)))
}

/// Waits for the next event of `kind`, skipping others; panics after a minute.
pub async fn next_event(
    events: &mut remote_access_core::Subscription,
    kind: &str,
) -> remote_access_core::Event {
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

/// A VNC client session through the gateway (RFB 3.8, VNC Authentication, raw encoding),
/// held open: the user's screen.
pub struct VncViewer {
    tcp: tokio::net::TcpStream,
    bytes_per_pixel: usize,
}

impl VncViewer {
    /// RFB 3.8 with VNC Authentication, then ClientInit (shared) and the ServerInit.
    pub async fn connect(port: u16, password: &str) -> VncViewer {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut version = [0u8; 12];
        tcp.read_exact(&mut version).await.unwrap();
        tcp.write_all(b"RFB 003.008\n").await.unwrap();
        let count = tcp.read_u8().await.unwrap() as usize;
        let mut types = vec![0u8; count];
        tcp.read_exact(&mut types).await.unwrap();
        assert!(types.contains(&2), "VNC Authentication offered: {types:?}");
        tcp.write_all(&[2]).await.unwrap();
        let mut challenge = [0u8; 16];
        tcp.read_exact(&mut challenge).await.unwrap();
        tcp.write_all(&remote_access_core::vnc_auth_response(password, &challenge)).await.unwrap();
        assert_eq!(tcp.read_u32().await.unwrap(), 0, "VNC login accepted");
        tcp.write_all(&[1]).await.unwrap();
        let mut init = [0u8; 24];
        tcp.read_exact(&mut init).await.unwrap();
        let bytes_per_pixel = usize::from(init[4] / 8);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; name_len];
        tcp.read_exact(&mut name).await.unwrap();
        VncViewer { tcp, bytes_per_pixel }
    }

    /// Asks for an 8x8 corner of the screen (raw encoding, the default) and reads the update.
    pub async fn refresh(&mut self) {
        let request = [3u8, 0, 0, 0, 0, 0, 0, 8, 0, 8];
        self.tcp.write_all(&request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let kind = self.tcp.read_u8().await.unwrap();
                match kind {
                    0 => break,                                           // FramebufferUpdate
                    2 => continue,                                        // Bell
                    other => panic!("unexpected server message {other}"), // no colour maps, no cut text asked
                }
            }
            let _pad = self.tcp.read_u8().await.unwrap();
            let rects = self.tcp.read_u16().await.unwrap();
            for _ in 0..rects {
                let mut header = [0u8; 12];
                self.tcp.read_exact(&mut header).await.unwrap();
                let (w, h) =
                    (u16::from_be_bytes([header[4], header[5]]), u16::from_be_bytes([header[6], header[7]]));
                let encoding = i32::from_be_bytes([header[8], header[9], header[10], header[11]]);
                assert_eq!(encoding, 0, "raw encoding");
                let mut pixels = vec![0u8; usize::from(w) * usize::from(h) * self.bytes_per_pixel];
                self.tcp.read_exact(&mut pixels).await.unwrap();
            }
        })
        .await
        .expect("the VNC session answers");
    }
}

/// A real `redis-server` on a free loopback port, with an append-only file synced at every
/// write, so that killing it (even with SIGKILL) and starting it again loses nothing.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    durable: bool,
    server: Option<Server>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(true)
    }

    /// Without the append-only file: what a benchmark of the gateways (not of a disk) needs.
    pub fn start_in_memory() -> RedisServer {
        Self::start_with(false)
    }

    fn start_with(durable: bool) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("ra-redis-").tempdir().unwrap();
        let mut redis = RedisServer { port: free_port(), dir, durable, server: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null());
        self.server = Some(Server::spawn("redis-server", &mut cmd));
        wait_for_port(self.port);
    }

    /// SIGKILL: Redis vanishes at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

/// Runs a generated POSIX script with arguments; returns (exit code, stdout, stderr).
pub async fn run_script(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("sh").arg(path).args(args).stdin(Stdio::null()).output(),
    )
    .await
    .expect("the script finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a script that keeps its connection open (`sleep`), to be cut; returns once the
/// builder has answered through it, so the connection is fully up.
pub async fn start_long_script(script: &Path) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("sh")
        .arg(script)
        .arg("echo ready; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert!(matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"), "the long script came up: {ready:?}");
    child
}

/// Waits for a process to exit; returns its code and stderr.
pub async fn exit_of(mut child: tokio::process::Child) -> (i32, String) {
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the connection was cut")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    (status.code().unwrap_or(-1), stderr)
}

/// Runs a command to its end (60 s at most); returns (exit code, stdout, stderr).
pub async fn output_of(cmd: &mut tokio::process::Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.stdin(Stdio::null()).output())
        .await
        .expect("finishes")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Retries until `check` passes (the agent reconnects in the background); panics after 30 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
