//! # remote-access-test-peers
//!
//! The real programs the tests of remote-access run against, started on free loopback ports and
//! stopped by PID: an OpenSSH `sshd` playing the builder, its VNC servers (x11vnc on Xvfb,
//! TigerVNC), `redis-server`; the tests' clients (`vncdo`, the generated scripts, a russh client
//! handler, the VNC viewers users run, noVNC in Chromium) and the screens they show on; log
//! capture; and how a shell reads the words the script generator writes.
//!
//! A program that is not installed fails the test with its name and how to install it
//! ([`Run`], [`RunAsync`]); `./scripts/test` installs all of them.
//!
//! This crate does not depend on `remote-access-core` (the core's tests depend on it): what needs
//! the core's types (builder routes, the library's VNC password files) lives with the tests.
//!
//! # Layout
//!
//! - `programs`: starting a program, or saying which one is missing and how to get it.
//! - `ports`: free loopback ports, waiting for a listener, connecting from a given address.
//! - `server`: a server process in its own process group, stopped on drop.
//! - `sshd`, `vnc_servers`, `redis_server`: the servers.
//! - `jump_clients`: SSH clients other than OpenSSH's (Dropbear, PuTTY, paramiko, libssh2),
//!   each reaching a builder through the gateway as its users do.
//! - `vncdo`: vncdotool, the tests' VNC client, and the size of its screenshots.
//! - `screen`: an Xvfb screen of its own for a viewer or a browser, screenshots of any X
//!   display, and painting a display a colour (the builder's, for a viewer to show).
//! - `vnc_viewers`: the VNC clients users run, given what the instructions print: TigerVNC's
//!   viewer on a screen, `gvnccapture` (on a pseudo-terminal, for its password prompt),
//!   `vncsnapshot`; the real `vncpasswd -f`; a port that the display form `host:N` can name.
//! - `browser`: noVNC's `vnc_lite.html` in a headed Chromium on a screen, over `ws` or `wss`.
//! - `scripts`: writing and running the generated connection scripts.
//! - `polling`: retrying until a condition holds.
//! - `ssh_client`: the russh client handler of loopback tests.
//! - `log_capture`: `tracing` output captured in memory.
//! - `shell_words`: how `sh` and PowerShell read a quoted word (shared with the `scripts` fuzz
//!   target).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

mod browser;
mod http_client;
mod jump_clients;
mod log_capture;
mod polling;
mod ports;
mod programs;
mod redis_server;
mod screen;
mod scripts;
mod server;
mod shell_words;
mod ssh_client;
mod sshd;
mod vnc_servers;
mod vnc_viewers;
mod vncdo;

pub use browser::NoVnc;
pub use http_client::{http, metric};
pub use jump_clients::{Hop, JumpClients, Paramiko};
pub use log_capture::{Captured, capture};
pub use polling::eventually;
pub use ports::{connect_from, free_port, requests_migrate, wait_for, wait_for_or, wait_for_port};
pub use programs::{Run, RunAsync, output_of, require};
pub use redis_server::{RedisSentinels, RedisServer};
pub use screen::{Image, Screen, paint, screenshot};
pub use scripts::{EchoSession, exit_of, run_script, script_command, start_long_script, write_script};
pub use server::{Server, stop};
pub use shell_words::{check_cd, env_name, is_ps_double_quote, is_ps_quote, ps_word, sh_word};
pub use ssh_client::AnyKey;
pub use sshd::Sshd;
pub use vnc_servers::VncServer;
pub use vnc_viewers::{TigerViewer, gvnccapture, on_display_port, vncpasswd, vncsnapshot};
pub use vncdo::{png_size, vncdo};
