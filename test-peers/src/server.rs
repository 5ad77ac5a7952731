//! A server process in its own process group, stopped by PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::programs::Run;

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

/// A child process stopped by PID when dropped (in its own process group, so helpers it
/// forks, like Xtigervnc's xkbcomp, go too).
pub struct Server {
    /// The process.
    pub child: Child,
    /// The program's name, for messages.
    pub name: &'static str,
}

impl Server {
    /// Starts `cmd` (stdin closed) in a process group of its own; a missing program fails the
    /// test with how to install it.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Server {
        use std::os::unix::process::CommandExt;
        let child = cmd.process_group(0).stdin(Stdio::null()).start();
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
