//! A builder's VNC server: x11vnc on Xvfb, or TigerVNC's Xtigervnc.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::server::Server;

/// A builder's VNC server with its own password, on a loopback port.
pub struct VncServer {
    /// The RFB port.
    pub port: u16,
    /// Its password (VNC Authentication).
    pub password: String,
    /// The screen's width.
    pub width: u32,
    /// The screen's height.
    pub height: u32,
    /// The X display the server shows (`:N`): [`paint`](crate::paint) it a colour that a
    /// viewer's screenshot must then show.
    pub display: u32,
    /// Its password file and log.
    pub dir: tempfile::TempDir,
    _servers: Vec<Server>,
}

impl VncServer {
    /// Xvfb + x11vnc on 127.0.0.1. `password_file` is the file's content for `password` (the
    /// tests pass the library's `vnc_password_file(password)`, so that real servers read it).
    pub fn x11vnc(password: &str, password_file: &[u8]) -> VncServer {
        Self::x11vnc_on(password, password_file, "127.0.0.1")
    }

    /// The same, listening on another loopback address (e.g. 127.0.0.2).
    pub fn x11vnc_on(password: &str, password_file: &[u8], address: &str) -> VncServer {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, password_file).unwrap();
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
        VncServer {
            port,
            password: password.into(),
            width: 640,
            height: 480,
            display,
            dir,
            _servers: vec![vnc, xvfb],
        }
    }

    /// TigerVNC's Xtigervnc (its own X server) on 127.0.0.1; `password_file` as for
    /// [`x11vnc`](Self::x11vnc).
    pub fn tigervnc(password: &str, password_file: &[u8]) -> VncServer {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, password_file).unwrap();
        let log = dir.path().join("Xtigervnc.log");
        let (port, mut vnc) = Server::on_free_port(
            "Xtigervnc",
            |port| {
                let mut cmd = Command::new("Xtigervnc");
                // `-displayfd` makes it pick a free display itself (see `start_x_server`).
                cmd.args(["-displayfd", "1", "-geometry", "800x600", "-depth", "24"])
                    .args(["-rfbport", &port.to_string(), "-localhost=1"])
                    .args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
                    .arg(&passwd)
                    .args(["-nolisten", "tcp", "-desktop", "ci-vm"])
                    .stdout(Stdio::piped())
                    .stderr(std::fs::File::create(&log).unwrap());
                cmd
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        let display = read_display("Xtigervnc", &mut vnc);
        VncServer {
            port,
            password: password.into(),
            width: 800,
            height: 600,
            display,
            dir,
            _servers: vec![vnc],
        }
    }
}

/// Starts an X server with `-displayfd`: it picks a free display itself, taking the display's
/// lock file atomically, so no other process can race us to a number we chose; and it writes
/// the number (to its stdout here) only once it accepts connections. Returns the number.
pub(crate) fn start_x_server(name: &'static str, cmd: &mut Command) -> (Server, u32) {
    let mut server = Server::spawn(name, cmd.args(["-displayfd", "1"]).stdout(Stdio::piped()));
    let display = read_display(name, &mut server);
    (server, display)
}

/// The display number an X server started with `-displayfd 1` and a piped stdout writes once it
/// accepts connections.
fn read_display(name: &'static str, server: &mut Server) -> u32 {
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
    .unwrap_or_else(|| panic!("{name} gave no display number: {first:?}"))
}
