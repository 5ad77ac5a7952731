//! One gateway of a fleet: serves SSH (and VNC) with its sessions in a shared Redis, so that
//! any number of these behind a load balancer act as one (`docs/scaling.md`).
//!
//! ```text
//! gateway --listen 0.0.0.0:2222 --redis redis://redis.internal:6379/0 \
//!         --host-key-file /etc/remote-access/host_key \
//!         [--vnc-port 5901]... [--key-prefix remote-access] [--max-store-outage-secs 30] \
//!         [--vnc-tls-cert /etc/remote-access/vnc.pem --vnc-tls-key /etc/remote-access/vnc.key \
//!          [--vnc-require-encryption]]
//! ```
//!
//! With a VNC certificate (PEM chain, leaf first, and its unencrypted PEM key) the VNC ports
//! also speak VeNCrypt and `wss://`; with `--vnc-require-encryption` they speak nothing else
//! (`docs/vnc.md`). Every gateway of a fleet needs the same certificate: users are given its
//! fingerprint.
//!
//! A Redis URL with a password goes in the environment (`REMOTE_ACCESS_REDIS_URL`), never on
//! the command line, which every user of the machine can read (`ps`); `--redis` refuses one.
//!
//! Every gateway of a fleet needs the same host key file (users pin one key, whichever gateway
//! they land on) and the same `--vnc-port` list. The key file is an OpenSSH private key; with
//! `--generate-host-key` a new one is written there (mode 600) if the file does not exist.
//!
//! It prints `listening on ADDRESS`, then one line per event, and stops cleanly on Ctrl-C or
//! SIGTERM (live connections are let go, not counted as logouts). Issue and revoke builds from
//! the platform's own process on the same Redis (an `Authority` whose `AuthorityOptions::store` names the same Redis).
//!
//! Its logs (refused logins, cut connections, lost contact with Redis) go to stderr, at `info`
//! and above unless `RUST_LOG` says otherwise: `RUST_LOG=debug`,
//! `RUST_LOG=remote_access_core=debug,info`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::Duration;

use remote_access_core::{
    Authority, AuthorityOptions, Gateway, GatewayOptions, HostKey, RedisOptions, StoreOptions, TlsIdentity,
};

fn usage() -> ExitCode {
    eprintln!(
        "usage: gateway --listen ADDRESS:PORT [--redis URL] --host-key-file PATH [--generate-host-key] \
         [--vnc-port PORT]... [--key-prefix PREFIX] [--max-store-outage-secs SECONDS] \
         [--vnc-tls-cert PATH --vnc-tls-key PATH [--vnc-require-encryption]]\n\
         (a Redis URL with a password: in REMOTE_ACCESS_REDIS_URL instead of --redis)"
    );
    ExitCode::from(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    remote_access_examples::logging::init("gateway", tracing_subscriber::filter::LevelFilter::INFO);
    let mut args = std::env::args().skip(1);
    let (mut listen, mut redis, mut key_file, mut generate, mut prefix, mut outage) =
        (None, None, None, false, None, None);
    let mut vnc = Vnc::default();
    while let Some(flag) = args.next() {
        if flag == "--generate-host-key" {
            generate = true;
            continue;
        }
        if flag == "--vnc-require-encryption" {
            vnc.require_encryption = true;
            continue;
        }
        let Some(value) = args.next() else { return usage() };
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--redis" => redis = Some(value),
            "--host-key-file" => key_file = Some(value),
            "--key-prefix" => prefix = Some(value),
            "--vnc-tls-cert" => vnc.cert = Some(value),
            "--vnc-tls-key" => vnc.key = Some(value),
            "--vnc-port" => match value.parse::<u16>() {
                Ok(port) => vnc.ports.push(port),
                Err(_) => return usage(),
            },
            "--max-store-outage-secs" => match value.parse::<u64>() {
                Ok(secs) => outage = Some(Duration::from_secs(secs)),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    if redis.as_deref().is_some_and(|url| url.contains('@')) {
        eprintln!(
            "gateway: a Redis URL with credentials on the command line is visible to every user of \
             this machine; set REMOTE_ACCESS_REDIS_URL instead"
        );
        return ExitCode::from(1);
    }
    let redis = redis.or_else(|| std::env::var("REMOTE_ACCESS_REDIS_URL").ok());
    let (Some(listen), Some(redis), Some(key_file)) = (listen, redis, key_file) else { return usage() };
    if vnc.cert.is_some() != vnc.key.is_some() || (vnc.require_encryption && vnc.cert.is_none()) {
        eprintln!(
            "gateway: --vnc-tls-cert and --vnc-tls-key go together, and --vnc-require-encryption needs them"
        );
        return usage();
    }
    match run(&listen, redis, &key_file, generate, prefix, outage, vnc).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway: {err}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    listen: &str,
    redis: String,
    key_file: &str,
    generate: bool,
    prefix: Option<String>,
    outage: Option<Duration>,
    vnc: Vnc,
) -> Result<(), Box<dyn std::error::Error>> {
    let host_key = load_host_key(key_file, generate)?;
    let mut redis_options = RedisOptions::new(redis);
    if let Some(prefix) = prefix {
        redis_options.key_prefix = prefix;
    }
    let mut options = AuthorityOptions::default();
    options.store = StoreOptions::Redis(redis_options);
    options.vnc_ports = vnc.ports;
    if let Some(outage) = outage {
        options.max_store_outage = outage;
    }
    let authority = Authority::new(options)?;
    let mut events = authority.subscribe();
    let mut gateway_options = GatewayOptions::default();
    gateway_options.host_key = Some(host_key);
    if let (Some(cert), Some(key)) = (&vnc.cert, &vnc.key) {
        let read =
            |path: &str| std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"));
        let key = remote_access_core::Secret::new(read(key)?);
        let identity = TlsIdentity::from_pem(&read(cert)?, key.expose())?;
        gateway_options.vnc_tls = Some(identity);
        gateway_options.vnc_require_encryption = vnc.require_encryption;
    }
    let vnc_tls = gateway_options.vnc_tls.clone();
    let gateway = Gateway::new(authority, gateway_options)?;
    let running = gateway.start(listen).await?;
    println!("listening on {}", running.local_addr());
    if let Some(identity) = &vnc_tls {
        println!("vnc tls certificate sha256 {}", identity.fingerprint());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            event = events.next() => match event {
                Some(event) => println!("event: {event}"),
                None => break,
            },
        }
        // Lines go to a pipe in production (a log collector): flush each one.
        let _ = std::io::stdout().flush();
    }
    running.stop().await?;
    Ok(())
}

/// The VNC ports, the certificate and key files, and whether only encrypted VNC is served.
#[derive(Default)]
struct Vnc {
    ports: Vec<u16>,
    cert: Option<String>,
    key: Option<String>,
    require_encryption: bool,
}

/// Reads the fleet's host key, or writes a new one (mode 600) when asked and none exists.
fn load_host_key(path: &str, generate: bool) -> Result<HostKey, Box<dyn std::error::Error>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(HostKey::from_openssh(&text)?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && generate => {
            let key = HostKey::generate()?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?
                .write_all(key.to_openssh()?.expose().as_bytes())?;
            Ok(key)
        }
        Err(err) => Err(format!("cannot read the host key {path}: {err}").into()),
    }
}
