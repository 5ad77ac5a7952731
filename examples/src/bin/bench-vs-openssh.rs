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

/// CPU seconds (user + system) of a jump host process, from /proc.
///
/// An `sshd`'s per-connection processes are reaped into it, so their time (cutime, cstime)
/// is part of the jump host. The harness (`self`, which runs the gateway) is different: its
/// reaped children are the `ssh` clients it ran, which are not, so only its own time counts.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3; utime 14 .. cstime 17.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let last = if pid == "self" { 13 } else { 15 };
    let ticks: f64 = (11..last).filter_map(|i| fields.get(i)?.parse::<f64>().ok()).sum();
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
    config: PathBuf,
    target: &'static str,
    /// Whose CPU to count for the jump host: `self` for our in-process gateway, or sshd's pid.
    jump_pid: String,
    /// The reverse path's agent process (on the builder in a real deployment), counted apart.
    agent_pid: Option<String>,
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

/// `config` with the cipher that `--cipher NAME` asks for, on every hop (the jump host's and
/// the builder's), or unchanged: then each client and host negotiate their default.
fn with_cipher(config: String) -> String {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--cipher").and_then(|i| args.get(i + 1)) {
        Some(cipher) => format!("{config}Host *\n  Ciphers {cipher}\n"),
        None => config,
    }
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
    let setup_runs = if throughput_only || vnc_only {
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

    // Our gateway, forward and reverse builds on the same builder.
    let mut aopts = AuthorityOptions::default();
    aopts.vnc_ports = vec![free_port(), free_port()];
    let authority = Authority::new(aopts)?;
    let mut gopts = GatewayOptions::default();
    gopts.host_key = Some(HostKey::generate()?);
    let gateway = Gateway::new(authority.clone(), gopts)?;
    let running = gateway.start("127.0.0.1:0").await?;
    let port = running.local_addr().port();

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
        .arg(gateway.host_key().public_key())
        .arg(reverse.agent_username().unwrap_or_default())
        .arg(&agent_key)
        .arg(builder.port.to_string())
        .kill_on_drop(true)
        .spawn()?;
    let agent_pid = agent.id().map(|pid| pid.to_string());
    let mut paths = Vec::new();
    for (name, creds) in [("gateway (forward)", &forward), ("gateway (reverse)", &reverse)] {
        builder.authorize(&creds.authorized_keys_line());
        let session = authority.session(creds.build_id()).await?;
        let info =
            ConnectionInfo::new(creds, &session, gateway.host_key(), &ScriptOptions::new("127.0.0.1", port))?;
        let id = creds.build_id().to_string();
        let key = write_script(dir, &format!("{id}.key"), creds.private_key_openssh()?.expose());
        let known = write_script(dir, &format!("{id}.known"), &info.known_hosts()?);
        let config = info.ssh_config(key.to_str().unwrap_or_default(), known.to_str().unwrap_or_default())?
            + "  BatchMode yes\n";
        paths.push(Route {
            name,
            config: write_script(dir, &format!("{id}.config"), &with_cipher(config)),
            target: "remote-access-builder",
            jump_pid: "self".into(),
            agent_pid: if creds.build_id() == reverse.build_id() { agent_pid.clone() } else { None },
        });
    }
    // OpenSSH as the jump host: the forward build's key, authorized on the jump sshd too.
    jump.authorize(&forward.authorized_keys_line());
    let key = dir.join(format!("{}.key", forward.build_id()));
    let known = write_script(
        dir,
        "openssh.known",
        &format!(
            "[127.0.0.1]:{} {}\n[127.0.0.1]:{} {}\n",
            jump.port, jump.host_key, builder.port, builder.host_key
        ),
    );
    let openssh = format!(
        "Host jump\n  HostName 127.0.0.1\n  Port {jp}\n  User root\nHost builder\n  HostName 127.0.0.1\n  Port {bp}\n  User root\n  ProxyJump jump\n\
         Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
        jp = jump.port,
        bp = builder.port,
        key = key.display(),
        known = known.display()
    );
    paths.insert(
        1,
        Route {
            name: "OpenSSH sshd",
            config: write_script(dir, "openssh.config", &with_cipher(openssh)),
            target: "builder",
            jump_pid: jump.pid().to_string(),
            agent_pid: None,
        },
    );

    for path in &paths {
        let start = Instant::now();
        while !ssh_run(path, "true").await.0 {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("{} never worked", path.name).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 1 (and 7): connection setup, interleaved.
    let mut setup: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..setup_runs {
        for (i, path) in paths.iter().enumerate() {
            let (ok, took) = ssh_run(path, "true").await;
            if ok {
                setup[i].push(took.as_secs_f64() * 1000.0);
            }
        }
    }
    // 2 (and 7): throughput and the jump host's CPU per GiB, the paths taking turns; one transfer
    // varies by ±10 %, so the report gives the median of the rounds.
    let rounds = if vnc_only {
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
    if !throughput_only {
        for (name, server) in [
            ("x11vnc (Xvfb 640x480)", peers::x11vnc("bench-pw")),
            ("TigerVNC (Xtigervnc 800x600)", peers::tigervnc("bench-pw")),
        ] {
            vnc.push((name, vnc_bench(&authority, &server, quick).await?));
        }
    }

    // 3: revocation with 1,000 live connections over 100 builds (in-process russh clients).
    let (revoke, rss_per_conn) = if throughput_only || vnc_only {
        (Vec::new(), f64::NAN)
    } else {
        revocation(&authority, &[port], &builder, "revoke").await?
    };
    // 5: the same across gateways sharing a Redis.
    let redis_revoke =
        if throughput_only || vnc_only { Vec::new() } else { redis_revocation(&builder).await? };
    // 4: the gateway's memory with 1,000 and 10,000 live connections from a separate process,
    // and OpenSSH's with a smaller count (one process pair per connection).
    let memory = if throughput_only || vnc_only || quick {
        Vec::new()
    } else {
        let mut rows = Vec::new();
        for n in [1_000usize, 10_000] {
            rows.push((n, gateway_memory(&authority, port, &builder, dir, n).await?));
        }
        rows
    };
    let openssh_kib = if throughput_only || vnc_only || quick {
        None
    } else {
        Some(openssh_memory(&paths[1], &jump, 50).await?)
    };
    running.stop().await?;

    // Report.
    let date = time::OffsetDateTime::now_utc().date();
    println!("# remote-access vs OpenSSH, {date}, bytes per transfer {bytes}\n");
    println!("| path | setup median ms | setup p90 ms | MiB/s | jump CPU s/GiB | agent CPU s/GiB |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut json = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let s = sorted(setup[i].clone());
        let Transfer { ok, mib_s, jump_cpu, agent_cpu } = throughput[i];
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} |",
            path.name,
            percentile(&s, 50.0),
            percentile(&s, 90.0),
            if ok { format!("{mib_s:.0}") } else { "failed".into() },
            if ok { format!("{jump_cpu:.2}") } else { "-".into() },
            agent_cpu.map_or("-".into(), |cpu| format!("{cpu:.2}")),
        );
        json.push(serde_json::json!({
            "path": path.name, "setup_ms": s, "setup_median_ms": percentile(&s, 50.0),
            "setup_p90_ms": percentile(&s, 90.0), "transfer_ok": ok, "mib_per_s": mib_s,
            "jump_cpu_s_per_gib": jump_cpu, "agent_cpu_s_per_gib": agent_cpu,
            "transfers": transfers[i].iter().map(|r| serde_json::json!({
                "ok": r.ok, "mib_per_s": r.mib_s, "jump_cpu_s_per_gib": r.jump_cpu, "agent_cpu_s_per_gib": r.agent_cpu,
            })).collect::<Vec<_>>(),
        }));
    }
    for (name, v) in &vnc {
        println!(
            "\nVNC ({name}, raw full frames): direct {:.0} MiB/s, through the gateway {:.0} MiB/s ({:.0} %); \
             1x1 update round trip median direct {:.3} ms, through the gateway {:.3} ms",
            v.direct_mib_s,
            v.gateway_mib_s,
            100.0 * v.gateway_mib_s / v.direct_mib_s,
            v.direct_rtt_ms,
            v.gateway_rtt_ms
        );
    }
    for (n, kib) in &memory {
        println!(
            "gateway RSS per live connection with {n} connections (clients in another process): {kib:.1} KiB"
        );
    }
    if let Some(kib) = openssh_kib {
        println!(
            "OpenSSH jump host RSS per live connection (50 `ssh -N` to the jump sshd, its processes summed): {kib:.0} KiB"
        );
    }
    let r = sorted(revoke);
    println!(
        "\nrevocation, 1,000 connections over 100 builds: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&r, 50.0),
        percentile(&r, 99.0),
        r.last().copied().unwrap_or(f64::NAN)
    );
    println!("process RSS per live connection (gateway and client sides together): {rss_per_conn:.1} KiB");
    let redis_revoke = sorted(redis_revoke);
    print_redis_revocation(&redis_revoke);
    let report = serde_json::json!({
        "date": date.to_string(), "bytes": bytes, "paths": json,
        "revocation_ms": revocation_json(&r),
        "redis_revocation_ms": revocation_json(&redis_revoke),
        "rss_kib_per_connection_both_sides": rss_per_conn,
        "gateway_rss_kib_per_connection": memory.iter().map(|(n, kib)| serde_json::json!({"connections": n, "kib": kib})).collect::<Vec<_>>(),
        "openssh_rss_kib_per_connection_50": openssh_kib,
        "vnc": vnc.iter().map(|(name, v)| serde_json::json!({
            "server": name, "direct_mib_per_s": v.direct_mib_s, "gateway_mib_per_s": v.gateway_mib_s,
            "direct_rtt_median_ms": v.direct_rtt_ms, "gateway_rtt_median_ms": v.gateway_rtt_ms,
        })).collect::<Vec<_>>(),
    });
    // A partial run must not replace the recorded full results.
    let partial = quick || throughput_only || vnc_only || std::env::args().any(|a| a == "--cipher");
    let default_out = if partial { "target/benchmarks-partial.json" } else { "docs/benchmarks.json" };
    let out = std::env::var("BENCH_JSON").unwrap_or_else(|_| default_out.into());
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nraw results: {out}");
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
            let mut handle = russh::client::connect(config.clone(), ("127.0.0.1", port), AnyKey).await?;
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
        authority.revoke(creds.build_id(), "benchmark").await?;
        for wait in waits {
            samples.push(wait.await?.as_secs_f64() * 1000.0);
        }
    }
    Ok((samples, rss_per_conn))
}

struct VncFigures {
    direct_mib_s: f64,
    gateway_mib_s: f64,
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

/// The load client: `--load-client ADDR CREDS_FILE PER_CREDENTIAL`. Opens that many
/// authenticated connections per credential (file: `username\tprivate-key-path` lines), prints
/// `ready N`, and holds them until its stdin closes.
async fn load_client(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [addr, creds, per] = args else {
        return Err("usage: --load-client ADDR CREDS_FILE PER_CREDENTIAL".into());
    };
    let per: usize = per.parse()?;
    let config =
        Arc::new(russh::client::Config { inactivity_timeout: None, ..russh::client::Config::default() });
    let mut handles = Vec::new();
    for line in std::fs::read_to_string(creds)?.lines() {
        let Some((user, key_path)) = line.split_once('\t') else { continue };
        let key = Arc::new(russh::keys::decode_secret_key(&std::fs::read_to_string(key_path)?, None)?);
        for _ in 0..per {
            let mut handle = russh::client::connect(config.clone(), addr.as_str(), AnyKey).await?;
            let auth = handle
                .authenticate_publickey(user, russh::keys::PrivateKeyWithHashAlg::new(key.clone(), None))
                .await?;
            if !auth.success() {
                return Err("load client refused".into());
            }
            handles.push(handle);
        }
    }
    println!("ready {}", handles.len());
    let mut sink = Vec::new();
    use tokio::io::AsyncReadExt;
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

/// RSS growth of this process (the gateway) per connection while `n` connections from a
/// separate load-client process are live.
async fn gateway_memory(
    authority: &Authority,
    port: u16,
    builder: &Sshd,
    dir: &Path,
    n: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let builds = 100;
    let mut lines = String::new();
    for b in 0..builds {
        let mut request = BuildRequest::new(BuildId::new(format!("mem-{n}-{b}"))?, Trigger::Manual, true);
        request.builder = Some(builder.builder());
        let creds = authority.issue(request).await?;
        let key = write_script(dir, &format!("mem-{n}-{b}.key"), creds.private_key_openssh()?.expose());
        lines.push_str(&format!("{}\t{}\n", creds.username(), key.display()));
    }
    let file = write_script(dir, &format!("mem-{n}.creds"), &lines);
    let rss_before = rss_kib("self");
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--load-client")
        .arg(format!("127.0.0.1:{port}"))
        .arg(&file)
        .arg((n / builds).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let ready = tokio::io::BufReader::new(stdout).lines().next_line().await?;
    if !ready.as_deref().is_some_and(|l| l.starts_with("ready")) {
        return Err(format!("load client did not come up: {ready:?}").into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = rss_kib("self").saturating_sub(rss_before) as f64 / n as f64;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.shutdown().await;
    }
    let _ = child.wait().await;
    Ok(per)
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
