//! A stand-in builder for the quickstart: a small in-process SSH server (russh) that runs
//! commands and login shells through `sh` as the current user, with `FCI_BUILD_DIR` set, so the
//! quickstart needs neither root nor sshd. It accepts exactly the keys it is told to. A
//! requested terminal is given through util-linux `script`, which allocates a real pty.
//!
//! This is demo code for a loopback port, not a hardened server.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Config, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;

/// A running stand-in builder.
pub struct StandInBuilder {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Its host key line, `ssh-ed25519 AAAA...`, for `Builder::host_key`.
    pub host_key: String,
    /// The login user it accepts.
    pub user: String,
    keys: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInBuilder {
    /// Starts serving on a free loopback port; sessions start with `FCI_BUILD_DIR=build_dir`.
    pub async fn start(build_dir: PathBuf) -> Result<Self, Box<dyn std::error::Error>> {
        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)?;
        let mut public = key.public_key().clone();
        public.set_comment("");
        let host_key = public.to_openssh()?.trim().to_owned();
        let config = Arc::new(Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            keys: vec![key],
            nodelay: true,
            ..Config::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let keys = Arc::new(Mutex::new(HashSet::new()));
        let user = "builder".to_owned();
        let shared = Arc::new(Shared { keys: keys.clone(), user: user.clone(), build_dir });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler = BuilderHandler { shared: shared.clone() };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, tcp, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        Ok(Self { addr, host_key, user, keys, task })
    }

    /// Lets the key of an `authorized_keys` line log in.
    pub fn authorize(&self, authorized_keys_line: &str) -> Result<(), Box<dyn std::error::Error>> {
        let key = PublicKey::from_openssh(authorized_keys_line)?;
        self.keys.lock().map_err(|_| "lock")?.insert(key.fingerprint(HashAlg::Sha256).to_string());
        Ok(())
    }
}

impl Drop for StandInBuilder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    keys: Arc<Mutex<HashSet<String>>>,
    user: String,
    build_dir: PathBuf,
}

struct BuilderHandler {
    shared: Arc<Shared>,
}

impl BuilderHandler {
    fn allowed(&self, user: &str, key: &PublicKey) -> bool {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        user == self.shared.user && self.shared.keys.lock().is_ok_and(|keys| keys.contains(&fingerprint))
    }
}

impl russh::server::Handler for BuilderHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.allowed(user, offer.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.allowed(user, key.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(serve_channel(channel, self.shared.build_dir.clone()));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

/// Runs the channel's command (or a login shell) and pipes it to and from the channel.
async fn serve_channel(mut channel: Channel<Msg>, build_dir: PathBuf) {
    let mut pty = false;
    let command = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty { .. }) => pty = true,
            Some(ChannelMsg::Exec { command, .. }) => {
                break String::from_utf8_lossy(&command).into_owned();
            }
            Some(ChannelMsg::RequestShell { .. }) => break "exec /bin/sh -l".to_owned(),
            Some(_) => {}
            None => return,
        }
    };
    let mut process = if pty {
        // util-linux `script` runs the command on a fresh pty: prompts, line editing, ^C.
        let mut c = Command::new("script");
        c.args(["-qefc", &command, "/dev/null"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &command]);
        c
    };
    let spawned = process
        .env("FCI_BUILD_DIR", &build_dir)
        .env("SHELL", "/bin/sh")
        .current_dir(&build_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let _ = channel.extended_data_bytes(1, format!("stand-in builder: {err}\r\n").into_bytes()).await;
            let _ = channel.exit_status(127).await;
            let _ = channel.close().await;
            return;
        }
    };
    let (mut stdin, mut stdout, mut stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (Some(i), o, e),
            _ => return,
        };
    let mut out_writer = channel.make_writer();
    let mut err_writer = channel.make_writer_ext(Some(1));
    let pump_out = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut out_writer).await;
        let _ = out_writer.flush().await;
    });
    let pump_err = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stderr, &mut err_writer).await;
        let _ = err_writer.flush().await;
    });
    let status = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(input) = stdin.as_mut() {
                        let _ = input.write_all(&data).await;
                    }
                }
                Some(ChannelMsg::Eof) => stdin = None,
                Some(_) => {}
                None => break None,
            },
            status = child.wait() => break status.ok(),
        }
    };
    // The client is gone or the command ended: close its input and make sure it is gone too.
    drop(stdin);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = pump_out.await;
    let _ = pump_err.await;
    let code = status.and_then(|s| s.code()).unwrap_or(255);
    let _ = channel.exit_status(u32::try_from(code).unwrap_or(255)).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
    // Keep reading until the client closes, so the channel is drained.
    while channel.wait().await.is_some() {}
}
