//! The VNC clients users run, given exactly what the gateway's instructions print as the target
//! (`127.0.0.1::5973` for a port, `127.0.0.1:73` for display 73, i.e. port 5973): TigerVNC's
//! viewer on a [`Screen`], and the screenshot tools `gvnccapture` (gtk-vnc) and `vncsnapshot`.
//! Plus the real `vncpasswd -f`, and a free port that the display form can name.
//!
//! How each reads a target differs, which is why a test should give each one what users type:
//! TigerVNC takes `host::port`, and `host:N` as display N when N < 100, else as port N;
//! vncsnapshot takes both forms; gvnccapture takes `host:N` only, always as port 5900 + N (it
//! reads `127.0.0.1::5973` as display 0, port 5900).

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::programs::{Run, RunAsync, require};
use crate::screen::{PATIENCE, POLL, Screen};
use crate::server::Server;

/// The password file `vncpasswd -f` writes for `password` (TigerVNC's tool: 8 DES-obfuscated
/// bytes; longer passwords are cut to 8 characters): what VNC servers' `-rfbauth` /
/// `-PasswordFile` and the viewers' `-passwd` read.
pub fn vncpasswd(password: &str) -> Vec<u8> {
    let mut child = Command::new("vncpasswd")
        .arg("-f")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = child.stdin.take().expect("piped stdin");
    std::io::Write::write_all(&mut stdin, format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.len() == 8,
        "vncpasswd -f: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `vncpasswd(password)` to `dir/name`, mode 600.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &vncpasswd(password)).unwrap();
    path
}

/// TigerVNC's viewer (`xtigervncviewer`, 1.12 on Debian 12) showing on a [`Screen`], as a user
/// runs it; killed on drop. Judge it by its log: it never exits by itself after a failure (a
/// wrong password, a certificate it does not trust): it shows a dialog and waits for a person.
/// At this log level it also draws its statistics graph over the lower right of the remote
/// screen (about 5% of a 640×480 one).
pub struct TigerViewer {
    viewer: Server,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TigerViewer {
    /// In the log once the session runs (after authentication and the server's init message).
    pub const CONNECTED: &str = "CConn:       Using pixel format";
    /// In the log when the server refused the password (the server's reason follows).
    pub const AUTH_FAILED: &str = "Authentication failure";
    /// In the log when the TLS certificate does not verify (`-SecurityTypes X509Vnc` with the
    /// wrong `-X509CA`: "server cert signer not found" follows); the viewer then asks whether
    /// to make an exception, and waits.
    pub const CERTIFICATE_INVALID: &str = "TLS:         server certificate invalid";

    /// Starts `xtigervncviewer -passwd FILE -ReconnectOnError=0 -Log *:stderr:100 OPTIONS
    /// TARGET` on `screen`: `target` is what the user types (`127.0.0.1::5973`,
    /// `localhost:1`); `options` e.g. `["-SecurityTypes", "X509Vnc", "-X509CA", ca]`. The
    /// password file comes from [`vncpasswd`], so no prompt appears. `HOME` is a directory of
    /// its own: the viewer keeps saved certificates and settings under `~/.vnc`, which must not
    /// carry over from another test or the user.
    pub fn start(screen: &Screen, target: &str, password: &str, options: &[&str]) -> TigerViewer {
        let dir = tempfile::Builder::new().prefix("ra-tigervnc-").tempdir().unwrap();
        let passwd = password_file(dir.path(), "passwd", password);
        let log = dir.path().join("viewer.log");
        let viewer = Server::spawn(
            "xtigervncviewer",
            Command::new("xtigervncviewer")
                .env("DISPLAY", format!(":{}", screen.display()))
                .env("HOME", dir.path())
                .arg("-passwd")
                .arg(&passwd)
                .args(["-ReconnectOnError=0", "-Log", "*:stderr:100"])
                .args(options)
                .arg(target)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        TigerViewer { viewer, log, _dir: dir }
    }

    /// Its log so far (TigerVNC's `-Log *:stderr:100`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (e.g. [`CONNECTED`](Self::CONNECTED)) and returns
    /// the log; panics with the log when the viewer exits without it, or after 60 s.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let exited = self.exited();
            let log = self.log(); // read after the exit check: a last line is not missed
            if log.contains(needle) {
                return log;
            }
            if let Some(code) = exited {
                panic!("xtigervncviewer exited ({code}) without logging {needle:?}:\n{log}");
            }
            if start.elapsed() > PATIENCE {
                panic!("xtigervncviewer did not log {needle:?} in {PATIENCE:?}:\n{log}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Its exit code once it has exited (-1 for a signal); `None` while it runs.
    pub fn exited(&mut self) -> Option<i32> {
        self.viewer.child.try_wait().unwrap().map(|status| status.code().unwrap_or(-1))
    }
}

/// Runs `gvnccapture TARGET OUT` (gtk-vnc 1.3) to its end and returns (exit code, what it
/// printed): 0 once it saved the screen to `out` (`.png`, `.jpg`; the PNG has an alpha channel,
/// all 0). It has no password option: it asks on its terminal, and fails ("Failed to read
/// password") when stdin is not a terminal. So it runs on a pseudo-terminal (Python's `pty`)
/// which types `password` once the prompt has switched echo off: it switches with `TCSAFLUSH`,
/// which discards anything typed earlier. Killed after 50 s.
pub async fn gvnccapture(target: &str, password: &str, out: &Path) -> (i32, String) {
    require("gvnccapture");
    require("/usr/bin/python3");
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.args(["-I", "-c", ANSWER_PASSWORD_PROMPT, "gvnccapture", target]).arg(out);
    run_to_end(cmd, &format!("{password}\n")).await
}

/// Runs `ARGS...` on a pseudo-terminal, types the password read from stdin at each
/// `Password:` prompt once the program has switched echo off (so after its `TCSAFLUSH`), then
/// prints everything the program wrote and exits with its exit code. Kills it after 50 s.
const ANSWER_PASSWORD_PROMPT: &str = r#"
import os, pty, select, signal, sys, termios, time
password = sys.stdin.buffer.readline().rstrip(b"\n")
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out, answered, deadline = b"", 0, time.monotonic() + 50
while True:
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        out += b"\n(killed after 50 s)\n"
        break
    if select.select([fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the program has exited
            chunk = b""
        if not chunk:
            break
        out += chunk
    if out.count(b"Password:") > answered and not termios.tcgetattr(fd)[3] & termios.ECHO:
        os.write(fd, password + b"\n")
        answered += 1
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// Runs `vncsnapshot -quiet -passwd FILE TARGET OUT` (FILE from [`vncpasswd`]) to its end and
/// returns (exit code, what it printed): 0 once it saved the screen to `out` (JPEG). It speaks
/// RFB 3.3. Killed after 60 s, with code -1: with its default encodings it hangs against
/// Xtigervnc 1.12 after "Zero size rect - ignoring" (x11vnc is fine).
pub async fn vncsnapshot(target: &str, password: &str, out: &Path) -> (i32, String) {
    let dir = tempfile::Builder::new().prefix("ra-vncsnapshot-").tempdir().unwrap();
    let passwd = password_file(dir.path(), "passwd", password);
    let mut cmd = tokio::process::Command::new("vncsnapshot");
    cmd.args(["-quiet", "-passwd"]).arg(&passwd).arg(target).arg(out);
    run_to_end(cmd, "").await
}

/// Runs `cmd` with `input` on stdin to its end, 60 s at most (then kills it, code -1); returns
/// its exit code and its stdout and stderr together.
async fn run_to_end(mut cmd: tokio::process::Command, input: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).start();
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    match tokio::time::timeout(PATIENCE, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
            (out.status.code().unwrap_or(-1), text)
        }
        // Dropping the future dropped the child: kill_on_drop killed it.
        Err(_) => (-1, format!("{program} did not finish in {PATIENCE:?}")),
    }
}

/// Finds a port for a server that users reach with the display form `host:N` (port 5900 + N):
/// calls `start(port)` with random ports of 5900..=5999 that are free now, until it returns
/// `Some` (it started and listens), and returns the port and that. Displays stop at 99:
/// TigerVNC reads `host:N` with N ≥ 100 as port N. Another process may take a port between
/// the check and the start, so `start` must fail cleanly on "address in use" (and stop what
/// it started), as [`Server::on_free_port`] does.
pub fn on_display_port<T>(mut start: impl FnMut(u16) -> Option<T>) -> (u16, T) {
    for _attempt in 0..50 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 5900 + (random % 100) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if let Some(started) = start(port) {
            return (port, started);
        }
    }
    panic!("no port of 5900..=5999 could be used");
}
