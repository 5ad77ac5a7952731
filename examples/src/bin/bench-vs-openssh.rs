//! Benchmark harness: our gateway against OpenSSH's `sshd` as the jump host, side by side in
//! one run on loopback, with the same real `sshd` as the builder behind both.
//!
//! Run: `cargo run --release -p remote-access-examples --bin bench-vs-openssh [-- --quick]`
//! (`--cipher NAME` makes every hop use that cipher, for a comparison at equal settings)
//! (needs `ssh` and `sshd`; run as root, like the tests). Prints a Markdown table and writes
//! the raw results as JSON to `docs/benchmarks.json` (partial runs: `target/benchmarks-partial.json`;
//! or the path in `BENCH_JSON`).
//!
//! Measured: connection setup (`ssh -J jump builder true`, interleaved), throughput of 1 GiB
//! and the jump host's CPU seconds per GiB, forward vs reverse tunnel for both, and revocation
//! latency with 1,000 live connections over 100 builds (plus the process RSS at that point),
//! and the same across gateways sharing a Redis: connections on two gateways, revoked through
//! a third authority (the platform's). `--redis-only` runs only that part.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remote_access_core::{
    AgentOptions, Authority, AuthorityOptions, BuildId, BuildRequest, ConnectionInfo, Credentials, Gateway,
    GatewayOptions, HostKey, RedisOptions, ScriptOptions, Secret, StoreOptions, Trigger, run_agent,
};
use remote_access_examples::peers::{self, BuilderRoute};
use remote_access_test_peers::{AnyKey, RedisServer, Sshd, VncServer, free_port, write_script};
use tokio::process::Command;

const GIB: u64 = 1 << 30;

/// CPU seconds (user + system) of a process and its reaped children, from /proc: an `sshd`'s
/// per-connection processes are reaped into it, and the gateway program has none, so both jump
/// hosts are read the same way.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3; utime 14 .. cstime 17.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = (11..15).filter_map(|i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Resident memory of a process (`self` or a pid), from /proc.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    percentile(&sorted(v.to_vec()), 50.0)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// One way of reaching the builder: an ssh config file and the host alias to ask for.
struct Route {
    name: &'static str,
    /// The cipher every hop is set to, or [`DEFAULT`].
    cipher: &'static str,
    config: PathBuf,
    target: &'static str,
    /// Whose CPU to count for the jump host: the gateway program's pid, or sshd's.
    jump_pid: String,
    /// The reverse path's agent process (on the builder in a real deployment), counted apart.
    agent_pid: Option<String>,
}

/// The label of the paths where client and jump host negotiate as they would by default.
const DEFAULT: &str = "default";

/// A cipher setting for every hop of a path (the jump host's and the builder's).
struct Cipher {
    name: &'static str,
    /// The `ssh_config` lines, or none for each side's default negotiation.
    config: Option<&'static str>,
}

impl Cipher {
    /// The name, fit for a file name (ssh splits `-F` paths in a `ProxyCommand` at spaces).
    fn file_name(&self) -> String {
        self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
    }

    fn apply(&self, config: String) -> String {
        match self.config {
            Some(lines) => format!("{config}Host *\n{lines}"),
            None => config,
        }
    }
}

/// Each cipher a stock OpenSSH client may negotiate with both jump hosts, and the default
/// negotiation; `--cipher NAME` narrows the run to that one (and no reverse path).
fn ciphers() -> Vec<Cipher> {
    let all = vec![
        Cipher { name: DEFAULT, config: None },
        Cipher { name: "chacha20-poly1305", config: Some("  Ciphers chacha20-poly1305@openssh.com\n") },
        Cipher { name: "aes128-gcm", config: Some("  Ciphers aes128-gcm@openssh.com\n") },
        Cipher { name: "aes256-gcm", config: Some("  Ciphers aes256-gcm@openssh.com\n") },
        Cipher {
            name: "aes128-ctr + hmac-sha2-256-etm",
            config: Some("  Ciphers aes128-ctr\n  MACs hmac-sha2-256-etm@openssh.com\n"),
        },
    ];
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--cipher").and_then(|i| args.get(i + 1)) {
        Some(only) => all.into_iter().filter(|c| only.starts_with(c.name)).collect(),
        None => all,
    }
}

/// The `gateway` program (next to this one) in a process of its own, on the benchmark's Redis,
/// with its open-file limit raised for the scale runs. Its stdout (events) is read and dropped.
struct GatewayProcess {
    child: tokio::process::Child,
    pid: String,
    port: u16,
}

impl GatewayProcess {
    async fn start(
        program: &Path,
        redis_url: &str,
        key_file: &Path,
        vnc_ports: &[u16],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        use tokio::io::AsyncBufReadExt;
        let mut command = Command::new("sh");
        // `exec` keeps the pid: the one read from /proc is the gateway's.
        command
            .arg("-c")
            .arg("ulimit -n \"$(ulimit -Hn)\"; exec \"$@\"")
            .arg("sh")
            .arg(program)
            .args(["--listen", "127.0.0.1:0", "--redis", redis_url])
            .arg("--host-key-file")
            .arg(key_file);
        for port in vnc_ports {
            command.arg("--vnc-port").arg(port.to_string());
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the gateway exited at once")?.to_string();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let port = loop {
            let line = lines.next_line().await?.ok_or("the gateway exited before listening")?;
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.parse::<std::net::SocketAddr>()?.port();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, pid, port })
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// One 1 GiB transfer: whether it worked, MiB/s, and CPU seconds per GiB of the jump host and
/// (reverse path) of the agent.
#[derive(Clone, Copy)]
struct Transfer {
    ok: bool,
    mib_s: f64,
    jump_cpu: f64,
    agent_cpu: Option<f64>,
}

async fn ssh_run(path: &Route, command: &str) -> (bool, Duration) {
    let start = Instant::now();
    let status = Command::new("ssh")
        .arg("-F")
        .arg(&path.config)
        .arg(path.target)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    (matches!(status, Ok(s) if s.success()), start.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Interrupted (Ctrl-C, or TERM from a supervisor), the run is dropped, and with it every
    // peer it started (sshd, Redis, the gateway, the VNC servers, the load client): they die
    // with their handles instead of running on.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = run() => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = terminate.recv() => Err("terminated".into()),
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(i) = std::env::args().position(|a| a == "--load-client") {
        let args: Vec<String> = std::env::args().skip(i + 1).collect();
        return load_client(&args).await;
    }
    if let Some(i) = std::env::args().position(|a| a == "--agent") {
        let args: Vec<String> = std::env::args().skip(i + 1).collect();
        return agent(&args).await;
    }
    if std::env::args().any(|a| a == "--redis-only") {
        let builder = Sshd::start();
        let r = sorted(redis_revocation(&builder).await?);
        print_redis_revocation(&r);
        let report = serde_json::json!({"redis_revocation_ms": revocation_json(&r)});
        let out = std::env::var("BENCH_JSON").unwrap_or_else(|_| "target/benchmarks-partial.json".into());
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        println!("\nraw results: {out}");
        return Ok(());
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `--throughput-only` skips setup and revocation: for profiling the data path.
    let throughput_only = std::env::args().any(|a| a == "--throughput-only");
    // `--vnc-only` runs only the VNC comparison.
    let vnc_only = std::env::args().any(|a| a == "--vnc-only");
    // `--scale-only` runs only the live-connection runs (`--connections N`: only that size).
    let scale_only = std::env::args().any(|a| a == "--scale-only");
    let setup_runs = if throughput_only || vnc_only || scale_only {
        0
    } else if quick {
        5
    } else {
        30
    };
    let bytes = if quick { 64 << 20 } else { GIB };
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();

    // The builder (a real sshd) and OpenSSH's jump host (another sshd).
    let builder = Sshd::start();
    let jump = Sshd::start();

    // Our gateway: the `gateway` program in a process of its own, sessions in a Redis as in a
    // fleet, so that its CPU and memory are read from /proc exactly as sshd's. The harness
    // issues the builds through an authority on the same Redis, as a platform would.
    let redis = RedisServer::start_in_memory();
    let vnc_ports = vec![free_port(), free_port()];
    let host_key = HostKey::generate()?;
    let key_file = write_script(dir, "gateway.key", host_key.to_openssh()?.expose());
    let program = std::env::current_exe()?.with_file_name("gateway");
    let mut gateway = GatewayProcess::start(&program, &redis.url(), &key_file, &vnc_ports).await?;
    // `--before PATH`: another build of the gateway program (e.g. the commit before a change),
    // measured in the same run on the forward path, for a before/after at equal conditions.
    let args: Vec<String> = std::env::args().collect();
    let mut before = match args.iter().position(|a| a == "--before").and_then(|i| args.get(i + 1)) {
        Some(path) => Some(GatewayProcess::start(Path::new(path), &redis.url(), &key_file, &[]).await?),
        None => None,
    };
    let port = gateway.port;
    let mut aopts = AuthorityOptions::default();
    aopts.vnc_ports = vnc_ports.clone();
    aopts.store = StoreOptions::Redis(RedisOptions::new(redis.url()));
    let authority = Authority::new(aopts)?;

    let issue = |id: &str, reverse: bool| {
        let mut route = builder.builder();
        route.reverse_tunnel = reverse;
        let mut request = BuildRequest::new(BuildId::new(id)?, Trigger::Manual, true);
        request.builder = Some(route);
        Ok::<_, remote_access_core::Error>(request)
    };
    let forward = authority.issue(issue("bench-forward", false)?).await?;
    let reverse = authority.issue(issue("bench-reverse", true)?).await?;
    // The reverse build's agent, in a process of its own as on a real builder, so that its CPU
    // is counted apart from the gateway's.
    let agent_key =
        write_script(dir, "agent.key", reverse.agent_private_key_openssh()?.unwrap_or_default().expose());
    let agent = Command::new(std::env::current_exe()?)
        .arg("--agent")
        .arg(format!("127.0.0.1:{port}"))
        .arg(host_key.public_key())
        .arg(reverse.agent_username().unwrap_or_default())
        .arg(&agent_key)
        .arg(builder.port.to_string())
        .kill_on_drop(true)
        .spawn()?;
    let agent_pid = agent.id().map(|pid| pid.to_string());
    // OpenSSH as the jump host: the forward build's key, authorized on the jump sshd too.
    jump.authorize(&forward.authorized_keys_line());
    let openssh_known = write_script(
        dir,
        "openssh.known",
        &format!(
            "[127.0.0.1]:{} {}\n[127.0.0.1]:{} {}\n",
            jump.port, jump.host_key, builder.port, builder.host_key
        ),
    );
    // Per cipher, the forward path through each jump host, the same cipher on every hop; the
    // reverse path only with the default negotiation.
    let mut paths = Vec::new();
    for cipher in ciphers() {
        for creds in [&forward, &reverse] {
            let reverse_path = creds.build_id() == reverse.build_id();
            if reverse_path && cipher.config.is_some() {
                continue;
            }
            let session = authority.session(creds.build_id()).await?;
            let info =
                ConnectionInfo::new(creds, &session, &host_key, &ScriptOptions::new("127.0.0.1", port))?;
            let id = creds.build_id().to_string();
            let (key, known) = (dir.join(format!("{id}.key")), dir.join(format!("{id}.known")));
            if !key.exists() {
                builder.authorize(&creds.authorized_keys_line());
                write_script(dir, &format!("{id}.key"), creds.private_key_openssh()?.expose());
                write_script(dir, &format!("{id}.known"), &info.known_hosts()?);
            }
            let config = info
                .ssh_config(key.to_str().unwrap_or_default(), known.to_str().unwrap_or_default())?
                + "  BatchMode yes\n";
            paths.push(Route {
                name: if reverse_path { "gateway (reverse)" } else { "gateway (forward)" },
                cipher: cipher.name,
                config: write_script(
                    dir,
                    &format!("{id}-{}.config", cipher.file_name()),
                    &cipher.apply(config),
                ),
                target: "remote-access-builder",
                jump_pid: gateway.pid.clone(),
                agent_pid: if reverse_path { agent_pid.clone() } else { None },
            });
            if let Some(before) = before.as_ref().filter(|_| !reverse_path) {
                let info = ConnectionInfo::new(
                    creds,
                    &session,
                    &host_key,
                    &ScriptOptions::new("127.0.0.1", before.port),
                )?;
                let known = dir.join("before.known");
                if !known.exists() {
                    write_script(dir, "before.known", &info.known_hosts()?);
                }
                let config = info
                    .ssh_config(key.to_str().unwrap_or_default(), known.to_str().unwrap_or_default())?
                    + "  BatchMode yes\n";
                paths.push(Route {
                    name: "gateway before (forward)",
                    cipher: cipher.name,
                    config: write_script(
                        dir,
                        &format!("before-{}.config", cipher.file_name()),
                        &cipher.apply(config),
                    ),
                    target: "remote-access-builder",
                    jump_pid: before.pid.clone(),
                    agent_pid: None,
                });
            }
            if !reverse_path {
                let key = dir.join(format!("{}.key", forward.build_id()));
                let openssh = format!(
                    "Host jump\n  HostName 127.0.0.1\n  Port {jp}\n  User root\nHost builder\n  HostName 127.0.0.1\n  Port {bp}\n  User root\n  ProxyJump jump\n\
                     Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                    jp = jump.port,
                    bp = builder.port,
                    key = key.display(),
                    known = openssh_known.display()
                );
                paths.push(Route {
                    name: "OpenSSH sshd",
                    cipher: cipher.name,
                    config: write_script(
                        dir,
                        &format!("openssh-{}.config", cipher.file_name()),
                        &cipher.apply(openssh),
                    ),
                    target: "builder",
                    jump_pid: jump.pid().to_string(),
                    agent_pid: None,
                });
            }
        }
    }

    for path in &paths {
        let start = Instant::now();
        while !ssh_run(path, "true").await.0 {
            if start.elapsed() > Duration::from_secs(30) {
                let out = std::process::Command::new("ssh")
                    .arg("-F")
                    .arg(&path.config)
                    .args([path.target, "true"])
                    .stdin(Stdio::null())
                    .output()?;
                let why = String::from_utf8_lossy(&out.stderr);
                return Err(format!("{} ({}) never worked: {why}", path.name, path.cipher).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 1 (and 7): connection setup, interleaved, with each side's default negotiation.
    let mut setup: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..setup_runs {
        for (i, path) in paths.iter().enumerate().filter(|(_, p)| p.cipher == DEFAULT) {
            let (ok, took) = ssh_run(path, "true").await;
            if ok {
                setup[i].push(took.as_secs_f64() * 1000.0);
            }
        }
    }
    // 2 (and 7): throughput and the jump host's CPU per GiB, every path and cipher taking turns;
    // one transfer varies by ±10 %, so the report gives the median of the rounds and the spread.
    let rounds = if vnc_only || scale_only {
        0
    } else if quick {
        1
    } else {
        3
    };
    let mut transfers: Vec<Vec<Transfer>> = vec![Vec::new(); paths.len()];
    let gib = bytes as f64 / GIB as f64;
    for _ in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let agent_before = path.agent_pid.as_deref().map(cpu_seconds);
            let cpu_before = cpu_seconds(&path.jump_pid);
            let (ok, took) = ssh_run(path, &format!("head -c {bytes} /dev/zero")).await;
            tokio::time::sleep(Duration::from_millis(300)).await; // let sshd reap its children
            let jump_cpu = (cpu_seconds(&path.jump_pid) - cpu_before) / gib;
            let agent_cpu = path
                .agent_pid
                .as_deref()
                .zip(agent_before)
                .map(|(pid, before)| (cpu_seconds(pid) - before) / gib);
            let mib_s = bytes as f64 / took.as_secs_f64() / (1 << 20) as f64;
            transfers[i].push(Transfer { ok, mib_s, jump_cpu, agent_cpu });
        }
    }
    // Per path, the median of each figure over the rounds.
    let throughput: Vec<Transfer> = transfers
        .iter()
        .map(|runs| {
            let of = |f: fn(&Transfer) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            Transfer {
                ok: runs.iter().all(|r| r.ok),
                mib_s: of(|r| r.mib_s),
                jump_cpu: of(|r| r.jump_cpu),
                agent_cpu: runs
                    .iter()
                    .all(|r| r.agent_cpu.is_some())
                    .then(|| of(|r| r.agent_cpu.unwrap_or(0.0))),
            }
        })
        .collect();

    // 6: VNC through the proxy against a direct connection to the same server: x11vnc (which
    // paces its updates) and TigerVNC (which answers at once).
    let mut vnc = Vec::new();
    if !throughput_only && !scale_only {
        for (name, server) in [
            ("x11vnc (Xvfb 640x480)", peers::x11vnc("bench-pw")),
            ("TigerVNC (Xtigervnc 800x600)", peers::tigervnc("bench-pw")),
        ] {
            vnc.push((name, vnc_bench(&authority, &server, quick).await?));
        }
    }
    // The memory of an idle gateway, before the scale runs start fresh ones.
    let idle_gateway_kib = rss_kib(&gateway.pid);
    gateway.stop().await;
    if let Some(before) = before.as_mut() {
        before.stop().await;
    }

    // 3 and 4: live connections on a fresh gateway process each: memory, and revocation.
    let scale_sizes: Vec<usize> = if throughput_only || vnc_only {
        Vec::new()
    } else if let Some(n) = args.iter().position(|a| a == "--connections").and_then(|i| args.get(i + 1)) {
        vec![n.parse()?]
    } else if quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    // Each connection is a socket in the gateway (and in the load client): a size needs that
    // many open files, and only a process with CAP_SYS_RESOURCE can raise its hard limit.
    let file_limit = open_file_hard_limit();
    let mut scale_rows = Vec::new();
    let mut not_measured = Vec::new();
    let mut sizes = scale_sizes.clone();
    if let Some(largest) = scale_sizes.iter().copied().filter(|&n| n + SCALE_SPARE_FILES > file_limit).min() {
        let fits = (file_limit.saturating_sub(SCALE_SPARE_FILES) / 1000) * 1000;
        if fits > 0 && !sizes.contains(&fits) {
            sizes.push(fits);
            sizes.sort_unstable();
        }
        eprintln!(
            "connections from {largest} up need more open files than this machine's hard limit ({file_limit}); also measuring {fits}"
        );
    }
    for &n in &sizes {
        if n + SCALE_SPARE_FILES > file_limit {
            not_measured.push(n);
            continue;
        }
        // A failed size is reported, not the end of the run: the figures before it stand.
        match scale(&redis.url(), &key_file, &vnc_ports, &builder, dir, n).await {
            Ok(row) => scale_rows.push(row),
            Err(err) => {
                eprintln!("{n} live connections: failed: {err}");
                not_measured.push(n);
            }
        }
    }
    // 5: revocation across gateways sharing a Redis.
    let redis_revoke = if throughput_only || vnc_only || scale_only {
        Vec::new()
    } else {
        redis_revocation(&builder).await.unwrap_or_else(|err| {
            eprintln!("revocation across gateways: failed: {err}");
            Vec::new()
        })
    };
    let openssh_kib = if throughput_only || vnc_only || scale_only || quick {
        None
    } else {
        let openssh = paths.iter().find(|p| p.name == "OpenSSH sshd").ok_or("no OpenSSH path")?;
        Some(openssh_memory(openssh, &jump, 50).await?)
    };

    // Report.
    let date = time::OffsetDateTime::now_utc().date();
    println!("# remote-access vs OpenSSH, {date}, bytes per transfer {bytes}\n");
    println!(
        "| path | cipher | setup median ms | setup p90 ms | MiB/s (min-max) | jump CPU s/GiB (min-max) | agent CPU s/GiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut json = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let s = sorted(setup[i].clone());
        let Transfer { ok, mib_s, jump_cpu, agent_cpu } = throughput[i];
        let spread = |f: fn(&Transfer) -> f64| {
            let v = sorted(transfers[i].iter().map(f).collect());
            format!(
                "{:.2}-{:.2}",
                v.first().copied().unwrap_or(f64::NAN),
                v.last().copied().unwrap_or(f64::NAN)
            )
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            path.name,
            path.cipher,
            percentile(&s, 50.0),
            percentile(&s, 90.0),
            if ok { format!("{mib_s:.0} ({})", spread(|r| r.mib_s)) } else { "failed".into() },
            if ok { format!("{jump_cpu:.2} ({})", spread(|r| r.jump_cpu)) } else { "-".into() },
            agent_cpu.map_or("-".into(), |cpu| format!("{cpu:.2}")),
        );
        json.push(serde_json::json!({
            "path": path.name, "cipher": path.cipher, "setup_ms": s, "setup_median_ms": percentile(&s, 50.0),
            "setup_p90_ms": percentile(&s, 90.0), "transfer_ok": ok, "mib_per_s": mib_s,
            "jump_cpu_s_per_gib": jump_cpu, "agent_cpu_s_per_gib": agent_cpu,
            "transfers": transfers[i].iter().map(|r| serde_json::json!({
                "ok": r.ok, "mib_per_s": r.mib_s, "jump_cpu_s_per_gib": r.jump_cpu, "agent_cpu_s_per_gib": r.agent_cpu,
            })).collect::<Vec<_>>(),
        }));
    }
    // The comparison at equal settings: per cipher, gateway against sshd.
    if rounds > 0 {
        println!(
            "\n| cipher | gateway MiB/s | sshd MiB/s | throughput ratio | gateway CPU s/GiB | sshd CPU s/GiB | CPU ratio |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for cipher in ciphers() {
            let find = |name: &str| {
                paths.iter().position(|p| p.name == name && p.cipher == cipher.name).map(|i| throughput[i])
            };
            if let (Some(b), Some(o)) = (find("gateway before (forward)"), find("OpenSSH sshd")) {
                println!(
                    "| {} (before) | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    cipher.name,
                    b.mib_s,
                    o.mib_s,
                    b.mib_s / o.mib_s,
                    b.jump_cpu,
                    o.jump_cpu,
                    b.jump_cpu / o.jump_cpu
                );
            }
            if let (Some(g), Some(o)) = (find("gateway (forward)"), find("OpenSSH sshd")) {
                println!(
                    "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    cipher.name,
                    g.mib_s,
                    o.mib_s,
                    g.mib_s / o.mib_s,
                    g.jump_cpu,
                    o.jump_cpu,
                    g.jump_cpu / o.jump_cpu
                );
            }
        }
    }
    let vnc_spread = |v: &[f64]| {
        let v = sorted(v.to_vec());
        format!("{:.0}-{:.0}", v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN))
    };
    for (name, v) in &vnc {
        println!(
            "\nVNC ({name}, raw full frames): direct {:.0} MiB/s ({}), through the gateway {:.0} MiB/s ({}), ratio {:.2}; \
             1x1 update round trip median direct {:.3} ms, through the gateway {:.3} ms",
            v.direct_mib_s,
            vnc_spread(&v.direct_rounds),
            v.gateway_mib_s,
            vnc_spread(&v.gateway_rounds),
            v.gateway_mib_s / v.direct_mib_s,
            v.direct_rtt_ms,
            v.gateway_rtt_ms
        );
    }
    println!("\nidle gateway process RSS: {idle_gateway_kib} KiB");
    for row in &scale_rows {
        let r = &row.revocation;
        println!(
            "{} live connections on a fresh gateway process: {:.1} KiB each (RSS {} -> {} KiB), opened in {:.1} s; \
             revocation p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            row.connections,
            row.kib_per_connection,
            row.rss_before_kib,
            row.rss_after_kib,
            row.open_seconds,
            percentile(r, 50.0),
            percentile(r, 99.0),
            r.last().copied().unwrap_or(f64::NAN)
        );
    }
    for n in &not_measured {
        println!(
            "{n} live connections: not measured (see above: the open-file hard limit here is {file_limit}, \
             and raising it needs CAP_SYS_RESOURCE)"
        );
    }
    if let Some(kib) = openssh_kib {
        println!(
            "OpenSSH jump host RSS per live connection (50 `ssh -N` to the jump sshd, its processes summed): {kib:.0} KiB"
        );
    }
    let redis_revoke = sorted(redis_revoke);
    print_redis_revocation(&redis_revoke);
    let report = serde_json::json!({
        "date": date.to_string(), "bytes": bytes, "paths": json,
        "scale": scale_rows.iter().map(|row| serde_json::json!({
            "connections": row.connections, "kib_per_connection": row.kib_per_connection,
            "rss_before_kib": row.rss_before_kib, "rss_after_kib": row.rss_after_kib,
            "open_seconds": row.open_seconds, "revocation_ms": revocation_json(&row.revocation),
        })).collect::<Vec<_>>(),
        "idle_gateway_rss_kib": idle_gateway_kib,
        "scale_not_measured": {"connections": not_measured, "open_file_hard_limit": file_limit},
        "redis_revocation_ms": revocation_json(&redis_revoke),
        "openssh_rss_kib_per_connection_50": openssh_kib,
        "vnc": vnc.iter().map(|(name, v)| serde_json::json!({
            "server": name, "direct_mib_per_s": v.direct_mib_s, "gateway_mib_per_s": v.gateway_mib_s,
            "direct_rounds_mib_per_s": v.direct_rounds, "gateway_rounds_mib_per_s": v.gateway_rounds,
            "direct_rtt_median_ms": v.direct_rtt_ms, "gateway_rtt_median_ms": v.gateway_rtt_ms,
        })).collect::<Vec<_>>(),
    });
    // A partial run must not replace the recorded full results.
    let partial = quick || throughput_only || vnc_only || scale_only || args.iter().any(|a| a == "--cipher");
    let default_out = if partial { "target/benchmarks-partial.json" } else { "docs/benchmarks.json" };
    let out = std::env::var("BENCH_JSON").unwrap_or_else(|_| default_out.into());
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nraw results: {out}");
    drop(agent);
    Ok(())
}

fn revocation_json(sorted: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50": percentile(sorted, 50.0), "p99": percentile(sorted, 99.0),
        "max": sorted.last().copied().unwrap_or(f64::NAN), "samples": sorted.len(),
    })
}

fn print_redis_revocation(sorted: &[f64]) {
    println!(
        "revocation across gateways on one Redis, 1,000 connections over 100 builds on two gateways, \
         revoked through a third authority: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
}

/// Two gateways, each with its own authority and Redis connections (as two processes would),
/// and the platform's authority, which serves nothing, on one in-memory `redis-server`: the
/// revocation goes through the platform and must reach both gateways (Redis pub/sub).
async fn redis_revocation(builder: &Sshd) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let redis = RedisServer::start_in_memory();
    let open = || {
        let mut options = AuthorityOptions::default();
        options.store = StoreOptions::Redis(RedisOptions::new(redis.url()));
        Authority::new(options)
    };
    let platform = open()?;
    let mut running = Vec::new();
    for _ in 0..2 {
        let gateway = Gateway::new(open()?, GatewayOptions::default())?;
        running.push(gateway.start("127.0.0.1:0").await?);
    }
    let ports: Vec<u16> = running.iter().map(|r| r.local_addr().port()).collect();
    let (samples, _) = revocation(&platform, &ports, builder, "redis-revoke").await?;
    for gateway in running {
        gateway.stop().await?;
    }
    Ok(samples)
}

/// Opens 10 authenticated connections to each of 100 builds (spread over the gateways at
/// `ports`), then revokes each build through `authority` and measures, per connection, the
/// time from `revoke` to the client seeing the connection closed.
async fn revocation(
    authority: &Authority,
    ports: &[u16],
    builder: &Sshd,
    prefix: &str,
) -> Result<(Vec<f64>, f64), Box<dyn std::error::Error>> {
    let rss_before = rss_kib("self");
    let config = Arc::new(russh::client::Config::default());
    let mut builds: Vec<(Credentials, Vec<russh::client::Handle<AnyKey>>)> = Vec::new();
    for b in 0..100 {
        let mut request = BuildRequest::new(BuildId::new(format!("{prefix}-{b}"))?, Trigger::Manual, true);
        request.builder = Some(builder.builder());
        let creds = authority.issue(request).await?;
        let key = Arc::new(russh::keys::decode_secret_key(creds.private_key_openssh()?.expose(), None)?);
        let mut handles = Vec::new();
        for c in 0..10 {
            let port = ports[c % ports.len()];
            let tcp = remote_access_test_peers::connect_from(
                user_address(b * 10 + c).into(),
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .await?;
            let mut handle = russh::client::connect_stream(config.clone(), tcp, AnyKey).await?;
            let auth = handle
                .authenticate_publickey(
                    creds.username(),
                    russh::keys::PrivateKeyWithHashAlg::new(key.clone(), None),
                )
                .await?;
            if !auth.success() {
                return Err("load client refused".into());
            }
            handles.push(handle);
        }
        builds.push((creds, handles));
    }
    let rss_per_conn = (rss_kib("self").saturating_sub(rss_before)) as f64 / 1000.0;
    let mut samples = Vec::new();
    for (creds, handles) in builds {
        samples.extend(time_revocation(authority, creds.build_id(), handles).await?);
    }
    Ok((samples, rss_per_conn))
}

/// The loopback address of the `index`th user connection: 1,000 /24 networks in turn, one
/// address each time (at most ~100 per network for 100,000 connections), so that the gateway's
/// per-address and per-network rates see what a crowd of real users would.
fn user_address(index: usize) -> std::net::Ipv4Addr {
    let (net, host) = (index % 1000, index / 1000 + 1);
    std::net::Ipv4Addr::new(127, 1 + (net / 250) as u8, (net % 250) as u8, host as u8)
}

/// Revokes `build` through `authority` and returns, per connection of `handles`, the
/// milliseconds from the call to the client seeing its connection closed.
async fn time_revocation(
    authority: &Authority,
    build: &BuildId,
    handles: Vec<russh::client::Handle<AnyKey>>,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let waits: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            tokio::spawn(async move {
                let _ = handle.await;
                start.elapsed()
            })
        })
        .collect();
    authority.revoke(build, "benchmark").await?;
    let mut samples = Vec::with_capacity(waits.len());
    for wait in waits {
        samples.push(wait.await?.as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

struct VncFigures {
    direct_mib_s: f64,
    gateway_mib_s: f64,
    /// Each round's MiB/s, for the spread.
    direct_rounds: Vec<f64>,
    gateway_rounds: Vec<f64>,
    direct_rtt_ms: f64,
    gateway_rtt_ms: f64,
}

/// Full-frame throughput and 1x1-update round trips, direct and through the gateway, taking
/// turns, against one VNC server (a build of its own, revoked at the end).
async fn vnc_bench(
    authority: &Authority,
    server: &VncServer,
    quick: bool,
) -> Result<VncFigures, Box<dyn std::error::Error>> {
    use remote_access_examples::stand_in_vnc::{login, request_update};
    let Some(&vnc_port) = authority.options().vnc_ports.first() else {
        return Err("no VNC port configured".into());
    };
    let mut request =
        BuildRequest::new(BuildId::new(format!("bench-vnc-{}", server.port))?, Trigger::Manual, true);
    request.builder = Some(server.builder());
    request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
    let creds = authority.issue(request).await?;
    let session = authority.session(creds.build_id()).await?;
    let user_port = session.vnc_port().unwrap_or(vnc_port);

    // Full frames for a fixed time per pass, the two paths taking turns over several rounds;
    // the report gives the medians (x11vnc paces its updates, so single passes vary a lot).
    let (pass, rounds) = if quick { (Duration::from_millis(300), 3) } else { (Duration::from_secs(1), 7) };
    let mut throughput = [Vec::new(), Vec::new()];
    let mut rtt = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (port, password)) in
            [(server.port, server.password.as_str()), (user_port, creds.vnc_password().expose().as_str())]
                .into_iter()
                .enumerate()
        {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            let (w, h, bpp) = login(&mut s, password).await?;
            let start = Instant::now();
            let mut frames = 0u32;
            while start.elapsed() < pass {
                request_update(&mut s, w, h, bpp).await?;
                frames += 1;
            }
            let frames_took = start.elapsed().as_secs_f64();
            let mib = f64::from(frames) * f64::from(w) * f64::from(h) * bpp as f64 / f64::from(1 << 20);
            throughput[i].push(mib / frames_took);
            for _ in 0..50 {
                let t = Instant::now();
                request_update(&mut s, 1, 1, bpp).await?;
                rtt[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let figures = [(median(&throughput[0]), median(&rtt[0])), (median(&throughput[1]), median(&rtt[1]))];
    authority.revoke(creds.build_id(), "benchmark done").await?;
    Ok(VncFigures {
        direct_mib_s: figures[0].0,
        gateway_mib_s: figures[1].0,
        direct_rtt_ms: figures[0].1,
        gateway_rtt_ms: figures[1].1,
        direct_rounds: throughput[0].clone(),
        gateway_rounds: throughput[1].clone(),
    })
}

/// `--agent ADDR HOST_KEY USER KEY_FILE PORT`: the reverse build's agent, until killed.
async fn agent(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [addr, host_key, user, key_file, port] = args else {
        return Err("usage: --agent ADDR HOST_KEY USER KEY_FILE PORT".into());
    };
    let key = Secret::new(std::fs::read_to_string(key_file)?);
    let mut options = AgentOptions::new(addr.clone(), host_key.clone(), user.clone(), key);
    options.ports = vec![port.parse()?];
    run_agent(options, std::future::pending()).await?;
    Ok(())
}

/// One scale run: `connections` live authenticated connections on a fresh gateway process.
struct ScaleRow {
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_connection: f64,
    open_seconds: f64,
    /// Per connection, milliseconds from `revoke` to the client seeing its connection closed,
    /// sorted.
    revocation: Vec<f64>,
}

/// Open files a scale run needs besides one per connection (listeners, Redis, logs).
const SCALE_SPARE_FILES: usize = 500;

/// The hard limit on open files here (`ulimit -Hn`): what the scale runs can raise theirs to.
fn open_file_hard_limit() -> usize {
    std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(usize::MAX)
}

/// Connections per build in the scale runs (the gateway allows 16 per build by default).
const SCALE_PER_BUILD: usize = 10;

/// `n` live authenticated connections from a separate load-client process on a fresh gateway
/// process (so the allocator has reused nothing): the growth of the gateway's RSS per
/// connection, then every build revoked one after another through the platform's authority
/// (in this process), timed per connection from `revoke` to the load client seeing the close.
async fn scale(
    redis_url: &str,
    key_file: &Path,
    vnc_ports: &[u16],
    builder: &Sshd,
    dir: &Path,
    n: usize,
) -> Result<ScaleRow, Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let mut options = AuthorityOptions::default();
    options.store = StoreOptions::Redis(RedisOptions::new(redis_url));
    let authority = Authority::new(options)?;
    let mut lines = String::new();
    let mut builds = Vec::new();
    for b in 0..n.div_ceil(SCALE_PER_BUILD) {
        let mut request = BuildRequest::new(BuildId::new(format!("scale-{n}-{b}"))?, Trigger::Manual, true);
        request.builder = Some(builder.builder());
        let creds = authority.issue(request).await?;
        let key = write_script(dir, &format!("scale-{n}-{b}.key"), creds.private_key_openssh()?.expose());
        lines.push_str(&format!("{}\t{}\t{}\n", creds.build_id(), creds.username(), key.display()));
        builds.push(creds.build_id().clone());
    }
    let file = write_script(dir, &format!("scale-{n}.creds"), &lines);
    let program = std::env::current_exe()?.with_file_name("gateway");
    let mut gateway = GatewayProcess::start(&program, redis_url, key_file, vnc_ports).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib(&gateway.pid);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\"; exec \"$@\"")
        .arg("sh")
        .arg(std::env::current_exe()?)
        .arg("--load-client")
        .arg(format!("127.0.0.1:{}", gateway.port))
        .arg(&file)
        .arg(SCALE_PER_BUILD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let started = Instant::now();
    let ready = out.next_line().await?;
    let open_seconds = started.elapsed().as_secs_f64();
    if ready.as_deref() != Some(format!("ready {}", builds.len() * SCALE_PER_BUILD).as_str()) {
        return Err(format!("load client did not come up: {ready:?}").into());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib(&gateway.pid);
    // Revoked from this process, as a platform would from its own: the load client only
    // reports when each connection saw its close, on the same (system-wide) clock.
    let mut samples = Vec::with_capacity(builds.len() * SCALE_PER_BUILD);
    for (index, build) in builds.iter().enumerate() {
        let revoked = unix_micros(std::time::SystemTime::now());
        authority.revoke(build, "benchmark").await?;
        for _ in 0..SCALE_PER_BUILD {
            let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
                .await
                .map_err(|_| format!("{build}: a connection was still open 30 s after its revocation"))??
                .ok_or("load client ended before every connection closed")?;
            let (closed_build, micros) = line
                .strip_prefix("closed ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(b, t)| Some((b.parse::<usize>().ok()?, t.parse::<u128>().ok()?)))
                .ok_or_else(|| format!("load client said {line:?}"))?;
            if closed_build != index {
                return Err(
                    format!("revoking build {index} closed a connection of build {closed_build}").into()
                );
            }
            samples.push(micros.saturating_sub(revoked) as f64 / 1000.0);
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    gateway.stop().await;
    Ok(ScaleRow {
        connections: n,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        open_seconds,
        revocation: sorted(samples),
    })
}

/// The load client: `--load-client ADDR CREDS_FILE PER_CREDENTIAL`. Opens that many
/// authenticated connections per credential (file: `build\tusername\tprivate-key-path`
/// lines), each from a loopback address of its own (127.1.0.1 onwards, spread over /24
/// networks, so the gateway's per-address and per-network rates see what a real crowd of users
/// would), prints `ready N`, then `closed B MICROS` as each connection ends (B the credential's
/// line, counting from 0; MICROS the wall clock since the Unix epoch); exits when its stdin
/// closes.
async fn load_client(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let [addr, creds, per] = args else {
        return Err("usage: --load-client ADDR CREDS_FILE PER_CREDENTIAL".into());
    };
    let per: usize = per.parse()?;
    let gateway: std::net::SocketAddr = addr.parse()?;
    let config =
        Arc::new(russh::client::Config { inactivity_timeout: None, ..russh::client::Config::default() });
    let mut builds = 0usize;
    let mut opening = tokio::task::JoinSet::new();
    // Handshakes in flight at once: the gateway lets 10,000 wait, but a crowd this size would
    // not arrive in one instant either.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut next = 0usize;
    for line in std::fs::read_to_string(creds)?.lines() {
        let mut fields = line.split('\t');
        let (Some(_build), Some(user), Some(key_path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let key = Arc::new(russh::keys::decode_secret_key(&std::fs::read_to_string(key_path)?, None)?);
        let index = builds;
        builds += 1;
        for _ in 0..per {
            let from = user_address(next);
            next += 1;
            let permit = in_flight.clone().acquire_owned().await?;
            let (config, key, user) = (config.clone(), key.clone(), user.to_owned());
            opening.spawn(async move {
                let _permit = permit;
                let tcp = remote_access_test_peers::connect_from(from.into(), gateway).await?;
                let mut handle = russh::client::connect_stream(config, tcp, AnyKey).await?;
                let auth = handle
                    .authenticate_publickey(user, russh::keys::PrivateKeyWithHashAlg::new(key, None))
                    .await?;
                if !auth.success() {
                    return Err::<_, Box<dyn std::error::Error + Send + Sync>>("load client refused".into());
                }
                Ok((index, handle))
            });
        }
    }
    let mut handles = Vec::new();
    while let Some(opened) = opening.join_next().await {
        handles.push(opened?.map_err(|e| e.to_string())?);
    }
    println!("ready {}", handles.len());
    // Every connection waits for its end from now on; a revocation is the only thing that ends
    // one, and the harness times it against the moment it called `revoke`.
    let (closed, mut closes) = tokio::sync::mpsc::unbounded_channel();
    for (index, handle) in handles {
        let closed = closed.clone();
        tokio::spawn(async move {
            let _ = handle.await;
            let _ = closed.send((index, unix_micros(std::time::SystemTime::now())));
        });
    }
    drop(closed);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => if line?.is_none() { return Ok(()) },
            Some((index, micros)) = closes.recv() => println!("closed {index} {micros}"),
        }
    }
}

/// Microseconds since the Unix epoch: a clock two processes on one machine share.
fn unix_micros(at: std::time::SystemTime) -> u128 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// RSS of OpenSSH's jump sshd processes per live connection: `n` idle `ssh -N jump` clients.
async fn openssh_memory(openssh: &Route, jump: &Sshd, n: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let sum_rss = || -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // Walk up the parent chain: is this process the jump sshd or one of its descendants?
            let mut current = pid.clone();
            let mut ours = false;
            for _ in 0..8 {
                if current == jump.pid().to_string() {
                    ours = true;
                    break;
                }
                let stat = std::fs::read_to_string(format!("/proc/{current}/stat")).unwrap_or_default();
                let Some(ppid) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)) else {
                    break;
                };
                current = ppid.to_owned();
            }
            if ours {
                total += rss_kib(&pid);
            }
        }
        total
    };
    let before = sum_rss();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(
            Command::new("ssh")
                .arg("-F")
                .arg(&openssh.config)
                .args(["-N", "jump"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per = sum_rss().saturating_sub(before) as f64 / n as f64;
    drop(clients);
    Ok(per)
}
