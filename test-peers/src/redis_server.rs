//! A real `redis-server`, for the shared store.

use std::process::{Command, Stdio};

use crate::server::Server;

/// Its log, in its data directory (appended to by every start).
const LOG: &str = "redis.log";

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
    /// A replica of the Redis on this port.
    replica_of: Option<u16>,
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
        Self::start_in(RedisServer { port: 0, dir, durable, tls: false, replica_of: None, server: None })
    }

    /// A durable replica of `primary` (`--replicaof`), once it has the primary's data.
    pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("ra-redis-replica-").tempdir().unwrap();
        let replica = RedisServer {
            port: 0,
            dir,
            durable: true,
            tls: false,
            replica_of: Some(primary.port),
            server: None,
        };
        let replica = Self::start_in(replica);
        let synced = (0..500).any(|_| {
            let info = redis_cli(replica.port, &["INFO", "replication"]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            info.contains("master_link_status:up")
        });
        assert!(synced, "the replica on port {} never caught up with its primary", replica.port);
        replica
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
        Self::start_in(RedisServer {
            port: 0,
            dir,
            durable: false,
            tls: true,
            replica_of: None,
            server: None,
        })
    }

    fn start_in(mut redis: RedisServer) -> RedisServer {
        let (port, server) = Server::on_free_port("redis-server", |port| redis.command(port), || redis.log());
        (redis.port, redis.server) = (port, Some(server));
        redis
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS Redis.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port and data directory. A start that exits at once is
    /// tried again for a while: the port of a Redis just killed can still be held (by a socket
    /// the kernel has not let go of, or a child it forked), and it frees itself. No retry on
    /// another port: the gateways under test know this one.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let start = std::time::Instant::now();
        loop {
            let mut server = Server::spawn("redis-server", &mut self.command(self.port));
            if server.wait_listening(self.port) {
                self.server = Some(server);
                return;
            }
            drop(server);
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "redis-server did not come back on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The end of its log, to say why it did not start.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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
            .arg("--logfile")
            .arg(dir.join(LOG))
            .stdout(Stdio::null());
        if let Some(primary) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        cmd
    }

    /// SIGSTOP: it holds its connections but answers nothing (a replica that cannot keep up),
    /// until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.server.as_ref().expect("running").child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// SIGKILL: Redis vanishes at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

/// Three real Redis Sentinels on loopback watching a primary as `m` (a quorum of 2; the
/// primary is down after 1 s of silence), as a fleet's Redis with automatic failover runs.
pub struct RedisSentinels {
    /// Their ports.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
    _servers: Vec<Server>,
}

impl RedisSentinels {
    /// Sentinels for `primary` (which should have a replica to promote).
    pub fn start(primary: &RedisServer) -> RedisSentinels {
        let dir = tempfile::Builder::new().prefix("ra-sentinels-").tempdir().unwrap();
        let (mut ports, mut servers) = (Vec::new(), Vec::new());
        for n in 0..3 {
            // Each needs a configuration file of its own that it can rewrite.
            let conf = dir.path().join(format!("sentinel-{n}.conf"));
            let (port, server) = Server::on_free_port(
                "redis-server",
                |port| {
                    let text = format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor m 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 5000\n",
                        dir.path().display(),
                        primary.port
                    );
                    std::fs::write(&conf, text).unwrap();
                    let mut cmd = Command::new("redis-server");
                    cmd.arg(&conf).arg("--sentinel").stdout(Stdio::null());
                    cmd
                },
                String::new,
            );
            ports.push(port);
            servers.push(server);
        }
        RedisSentinels { ports, _dir: dir, _servers: servers }
    }

    /// `redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/m/0`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis+sentinel://{}/m/0", hosts.join(","))
    }

    /// The port of the primary the sentinels name now.
    pub fn primary_port(&self) -> Option<u16> {
        let answer = redis_cli(self.ports[0], &["SENTINEL", "get-master-addr-by-name", "m"]);
        answer.lines().nth(1)?.trim().parse().ok()
    }
}

/// `redis-cli -p PORT ARGS...` (blocking): what it printed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    use crate::programs::Run;
    let out =
        Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).stdin(Stdio::null()).finish();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
