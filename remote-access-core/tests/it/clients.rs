//! The gateway with SSH clients other than OpenSSH's, as their users run them (DESIGN §5): one
//! client passing proves little about the others. Dropbear's `dbclient` (multihop), PuTTY's
//! `plink` (`-proxycmd "plink -nc ..."`), paramiko as Debian ships it and a current one, and
//! libssh2 (Debian's `curl`, and a ProxyCommand written against `libssh2.so.1`).
//!
//! Each test has its own gateway and build. A client runs a command on the real builder sshd
//! through the gateway; the command holds until the test has seen the gateway carry it (the
//! build's `connected` event and an open builder channel in the gateway's counters: a client
//! that reached the builder directly would show neither). Then the build is revoked and the same
//! client must be refused at the gateway, with no new connection recorded.

use std::process::Stdio;
use std::time::Duration;

use crate::builds::*;
use remote_access_core::{Authority, AuthorityOptions, Credentials, Gateway, RunningGateway, Subscription};
use remote_access_test_peers::*;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How a client's exit is recorded (see `Fixture::refused_after_revoke`).
const LOGOUT: &[&str] = &["disconnected"];
const LOGOUT_OR_DROP: &[&str] = &["disconnected", "dropped"];

/// How long a client may take at most: a guard against a hang, not a timing check.
const GUARD: Duration = Duration::from_secs(180);

/// A builder sshd, an authority with a running gateway in front of it, one issued build, and
/// that build's user with the clients.
struct Fixture {
    builder: Sshd,
    authority: Authority,
    gateway: Gateway,
    running: RunningGateway,
    creds: Credentials,
    events: Subscription,
    clients: JumpClients,
}

impl Fixture {
    async fn new(id: &str) -> Fixture {
        let builder = Sshd::start();
        let authority = authority(AuthorityOptions::default());
        let gateway = gateway(&authority);
        let running = gateway.start("127.0.0.1:0").await.unwrap();
        let events = authority.subscribe();
        let route = builder.builder();
        let creds = authority.issue(request(id, route.clone())).await.unwrap();
        builder.authorize(&creds.authorized_keys_line());
        let gateway_hop = Hop {
            host: "127.0.0.1".into(),
            port: running.local_addr().port(),
            user: creds.username().into(),
            host_key: gateway.host_key().public_key(),
        };
        let builder_hop = Hop {
            host: route.address.to_string(),
            port: route.ssh_port,
            user: route.user.clone(),
            host_key: route.host_key.clone().unwrap(),
        };
        let key = creds.private_key_openssh().unwrap();
        let clients = JumpClients::new(key.expose(), creds.public_key(), gateway_hop, builder_hop);
        Fixture { builder, authority, gateway, running, creds, events, clients }
    }

    /// A remote command that prints `through-<client>` and then waits until the test lets it
    /// end (or its scratch directory is gone: a failed test leaves no loop behind on the builder).
    fn held_command(&self, client: &str) -> String {
        let dir = self.clients.dir().to_str().unwrap();
        assert!(!dir.contains('\''));
        format!(
            "echo through-{client}; while test -d '{dir}' && ! test -e '{dir}/release'; do sleep 0.1; done"
        )
    }

    /// Runs `cmd` (whose remote command is [`Fixture::held_command`]) and, while it is held,
    /// waits for the proof that it goes through the gateway: the build's `connected` event,
    /// and one SSH connection with one open builder channel in the gateway's counters. Then
    /// releases it; returns (exit code, stdout, stderr) once it ends.
    async fn run_held(&mut self, client: &str, mut cmd: Command) -> (i32, String, String) {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).start();
        let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
        let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
        let build_id = self.creds.build_id().clone();
        let proven = tokio::time::timeout(GUARD, async {
            loop {
                tokio::select! {
                    event = self.events.next() => {
                        let event = event.expect("the authority is alive");
                        if event.kind.as_str() == "connected" {
                            assert_eq!(event.build_id, build_id);
                            break;
                        }
                    }
                    status = child.wait() => return Err(status.unwrap()),
                }
            }
            loop {
                let stats = self.gateway.stats();
                if stats.ssh_connections == 1 && stats.builder_channels == 1 {
                    return Ok(stats);
                }
                if let Some(status) = child.try_wait().unwrap() {
                    return Err(status);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match proven {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                let (out, err) = (stdout.await.unwrap(), stderr.await.unwrap());
                panic!(
                    "{client} ended ({status}) before the gateway carried its connection to the builder\n\
                     stdout: {out}\nstderr: {err}\ngateway: {:?}\nsshd: {}",
                    self.gateway.stats(),
                    self.builder.log()
                );
            }
            Err(_) => {
                let _ = child.start_kill();
                let (out, err) = (stdout.await.unwrap(), stderr.await.unwrap());
                panic!(
                    "{client}: no connection through the gateway to the builder (connected event and \
                     an open builder channel) within {GUARD:?}\nstdout: {out}\nstderr: {err}\n\
                     gateway: {:?}\nsshd: {}",
                    self.gateway.stats(),
                    self.builder.log()
                );
            }
        }
        std::fs::write(self.clients.dir().join("release"), "").unwrap();
        let status = tokio::time::timeout(GUARD, child.wait()).await;
        let (out, err) = (stdout.await.unwrap(), stderr.await.unwrap());
        let status = status
            .unwrap_or_else(|_| panic!("{client} did not end once released\nstdout: {out}\nstderr: {err}"));
        (status.unwrap().code().unwrap_or(-1), out, err)
    }

    /// Revokes the build and runs `cmd` again: it must fail, print nothing from the builder,
    /// and show `refusal` (the client's words for a refused login) on stderr; the gateway must
    /// not have recorded a connection. `goodbye` lists how the held run's end may be recorded:
    /// `disconnected` for clients that end their channels or send DISCONNECT when they exit.
    /// Dropbear and libssh2 close their TCP connection with the jump channel open: a logout if
    /// the builder's side closed first, else `dropped`, as a client killed mid-session (after
    /// the steps, their exit then ends the session when the reconnect window closes).
    async fn refused_after_revoke(
        &mut self,
        client: &str,
        mut cmd: Command,
        refusal: &str,
        goodbye: &[&str],
    ) {
        // The held run has closed its connection.
        let ended = tokio::time::timeout(GUARD, async {
            loop {
                let event = self.events.next().await.expect("the authority is alive");
                if ["disconnected", "dropped"].contains(&event.kind.as_str()) {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{client}: its connection's end was not recorded"));
        assert!(goodbye.contains(&ended.kind.as_str()), "{client}: {ended}");
        self.authority.revoke(self.creds.build_id(), "security review").await.unwrap();
        let (code, out, err) = run(&mut cmd).await;
        assert!(
            code != 0 && !out.contains("through-") && err.contains(refusal),
            "{client} with a revoked key: expected a failure showing {refusal:?}, got exit {code}\n\
             stdout: {out}\nstderr: {err}"
        );
        let after: Vec<String> =
            std::iter::from_fn(|| self.events.try_next()).map(|e| e.to_string()).collect();
        assert!(
            !after.iter().any(|e| e.starts_with("connected ")),
            "{client} with a revoked key got a connection: {after:?}\nstderr: {err}"
        );
    }
}

async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    pipe.read_to_end(&mut bytes).await.unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs a client to its end (stdin closed, within [`GUARD`]); (exit code, stdout, stderr).
async fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = tokio::time::timeout(GUARD, cmd.stdin(Stdio::null()).kill_on_drop(true).finish())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not end within {GUARD:?}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Asserts a jump client's held run printed `through-<client>` and succeeded.
fn assert_through(client: &str, fx: &Fixture, (code, out, err): (i32, String, String)) {
    assert!(
        code == 0 && out.trim() == format!("through-{client}"),
        "{client} through the gateway: exit {code}\nstdout: {out}\nstderr: {err}\nsshd: {}",
        fx.builder.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropbear_dbclient_multihop_reaches_the_builder_and_is_refused_once_revoked() {
    let mut fx = Fixture::new("client-dbclient").await;
    let cmd = fx.clients.dbclient(&fx.held_command("dbclient"));
    let result = fx.run_held("dbclient", cmd).await;
    assert_through("dbclient", &fx, result);

    let cmd = fx.clients.dbclient("echo through-dbclient");
    fx.refused_after_revoke("dbclient", cmd, "No auth methods could be used", LOGOUT_OR_DROP).await;
    fx.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putty_plink_with_a_plink_proxy_command_reaches_the_builder_and_is_refused_once_revoked() {
    let mut fx = Fixture::new("client-plink").await;
    let cmd = fx.clients.plink(&fx.held_command("plink"));
    let result = fx.run_held("plink", cmd).await;
    let stderr = result.2.clone();
    assert_through("plink", &fx, result);
    // From plink's own log (-v): the proxy command was used, not a direct connection.
    assert!(stderr.contains("Starting local proxy command: 'plink'"), "plink: {stderr}");

    let cmd = fx.clients.plink("echo through-plink");
    // The proxy plink's error, passed on by the outer plink with a `proxy: ` prefix.
    fx.refused_after_revoke("plink", cmd, "proxy: FATAL ERROR: No supported authentication methods", LOGOUT)
        .await;
    fx.running.stop().await.unwrap();
}

async fn paramiko_jump(which: Paramiko, id: &str) {
    let client = format!("paramiko-{which:?}").to_lowercase();
    let mut fx = Fixture::new(id).await;
    let cmd = fx.clients.paramiko(which, &fx.held_command(&client));
    let result = fx.run_held(&client, cmd).await;
    let stderr = result.2.clone();
    assert_through(&client, &fx, result);
    assert!(stderr.contains("paramiko: gateway: SSH-2.0-remote-access"), "{client}: {stderr}");

    let cmd = fx.clients.paramiko(which, &format!("echo through-{client}"));
    let refusal = format!(
        "paramiko: gateway 127.0.0.1:{} as {}: AuthenticationException",
        fx.clients.gateway.port, fx.clients.gateway.user
    );
    fx.refused_after_revoke(&client, cmd, &refusal, LOGOUT).await;
    fx.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paramiko_as_debian_ships_it_jumps_to_the_builder_and_is_refused_once_revoked() {
    paramiko_jump(Paramiko::Debian, "client-paramiko-debian").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_paramiko_jumps_to_the_builder_and_is_refused_once_revoked() {
    paramiko_jump(Paramiko::Current, "client-paramiko-current").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libssh2_carries_the_jump_as_a_proxy_command_and_is_refused_once_revoked() {
    let mut fx = Fixture::new("client-libssh2").await;
    let cmd = fx.clients.ssh_through_libssh2(&fx.held_command("libssh2"));
    let result = fx.run_held("libssh2", cmd).await;
    let stderr = result.2.clone();
    assert_through("libssh2", &fx, result);
    assert!(
        stderr.contains("host key pinned") && stderr.contains("direct-tcpip channel to"),
        "libssh2: {stderr}"
    );

    let cmd = fx.clients.ssh_through_libssh2("echo through-libssh2");
    let refusal = format!("libssh2: public-key authentication to the gateway as {}", fx.clients.gateway.user);
    fx.refused_after_revoke("libssh2", cmd, &refusal, LOGOUT_OR_DROP).await;
    fx.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_libssh2_logs_in_to_the_gateway_and_is_refused_once_revoked() {
    let mut fx = Fixture::new("client-curl").await;
    // curl cannot jump: it logs in to the gateway, which then refuses the SFTP session (a
    // session channel on the gateway itself).
    let (code, out, err) = run(&mut fx.clients.curl_sftp()).await;
    let logged_in = err.contains("SHA256 checksum match")
        && err.contains("Authentication complete")
        && err.contains("Failure initializing sftp session");
    assert!(
        code == 2 && logged_in,
        "curl (libssh2) to the gateway: expected a login and then no SFTP (exit 2), got exit {code}\n\
         stdout: {out}\nstderr: {err}"
    );
    let connected = next_event(&mut fx.events, "connected").await;
    assert_eq!(connected.build_id, *fx.creds.build_id());
    let refused = next_event(&mut fx.events, "refused").await;
    assert_eq!(refused.reason, "a session on the gateway itself refused", "curl: {err}");

    let cmd = fx.clients.curl_sftp();
    fx.refused_after_revoke("curl", cmd, "SSH public key authentication failed", LOGOUT).await;
    fx.running.stop().await.unwrap();
}
