//! `remote-access gateway`: one gateway of a fleet, with its sessions in the shared Redis, so
//! that any number of them behind a load balancer act as one (`docs/scaling.md`).
//!
//! With `--reuse-port`, a new gateway can start on the same ports while this one runs; with
//! `--drain-secs N`, Ctrl-C or SIGTERM then closes this one's ports and serves its live
//! connections until they end or N seconds pass (a second signal stops it at once): a restart
//! on one host without downtime (`docs/scaling.md`, "Restarting without downtime").
//!
//! With `--metrics ADDRESS:PORT` it serves Prometheus metrics and a health check there, and
//! `--log-format json` writes its logs as JSON lines (`docs/operations.md`).
//!
//! Every gateway of a fleet needs the same host key file (users pin one key, whichever gateway
//! they land on), the same `--vnc-port` list and the same VNC certificate. It prints
//! `listening on ADDRESS`, then one line per event, and stops cleanly on Ctrl-C or SIGTERM
//! (live connections are let go, not counted as logouts; after draining, with `--drain-secs`). Its logs go to stderr, at `info` and
//! above unless `RUST_LOG` says otherwise.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use remote_access_core::{AuthorityOptions, Gateway, GatewayOptions, HostKey, Secret, TlsIdentity};

use crate::args::{Args, Spec, Usage};
use crate::{Failure, Outcome, output, store};

pub(crate) const SUMMARY: &str = "run one gateway of a fleet (SSH and VNC), sessions in the shared Redis";

pub(crate) const USAGE: &str = "usage: remote-access gateway --listen ADDRESS:PORT --host-key-file PATH [OPTIONS]\n\n\
     Runs one gateway of a fleet until Ctrl-C or SIGTERM. Prints `listening on ADDRESS` once it\n\
     serves, then one `event: ...` line per event; logs go to stderr (RUST_LOG=debug for more).\n\n\
     options:\n\
     \x20 --listen ADDRESS:PORT      where users' SSH connections arrive (e.g. 0.0.0.0:22)\n\
     \x20 --host-key-file PATH       the fleet's SSH host key (OpenSSH private key); users pin it\n\
     \x20 --generate-host-key        write a new host key to that path (mode 600) if none exists\n\
     \x20 --vnc-port PORT            a gateway VNC port (repeat; the same list on every gateway and for\n\
     \x20                            `issue`; use 5900 and above)\n\
     \x20 --vnc-tls-cert PATH        the VNC certificate chain (PEM, leaf first): VeNCrypt and wss://\n\
     \x20 --vnc-tls-key PATH         its unencrypted private key (PEM)\n\
     \x20 --vnc-require-encryption   serve no unencrypted VNC (needs the certificate)\n\
     \x20 --max-store-outage-secs N  cut every connection after Redis has been silent this long (default 30)\n\
     \x20 --threads N                threads that serve connections, each connection wholly on one\n\
     \x20                            (default: one per CPU)\n\
     \x20 --reuse-port               let another gateway listen on the same ports (SO_REUSEPORT), to\n\
     \x20                            replace this one without downtime; set net.ipv4.tcp_migrate_req=1\n\
     \x20 --drain-secs N             on Ctrl-C or SIGTERM, close the ports and serve live connections\n\
     \x20                            until they end or N seconds pass (default 0: let them go at once);\n\
     \x20                            a second signal stops at once\n\
     \x20 --metrics ADDRESS:PORT     serve GET /metrics (Prometheus) and /healthz (200 while the store\n\
     \x20                            answers, else 503) over plain HTTP there; keep it private\n\
     \x20 --log-format FORMAT        text (default) or json: one JSON object per log line on stderr\n";

pub(crate) const SPEC: Spec = Spec {
    values: &[
        "listen",
        "host-key-file",
        "vnc-port",
        "vnc-tls-cert",
        "vnc-tls-key",
        "max-store-outage-secs",
        "threads",
        "drain-secs",
        "metrics",
        "log-format",
    ],
    switches: &["generate-host-key", "vnc-require-encryption", "reuse-port"],
    positional: 0,
    store: true,
};

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let json = match args.value("log-format") {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => return Err(Usage(format!("--log-format takes text or json, not {other:?}")).into()),
    };
    // Before anything else is checked, so that what goes wrong is logged as asked.
    crate::logging::init("remote-access gateway", tracing_subscriber::filter::LevelFilter::INFO, json);
    let metrics = args
        .value("metrics")
        .map(|addr| {
            addr.parse::<std::net::SocketAddr>().map_err(|_| {
                Usage(format!("--metrics takes ADDRESS:PORT (e.g. 127.0.0.1:9100), not {addr:?}"))
            })
        })
        .transpose()?;
    let listen = args.required("listen")?.to_owned();
    let key_file = args.required("host-key-file")?.to_owned();
    let vnc_ports =
        args.values("vnc-port").iter().map(|p| p.parse::<u16>()).collect::<Result<Vec<_>, _>>().map_err(
            |_| Usage(format!("--vnc-port takes a port number, not {:?}", args.values("vnc-port"))),
        )?;
    let (cert, key) = (args.value("vnc-tls-cert"), args.value("vnc-tls-key"));
    if cert.is_some() != key.is_some() || (args.switch("vnc-require-encryption") && cert.is_none()) {
        return Err(Usage(
            "--vnc-tls-cert and --vnc-tls-key go together, and --vnc-require-encryption needs them".into(),
        )
        .into());
    }
    let outage = args.parsed::<u64>("max-store-outage-secs", "a number of seconds")?;
    let drain = Duration::from_secs(args.parsed::<u64>("drain-secs", "a number of seconds")?.unwrap_or(0));
    let threads = match args.parsed::<usize>("threads", "a number of threads")? {
        Some(0) => return Err(Usage("--threads takes 1 or more".into()).into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };

    let host_key = load_host_key(Path::new(&key_file), args.switch("generate-host-key"))?;
    let mut gateway_options = GatewayOptions::default();
    gateway_options.host_key = Some(host_key);
    gateway_options.worker_threads = threads;
    gateway_options.reuse_port = args.switch("reuse-port");
    gateway_options.metrics_address = metrics;
    if let (Some(cert), Some(key)) = (cert, key) {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|err| Failure::Other(format!("cannot read {path}: {err}")))
        };
        let key = Secret::new(read(key)?);
        gateway_options.vnc_tls = Some(TlsIdentity::from_pem(&read(cert)?, key.expose())?);
        gateway_options.vnc_require_encryption = args.switch("vnc-require-encryption");
    }
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vnc_ports;
    if let Some(secs) = outage {
        options.max_store_outage = Duration::from_secs(secs);
    }
    crate::runtime()?.block_on(async move {
        let authority = store::authority(&args, options)?;
        let mut events = authority.subscribe();
        let vnc_tls = gateway_options.vnc_tls.clone();
        let gateway = Gateway::new(authority, gateway_options)?;
        let mut running =
            store::waiting("the gateway to start (Redis)", gateway.start(listen.as_str())).await?;
        println!("listening on {}", running.local_addr());
        if let Some(identity) = &vnc_tls {
            println!("vnc tls certificate sha256 {}", identity.fingerprint());
        }
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The first signal drains (when asked to), the next one stops.
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => signals += 1,
                _ = term.recv() => signals += 1,
                event = events.next() => match event {
                    Some(event) => println!("event: {event}"),
                    None => break,
                },
            }
            // Lines go to a pipe in production (a log collector): flush each one.
            let _ = std::io::stdout().flush();
            if signals > 0 {
                break;
            }
        }
        if signals > 0 && !drain.is_zero() {
            println!(
                "draining: the ports are closed; live connections are served for up to {}s",
                drain.as_secs()
            );
            let _ = std::io::stdout().flush();
            let drained = running.drain(drain);
            tokio::pin!(drained);
            loop {
                tokio::select! {
                    done = &mut drained => {
                        done?;
                        break;
                    }
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    Some(event) = events.next() => println!("event: {event}"),
                }
                let _ = std::io::stdout().flush();
            }
        }
        running.stop().await?;
        Ok(())
    })
}

/// Reads the fleet's host key, or writes a new one (mode 600) when asked and none exists.
fn load_host_key(path: &Path, generate: bool) -> Result<HostKey, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(HostKey::from_openssh(&text)?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && generate => {
            let key = HostKey::generate()?;
            output::private_file(path, key.to_openssh()?.expose().as_bytes())?;
            Ok(key)
        }
        Err(err) => Err(Failure::Other(format!("cannot read the host key {}: {err}", path.display()))),
    }
}
