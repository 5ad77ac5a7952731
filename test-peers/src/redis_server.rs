//! A real `redis-server`, for the shared store.

use std::process::{Command, Stdio};

use crate::server::Server;

/// A real `redis-server` on a free loopback port, with an append-only file synced at every
/// write, so that killing it (even with SIGKILL) and starting it again loses nothing.
pub struct RedisServer {
    /// The port it listens on.
    pub port: u16,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    durable: bool,
    /// Serves TLS only (`rediss://`), asking clients for a certificate signed by this CA.
    tls: bool,
    server: Option<Server>,
}

impl RedisServer {
    /// A durable Redis (append-only file, synced at every write).
    pub fn start() -> RedisServer {
        Self::start_with(true)
    }

    /// Without the append-only file: what a benchmark of the gateways (not of a disk) needs.
    pub fn start_in_memory() -> RedisServer {
        Self::start_with(false)
    }

    fn start_with(durable: bool) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("ra-redis-").tempdir().unwrap();
        Self::start_in(RedisServer { port: 0, dir, durable, tls: false, server: None })
    }

    /// A Redis that speaks only TLS (no plain port), with the certificate chain and key given
    /// (PEM), and that refuses clients without a certificate signed by `client_ca_pem`.
    pub fn start_tls(chain_pem: &str, key_pem: &str, client_ca_pem: &str) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("ra-redis-tls-").tempdir().unwrap();
        for (name, pem) in
            [("server.pem", chain_pem), ("server.key", key_pem), ("clients-ca.pem", client_ca_pem)]
        {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Self::start_in(RedisServer { port: 0, dir, durable: false, tls: true, server: None })
    }

    fn start_in(mut redis: RedisServer) -> RedisServer {
        let (port, server) = Server::on_free_port("redis-server", |port| redis.command(port), String::new);
        (redis.port, redis.server) = (port, Some(server));
        redis
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS Redis.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
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
        let dir = self.dir.path();
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "yes"])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("clients-ca.pem"));
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(dir)
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
