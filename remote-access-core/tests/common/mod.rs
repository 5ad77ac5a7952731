//! Real test peers, started and stopped by PID: an OpenSSH `sshd` playing the builder, its VNC
//! servers (x11vnc on Xvfb, TigerVNC), Redis; and a VNC viewer playing the user.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, Gateway, GatewayOptions, Trigger,
};

/// A free loopback port (bind :0, read it, close it). Another process can take it before a
/// server binds it: start servers with [`Server::on_free_port`], which retries.
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
    server: Server,
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
        let log = d.join("sshd.log");
        let (port, server) = Server::on_free_port(
            "sshd",
            |port| {
                let mut cmd = Command::new("/usr/sbin/sshd");
                cmd.args(["-D", "-e", "-f"])
                    .arg(d.join("sshd_config"))
                    .args(["-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap());
                cmd
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        Sshd { dir, address: address.parse().unwrap(), port, host_key, build_dir, server }
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
        self.server.child.id()
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

    /// Starts `command(port)` on a free loopback port and waits until it listens there; on
    /// another port when it does not (a few tries), because another process may have taken the
    /// port since [`free_port`] chose it. `log()` explains a final failure.
    pub fn on_free_port(
        name: &'static str,
        mut command: impl FnMut(u16) -> Command,
        log: impl Fn() -> String,
    ) -> (u16, Server) {
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = Server::spawn(name, &mut command(port));
            if server.wait_listening(port) {
                return (port, server);
            }
        } // each failed try is stopped when `server` drops
        panic!("{name} did not start: {}", log());
    }

    /// Waits until this process itself listens on the IPv4 `port`; false when it exits first or
    /// takes longer than 20 s (a busy machine is slow, but these servers bind within 0.1 s).
    pub fn wait_listening(&mut self, port: u16) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if listens_on(self.child.id(), port) {
                return true;
            }
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false; // it could not bind (all of these servers exit then), or crashed
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Whether process `pid` itself holds a listening IPv4 TCP socket on `port`. A successful
/// connect proves less: when another program took the port first, it answers in our server's
/// place (x11vnc even stays up then, listening on IPv6 alone).
fn listens_on(pid: u32, port: u16) -> bool {
    // Rows of /proc/net/tcp: "sl local_address rem_address st ... inode", where
    // local_address is HEXADDR:HEXPORT and st 0A is LISTEN.
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let port = format!(":{port:04X}");
    let sockets: Vec<PathBuf> = table
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A")
        .map(|f| PathBuf::from(format!("socket:[{}]", f[9])))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| sockets.contains(&target)))
}

/// Starts an X server with `-displayfd`: it picks a free display itself, taking the display's
/// lock file atomically, so no other process can race us to a number we chose; and it writes
/// the number (to its stdout here) only once it accepts connections. Returns the number.
fn start_x_server(name: &'static str, cmd: &mut Command) -> (Server, u32) {
    let mut server = Server::spawn(name, cmd.args(["-displayfd", "1"]).stdout(Stdio::piped()));
    let stdout = server.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let _ = tx.send(lines.next());
        lines.for_each(drop); // keep the pipe drained until the server exits
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    match &first {
        Ok(Some(Ok(line))) => line.trim().parse().ok(),
        _ => None,
    }
    .map(|display| (server, display))
    .unwrap_or_else(|| panic!("{name} gave no display number: {first:?}"))
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

/// A builder's VNC server with its own password, on a loopback port.
pub struct VncServer {
    pub port: u16,
    pub password: String,
    pub width: u32,
    pub height: u32,
    pub dir: tempfile::TempDir,
    _servers: Vec<Server>,
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
        let (xvfb, display) = start_x_server(
            "Xvfb",
            Command::new("Xvfb")
                .args(["-screen", "0", "640x480x24", "-nolisten", "tcp"])
                .stderr(Stdio::null()),
        );
        let log = dir.path().join("x11vnc.log");
        let (port, vnc) = Server::on_free_port(
            "x11vnc",
            |port| {
                let mut cmd = Command::new("x11vnc");
                cmd.args([
                    "-display",
                    &format!(":{display}"),
                    "-rfbport",
                    &port.to_string(),
                    "-listen",
                    address,
                ])
                // IPv4 only: by default x11vnc also listens on [::] (every interface) on this
                // port and on 5900, and when the IPv4 port is taken it stays up on IPv6
                // instead of exiting.
                .args(["-noipv6", "-rfbportv6", "-1", "-rfbauth"])
                .arg(&passwd)
                .args(["-forever", "-shared", "-quiet", "-nopw"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
                cmd
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        VncServer { port, password: password.into(), width: 640, height: 480, dir, _servers: vec![vnc, xvfb] }
    }

    /// TigerVNC's Xtigervnc (its own X server), password file from the library's helper.
    pub fn tigervnc(password: &str) -> VncServer {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, remote_access_core::vnc_password_file(password)).unwrap();
        let log = dir.path().join("Xtigervnc.log");
        let (port, vnc) = Server::on_free_port(
            "Xtigervnc",
            |port| {
                let mut cmd = Command::new("Xtigervnc");
                // `-displayfd` makes it pick a free display itself (see `start_x_server`); only
                // its RFB port matters here, so the number goes nowhere.
                cmd.args(["-displayfd", "1", "-geometry", "800x600", "-depth", "24"])
                    .args(["-rfbport", &port.to_string(), "-localhost=1"])
                    .args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
                    .arg(&passwd)
                    .args(["-nolisten", "tcp", "-desktop", "ci-vm"])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap());
                cmd
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
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
/// held open: the user's screen. It reads every message RFB 3.8 lets a server send at any
/// time, in any order, with every length capped.
pub struct VncViewer {
    tcp: tokio::net::TcpStream,
    bytes_per_pixel: u64,
    width: u16,
    height: u16,
    /// FramebufferUpdateRequests sent: `refresh` alternates between two areas by it.
    requests: u32,
}

/// Longest failure reason or desktop name accepted (vnc.md §5 caps them at about 4 KiB).
const MAX_TEXT: u32 = 4096;
/// Longest clipboard text accepted (it is skipped, never held in memory).
const MAX_CUT_TEXT: u32 = 1 << 20;

impl VncViewer {
    /// RFB 3.8 with VNC Authentication, then ClientInit (shared), the ServerInit, and
    /// SetEncodings asking for Raw only.
    pub async fn connect(port: u16, password: &str) -> VncViewer {
        let handshake = async {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut version = [0u8; 12];
            tcp.read_exact(&mut version).await.unwrap();
            assert_eq!(&version, b"RFB 003.008\n", "the gateway speaks RFB 3.8");
            tcp.write_all(b"RFB 003.008\n").await.unwrap();
            let count = tcp.read_u8().await.unwrap() as usize;
            if count == 0 {
                panic!("VNC connection refused: {}", read_text(&mut tcp).await);
            }
            let mut types = vec![0u8; count];
            tcp.read_exact(&mut types).await.unwrap();
            assert!(types.contains(&2), "VNC Authentication offered: {types:?}");
            tcp.write_all(&[2]).await.unwrap();
            let mut challenge = [0u8; 16];
            tcp.read_exact(&mut challenge).await.unwrap();
            tcp.write_all(&remote_access_core::vnc_auth_response(password, &challenge)).await.unwrap();
            let result = tcp.read_u32().await.unwrap();
            if result != 0 {
                panic!("VNC login refused ({result}): {}", read_text(&mut tcp).await);
            }
            tcp.write_all(&[1]).await.unwrap();
            // ServerInit: width, height, PIXEL_FORMAT (bits-per-pixel first), then the name.
            let mut init = [0u8; 20];
            tcp.read_exact(&mut init).await.unwrap();
            let _name = read_text(&mut tcp).await;
            assert!(matches!(init[4], 8 | 16 | 32), "bits per pixel: {}", init[4]);
            // Raw only: a server must then send no other encoding and no pseudo-encoding.
            tcp.write_all(&[2, 0, 0, 1, 0, 0, 0, 0]).await.unwrap();
            VncViewer {
                tcp,
                bytes_per_pixel: u64::from(init[4] / 8),
                width: u16::from_be_bytes([init[0], init[1]]),
                height: u16::from_be_bytes([init[2], init[3]]),
                requests: 0,
            }
        };
        tokio::time::timeout(Duration::from_secs(30), handshake).await.expect("the VNC handshake finishes")
    }

    /// Asks for an 8x8 area of the screen and waits until updates have covered it, skipping
    /// other messages. Successive calls ask for two disjoint areas in turn, so an update for
    /// the previous call still in flight cannot pass for the answer to this one.
    pub async fn refresh(&mut self) {
        assert!(self.width >= 16 && self.height >= 8, "a screen of at least 16x8");
        let left = if self.requests.is_multiple_of(2) { 0 } else { 8 };
        self.requests += 1;
        let mut request = vec![3u8, 0]; // FramebufferUpdateRequest, not incremental
        for field in [left, 0, 8, 8] {
            request.extend(u16::to_be_bytes(field));
        }
        self.tcp.write_all(&request).await.unwrap();
        let mut covered = 0u64; // one bit per pixel of the area
        tokio::time::timeout(Duration::from_secs(30), async {
            while covered != u64::MAX {
                for [x, y, w, h] in self.read_message().await {
                    for (dx, py) in (0..8u32).flat_map(|py| (0..8).map(move |dx| (dx, py))) {
                        let px = u32::from(left) + dx;
                        if (x..x + w).contains(&px) && (y..y + h).contains(&py) {
                            covered |= 1 << (py * 8 + dx);
                        }
                    }
                }
            }
        })
        .await
        .expect("the VNC session answers");
    }

    /// Reads one server message and returns the rectangles (x, y, w, h) of a FramebufferUpdate;
    /// nothing for the other messages, which the viewer does not use.
    async fn read_message(&mut self) -> Vec<[u32; 4]> {
        match self.tcp.read_u8().await.unwrap() {
            0 => {
                // FramebufferUpdate: padding, U16 count, then per rectangle x, y, w, h (U16
                // each), S32 encoding and its data.
                let mut head = [0u8; 3];
                self.tcp.read_exact(&mut head).await.unwrap();
                let mut rects = Vec::new();
                for _ in 0..u16::from_be_bytes([head[1], head[2]]) {
                    let mut rect = [0u8; 12];
                    self.tcp.read_exact(&mut rect).await.unwrap();
                    let field = |i: usize| u32::from(u16::from_be_bytes([rect[i], rect[i + 1]]));
                    let [x, y, w, h] = [field(0), field(2), field(4), field(6)];
                    let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
                    assert_eq!(encoding, 0, "only Raw was asked for");
                    // Inside the screen, which caps the pixel data.
                    assert!(x + w <= u32::from(self.width) && y + h <= u32::from(self.height), "{rect:?}");
                    self.skip(u64::from(w) * u64::from(h) * self.bytes_per_pixel).await;
                    rects.push([x, y, w, h]);
                }
                rects
            }
            1 => {
                // SetColourMapEntries: padding, U16 first colour, U16 count, 6 bytes a colour.
                let mut head = [0u8; 5];
                self.tcp.read_exact(&mut head).await.unwrap();
                self.skip(6 * u64::from(u16::from_be_bytes([head[3], head[4]]))).await;
                Vec::new()
            }
            2 => Vec::new(), // Bell
            3 => {
                // ServerCutText: 3 bytes padding, U32 length, text.
                let mut head = [0u8; 3];
                self.tcp.read_exact(&mut head).await.unwrap();
                let len = self.tcp.read_u32().await.unwrap();
                assert!(len <= MAX_CUT_TEXT, "cut text of {len} bytes");
                self.skip(u64::from(len)).await;
                Vec::new()
            }
            // Others come only after the client asked for an extension, which this one never does.
            other => panic!("server message type {other}, which RFB 3.8 does not send unasked"),
        }
    }

    /// Reads and drops `len` bytes without holding them.
    async fn skip(&mut self, len: u64) {
        let skipped = tokio::io::copy(&mut (&mut self.tcp).take(len), &mut tokio::io::sink()).await.unwrap();
        assert_eq!(skipped, len, "the VNC server closed mid-message");
    }
}

/// Reads an RFB string (U32 length, then the bytes), capped at [`MAX_TEXT`].
async fn read_text(tcp: &mut tokio::net::TcpStream) -> String {
    let len = tcp.read_u32().await.unwrap();
    assert!(len <= MAX_TEXT, "a text of {len} bytes");
    let mut text = vec![0u8; len as usize];
    tcp.read_exact(&mut text).await.unwrap();
    String::from_utf8_lossy(&text).into_owned()
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
        let mut redis = RedisServer { port: 0, dir, durable, server: None };
        let (port, server) = Server::on_free_port("redis-server", |port| redis.command(port), String::new);
        (redis.port, redis.server) = (port, Some(server));
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let mut server = Server::spawn("redis-server", &mut self.command(self.port));
        // No retry on another port: the gateways under test know this one.
        assert!(server.wait_listening(self.port), "redis-server did not come back on port {}", self.port);
        self.server = Some(server);
    }

    fn command(&self, port: u16) -> Command {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null());
        cmd
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

/// A loopback test client's SSH handler: accepts any host key (the gateway's key is not what
/// such a test checks).
pub struct AnyKey;

impl russh::client::Handler for AnyKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A TCP connection to `to` from the loopback address `from` (bound first, so that the gateway
/// sees that address).
pub async fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Polls the gateway's counters until `want` holds (a minute at most).
pub async fn settle(
    gateway: &Gateway,
    want: impl Fn(&remote_access_core::GatewayStats) -> bool,
) -> remote_access_core::GatewayStats {
    for _ in 0..600 {
        let stats = gateway.stats();
        if want(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway's counters did not settle: {:?}", gateway.stats());
}

/// Log output captured in memory (a `tracing` writer).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A TRACE-level subscriber writing into `logs`.
pub fn capture(logs: &Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish()
}
