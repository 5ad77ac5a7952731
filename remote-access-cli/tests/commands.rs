//! The `remote-access` command line as an operator and a CI script use it, against a real
//! `redis-server`, a real `sshd` playing the builder and the real `ssh` client: `gateway` in a
//! process of its own, `issue`, `script`, `status` and `revoke` each run as the binary, with
//! their exit codes and `--json` output checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use remote_access_core::HostKey;
use remote_access_test_peers::*;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

/// `remote-access ARGS` against `redis`: (exit code, stdout, stderr).
async fn cli(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_remote-access"))
        .args(args)
        .env("REMOTE_ACCESS_REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `remote-access gateway` on a free port; killed on drop.
async fn gateway(redis: &RedisServer, key_file: &Path) -> (tokio::process::Child, u16) {
    let port = free_port();
    let (child, mut lines) = gateway_on(redis, key_file, port, &[]).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// `remote-access gateway` on `port` with `extra` options, killed on drop: the process and what
/// it prints after `listening on`.
async fn gateway_on(
    redis: &RedisServer,
    key_file: &Path,
    port: u16,
    extra: &[&str],
) -> (tokio::process::Child, Lines) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remote-access"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--host-key-file"])
        .arg(key_file)
        .args(extra)
        .env("REMOTE_ACCESS_REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let Ok(Ok(Some(line))) = first else { panic!("the gateway did not start: {first:?}") };
    assert_eq!(line, format!("listening on 127.0.0.1:{port}"));
    (child, lines)
}

/// `remote-access issue ID` for `builder` (secrets under `dir/ID`), the key authorized on the
/// builder, and the POSIX script for the gateway on `port` with the host key in `key_file`,
/// written to `dir`.
async fn issued_script(
    redis: &RedisServer,
    builder: &Sshd,
    dir: &Path,
    id: &str,
    (port, key_file): (u16, &Path),
) -> std::path::PathBuf {
    let out = dir.join(id);
    let (code, stdout, stderr) = cli(
        redis,
        &[
            "issue",
            id,
            "--builder",
            &builder.address.to_string(),
            "--builder-ssh-port",
            &builder.port.to_string(),
            "--builder-host-key",
            &builder.host_key,
            "--builder-user",
            "root",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let issued: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    builder.authorize(issued["authorized_keys_line"].as_str().unwrap());
    let credentials = out.join("credentials.json");
    let port = port.to_string();
    let (code, script, stderr) = cli(
        redis,
        &[
            "script",
            "--credentials",
            credentials.to_str().unwrap(),
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            &port,
            "--host-key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    write_script(dir, &format!("{id}.sh"), &script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_script_status_and_revoke_drive_a_real_login() {
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let key = HostKey::generate().unwrap();
    let key_file = write_script(scratch.path(), "host_key", key.to_openssh().unwrap().expose());
    let (_gateway, port) = gateway(&redis, &key_file).await;
    let out = scratch.path().join("cli-1");
    let out_str = out.to_str().unwrap();

    // issue: secrets to files of mode 600, the rest to stdout as JSON.
    let builder_key = builder.host_key.clone();
    let (code, stdout, stderr) = cli(
        &redis,
        &[
            "issue",
            "cli-1",
            "--builder",
            &builder.address.to_string(),
            "--builder-ssh-port",
            &builder.port.to_string(),
            "--builder-host-key",
            &builder_key,
            "--builder-user",
            "root",
            "--out",
            out_str,
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let issued: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(issued["build_id"], "cli-1");
    let bundle = std::fs::read_to_string(out.join("credentials.json")).unwrap();
    assert!(!stdout.contains("PRIVATE KEY") && bundle.contains("PRIVATE KEY"), "the key only in the file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out.join("credentials.json")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o700);
    builder.authorize(issued["authorized_keys_line"].as_str().unwrap());

    // script: the POSIX script, run as the user would, logs in through the gateway.
    let script_args = |format: &'static str| {
        vec![
            "script".to_owned(),
            "--credentials".into(),
            out.join("credentials.json").to_str().unwrap().to_owned(),
            "--gateway-host".into(),
            "127.0.0.1".into(),
            "--gateway-port".into(),
            port.to_string(),
            "--host-key-file".into(),
            key_file.to_str().unwrap().to_owned(),
            "--format".into(),
            format.into(),
        ]
    };
    let words = script_args("posix");
    let (code, script, stderr) = cli(&redis, &words.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 0, "{stderr}");
    let script = write_script(scratch.path(), "connect.sh", &script);
    let (code, stdout, stderr) = run_script(&script, &["echo logged in as $(id -un)"]).await;
    assert_eq!((code, stdout.trim()), (0, "logged in as root"), "{stderr}");
    let words = script_args("json");
    let (code, json, _) = cli(&redis, &words.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(info["gateway_port"], port);
    assert_eq!(info["gateway_host_key_fingerprint"], key.fingerprint());

    // status: live, then revoke ends it everywhere, and status says so with exit 3.
    let (code, stdout, _) = cli(&redis, &["status", "cli-1"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("phase:") && stdout.contains("deadline:"), "{stdout}");
    let (code, stdout, stderr) =
        cli(&redis, &["revoke", "cli-1", "--reason", "done debugging", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["revoked"], true);
    let (code, stdout, stderr) = cli(&redis, &["status", "cli-1", "--json"]).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("the build's access has ended"), "{stderr}");
    let (code, _, stderr) = run_script(&script, &["true"]).await;
    assert_eq!(code, 255, "the revoked key is refused: {stderr}");
    let words = script_args("posix");
    let (code, _, stderr) = cli(&redis, &words.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 3, "no script for an ended build: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_an_exit_code_and_a_reason() {
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().unwrap();
    // No such build: 4.
    let (code, _, stderr) = cli(&redis, &["status", "nobody-1"]).await;
    assert_eq!(code, 4, "{stderr}");
    let (code, _, _) = cli(&redis, &["revoke", "nobody-1"]).await;
    assert_eq!(code, 4);
    // Usage errors and refused input: 2, with what was wrong and the usage.
    for (args, said) in [
        (&["status"][..], "BUILD_ID is required"),
        (&["issue", "b-1", "--builder", "not-an-ip", "--out", "x"], "--builder takes an IP address"),
        (&["issue", "b\nad", "--builder", "10.0.0.1", "--out", "x"], "build id"),
        (&["status", "b-1", "--redis", "redis://user:pw@127.0.0.1:1/0"], "REMOTE_ACCESS_REDIS_URL"),
        (&["frobnicate"], "unknown command"),
        (&["status", "b-1", "--colour"], "unknown option --colour"),
    ] {
        let (code, _, stderr) = cli(&redis, args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    // A directory others can read is refused before anything is issued.
    let open = scratch.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, stderr) =
        cli(&redis, &["issue", "b-2", "--builder", "10.0.0.1", "--out", open.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("readable by others"), "{stderr}");
    let (code, _, _) = cli(&redis, &["status", "b-2"]).await;
    assert_eq!(code, 4, "nothing was issued");
    // --help for each command: 0, on stdout.
    for command in ["gateway", "issue", "script", "status", "revoke"] {
        let (code, stdout, _) = cli(&redis, &[command, "--help"]).await;
        assert_eq!(code, 0);
        assert!(stdout.starts_with(&format!("usage: remote-access {command}")), "{stdout}");
    }
}

/// The store-backed commands over TLS (`rediss://`): a real `redis-server` serving only TLS and
/// asking for client certificates. With `--redis-ca` and the client certificate the command
/// reaches Redis (an unknown build is exit 4); without the certificate Redis refuses the
/// handshake (exit 1, the store unavailable); half a client certificate is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_reach_a_redis_over_tls_with_the_platforms_ca_and_certificate() {
    use remote_access_core::TlsIdentity;
    let server = TlsIdentity::generate(&["127.0.0.1"]).unwrap();
    let client = TlsIdentity::generate(&["operator.example"]).unwrap();
    let redis = RedisServer::start_tls(
        &server.certificate_pem(),
        server.private_key_pem().expose(),
        &client.certificate_pem(),
    );
    let scratch = tempfile::tempdir().unwrap();
    let ca = write_script(scratch.path(), "redis-ca.pem", &server.certificate_pem());
    let cert = write_script(scratch.path(), "client.pem", &client.certificate_pem());
    let key = write_script(scratch.path(), "client.key", client.private_key_pem().expose());
    let (ca, cert, key) = (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());

    let (code, _, stderr) =
        cli(&redis, &["status", "no-such-build", "--redis-ca", ca, "--redis-cert", cert, "--redis-key", key])
            .await;
    assert_eq!(code, 4, "{stderr}");
    let (code, _, stderr) = cli(&redis, &["status", "no-such-build", "--redis-ca", ca]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("store"), "{stderr}");
    let (code, _, stderr) =
        cli(&redis, &["status", "no-such-build", "--redis-ca", ca, "--redis-cert", cert]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--redis-cert and --redis-key go together"), "{stderr}");
}

/// A restart on one host (`docs/scaling.md`, "Restarting without downtime"): a second
/// `remote-access gateway --reuse-port` on the same port, then SIGTERM to the first, started
/// with `--drain-secs`: the user's live session goes on through the first until the user
/// leaves, every login meanwhile gets in, and both programs exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_one_host_keeps_the_live_session_and_refuses_no_login() {
    requests_migrate();
    let redis = RedisServer::start();
    let builder = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let key = HostKey::generate().unwrap();
    let key_file = write_script(scratch.path(), "host_key", key.to_openssh().unwrap().expose());
    let port = free_port();
    let flags = ["--reuse-port", "--drain-secs", "300"];
    let (mut old, mut old_lines) = gateway_on(&redis, &key_file, port, &flags).await;
    let script = issued_script(&redis, &builder, scratch.path(), "restart-1", (port, &key_file)).await;
    let login = || async {
        let (code, stdout, stderr) = run_script(&script, &["echo in"]).await;
        assert_eq!((code, stdout.trim()), (0, "in"), "{stderr}");
    };
    let mut live = EchoSession::open(&script).await;

    let (mut new, mut new_lines) = gateway_on(&redis, &key_file, port, &flags).await;
    login().await;
    let terminate = |child: &tokio::process::Child| {
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    };
    terminate(&old);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), old_lines.next_line()).await;
        let Ok(Ok(Some(line))) = line else { panic!("the first gateway said nothing of draining: {line:?}") };
        if line.starts_with("draining: the ports are closed") {
            break;
        }
    }
    for _ in 0..5 {
        login().await;
    }
    assert_eq!(live.say("still here").await.as_deref(), Some("got still here"));
    assert!(live.exit().await.success());
    let status = tokio::time::timeout(Duration::from_secs(60), old.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the drained gateway exits 0: {status}");

    login().await;
    terminate(&new);
    let status = tokio::time::timeout(Duration::from_secs(60), new.wait()).await.unwrap().unwrap();
    assert!(status.success(), "with nothing to drain it exits at once, 0: {status}");
    while let Ok(Some(_)) = new_lines.next_line().await {}
}

/// What an operator reads: `--log-format json` (every line on stderr a JSON object) and
/// `--metrics` (`curl` reads `/healthz` and `/metrics`). A login refused to the real `ssh`
/// shows in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_logs_json_lines_and_serves_its_metrics() {
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().unwrap();
    let key = HostKey::generate().unwrap();
    let key_file = write_script(scratch.path(), "host_key", key.to_openssh().unwrap().expose());
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_remote-access"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--host-key-file"])
        .arg(&key_file)
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}"), "--log-format", "json"])
        .env("REMOTE_ACCESS_REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(matches!(first, Ok(Ok(Some(ref line))) if line.starts_with("listening on")), "{first:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (status, body) = http(metrics_port, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // Someone with a key of their own and a made-up user.
    let stranger = scratch.path().join("stranger");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(made.success());
    let out = Command::new("ssh")
        .args(["-i", stranger.to_str().unwrap(), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-p",
            &port.to_string(),
        ])
        .args(["nobody@127.0.0.1", "true"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, text) = http(metrics_port, "GET", "/metrics").await;
    assert_eq!(
        metric(&text, "remote_access_logins_refused_total{protocol=\"ssh\",reason=\"unknown_user\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "remote_access_store_up"), 1.0, "{text}");

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    let refused = logged.iter().find(|line| line["fields"]["message"] == "authentication refused");
    let refused = refused.unwrap_or_else(|| panic!("no refusal logged: {stderr}"));
    assert_eq!(refused["level"], "INFO");
    assert_eq!(refused["fields"]["user"], "nobody");
    assert!(refused["timestamp"].is_string() && refused["target"].is_string(), "{refused}");
}

/// `ssh-keygen` makes the CA keys (the library reads OpenSSH's own) and signs the builder's
/// host key; `issue --user-ca --host-ca` certifies the build, `script --builder-host-ca` trusts
/// the host CA, and after `revoke`, `revoked-keys` writes the KRL the builder's sshd reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_command_line_open_a_builder_that_trusts_the_ca_until_revoked() {
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    for ca in ["user-ca", "host-ca"] {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", ca, "-f"])
            .arg(dir.join(ca))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let krl = dir.join("revoked.krl");
    let (code, _, stderr) = cli(&redis, &["revoked-keys", "--out", krl.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    let host_ca = dir.join("host-ca");
    let certify = move |host_key: &str| {
        let public = host_ca.with_file_name("builder.pub");
        std::fs::write(&public, format!("{host_key}\n")).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(&host_ca)
            .args(["-h", "-I", "builder", "-n", "127.0.0.1", "-V", "-5m:+1h"])
            .arg(&public)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(public.with_file_name("builder-cert.pub")).unwrap().trim().to_owned()
    };
    let extra = format!(
        "TrustedUserCAKeys {}\nRevokedKeys {}\nAuthorizedKeysFile none\n",
        dir.join("user-ca.pub").display(),
        krl.display()
    );
    let builder = Sshd::start_certified("127.0.0.1", &extra, &certify);
    let key = HostKey::generate().unwrap();
    let key_file = write_script(dir, "host_key", key.to_openssh().unwrap().expose());
    let (_gateway, port) = gateway(&redis, &key_file).await;
    let out = dir.join("cert-1");
    let (code, stdout, stderr) = cli(
        &redis,
        &[
            "issue",
            "cert-1",
            "--builder",
            "127.0.0.1",
            "--builder-ssh-port",
            &builder.port.to_string(),
            "--builder-host-key",
            &builder.host_key,
            "--builder-user",
            "root",
            "--user-ca",
            dir.join("user-ca").to_str().unwrap(),
            "--certificate-source",
            "127.0.0.1",
            "--host-ca",
            dir.join("host-ca").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let issued: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(issued["certificate"].as_str().unwrap().starts_with("ssh-ed25519-cert-v01@openssh.com "));
    let host_cert = issued["builder_host_certificate_file"].as_str().unwrap();
    let shown = std::process::Command::new("ssh-keygen").args(["-L", "-f", host_cert]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("host certificate") && shown.contains("127.0.0.1"), "{shown}");
    let credentials = out.join("credentials.json");
    let (code, script, stderr) = cli(
        &redis,
        &[
            "script",
            "--credentials",
            credentials.to_str().unwrap(),
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            &port.to_string(),
            "--host-key-file",
            key_file.to_str().unwrap(),
            "--builder-host-ca",
            dir.join("host-ca.pub").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!script.contains("accept-new"));
    let script = write_script(dir, "cert-1.sh", &script);
    let (code, stdout, stderr) = run_script(&script, &["echo", "certified"]).await;
    assert_eq!(code, 0, "{stderr}\n{}", builder.log());
    assert_eq!(stdout.trim(), "certified");
    // Revoked, and the KRL written: the builder refuses the certificate even to a client that
    // bypasses the gateway.
    let bundle =
        remote_access_core::Credentials::from_bundle(&std::fs::read_to_string(&credentials).unwrap())
            .unwrap();
    let key_path = write_script(dir, "cert-1.key", bundle.private_key_openssh().unwrap().expose());
    let cert_path = write_script(dir, "cert-1.cert", &format!("{}\n", bundle.certificate().unwrap()));
    let direct = || {
        std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-i"])
            .arg(&key_path)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert_path.display()))
            .args(["-p", &builder.port.to_string(), "root@127.0.0.1", "true"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(direct(), Some(0));
    assert_eq!(cli(&redis, &["revoke", "cert-1"]).await.0, 0);
    let (code, _, stderr) = cli(&redis, &["revoked-keys", "--out", krl.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(direct(), Some(255), "a revoked build's certificate got in");
    // A CA file that is not a key is a usage error naming it.
    let (code, _, stderr) = cli(
        &redis,
        &[
            "issue",
            "cert-2",
            "--builder",
            "127.0.0.1",
            "--user-ca",
            key_file.with_file_name("nope").to_str().unwrap(),
            "--out",
            dir.join("cert-2").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--user-ca"), "{stderr}");
}
