//! The deployment files in `deploy/`, checked as far as this machine can (no systemd running,
//! no container runtime): the systemd unit passes `systemd-analyze verify` and scores at most
//! 2.0 on `systemd-analyze security`, and its command line, run as written (with free ports
//! and a test Redis in place of the production ones), starts a gateway that serves its health
//! check and stops cleanly on SIGTERM; the load balancer's configuration passes `haproxy -c`.
//! The compose file and its Dockerfile are not run (`docs/operations.md` says so).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use remote_access_core::HostKey;
use remote_access_test_peers::*;
use tokio::io::AsyncBufReadExt;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn unit() -> String {
    std::fs::read_to_string(deploy("systemd/remote-access-gateway@.service")).unwrap()
}

/// The unit as an instance (`@blue`) whose `ExecStart` runs the binary under test.
fn installed_unit(dir: &Path) -> PathBuf {
    let text = unit().replace("/usr/local/bin/remote-access", env!("CARGO_BIN_EXE_remote-access"));
    let path = dir.join("remote-access-gateway@blue.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_locked_down() {
    require("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = installed_unit(dir.path());
    let verify = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    let overall = report.lines().find(|line| line.contains("Overall exposure level")).unwrap();
    eprintln!("{overall}");
}

/// `ExecStart` of the unit, its continuation lines joined, as words.
fn exec_start() -> Vec<String> {
    let text = unit();
    let start = text.find("ExecStart=").unwrap() + "ExecStart=".len();
    let mut command = String::new();
    for line in text[start..].lines() {
        command.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    command.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_command_line_runs_a_gateway_that_stops_on_sigterm() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = HostKey::generate().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    write_script(&credentials, "host_key", key.to_openssh().unwrap().expose());
    let (port, metrics_port) = (free_port(), free_port());
    let words = exec_start();
    assert_eq!(words[0], "/usr/local/bin/remote-access");
    // As written, but on free ports: what listens where is the operator's to choose.
    let args: Vec<String> = words[1..]
        .iter()
        .map(|word| match word.as_str() {
            "0.0.0.0:22" => format!("127.0.0.1:{port}"),
            "5901" | "5902" | "5903" | "5904" => free_port().to_string(),
            "${CREDENTIALS_DIRECTORY}/host_key" => credentials.join("host_key").to_str().unwrap().to_owned(),
            "127.0.0.1:${METRICS_PORT}" => format!("127.0.0.1:{metrics_port}"),
            other => {
                assert!(!other.contains('$'), "a variable the test does not set: {other}");
                other.to_owned()
            }
        })
        .collect();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_remote-access"))
        .args(&args)
        .env("REMOTE_ACCESS_REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(first, Ok(Ok(Some(ref line))) if line == &format!("listening on 127.0.0.1:{port}")),
        "{first:?}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert_eq!(http(metrics_port, "GET", "/healthz").await, (200, "ready\n".to_owned()));
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_load_balancer_configuration_is_valid() {
    require("haproxy");
    let check = std::process::Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(deploy("compose/haproxy.cfg"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "haproxy -c: {said}{}", String::from_utf8_lossy(&check.stdout));
}
