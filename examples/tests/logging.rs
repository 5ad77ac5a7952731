//! The programs' logs: the library installs no `tracing` subscriber, so the `gateway` program
//! installs one; with `RUST_LOG` its lines reach stderr, and a `RUST_LOG` it cannot read is
//! reported, not fatal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::process::Stdio;
use std::time::Duration;

use remote_access_test_peers::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_logs_to_stderr_at_the_level_rust_log_asks_for() {
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--redis", &redis.url(), "--generate-host-key"])
        .arg("--host-key-file")
        .arg(scratch.path().join("host_key"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await;
    let Ok(Ok(Some(line))) = first else { panic!("the gateway did not start: {first:?}") };
    let address = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("{line}")).to_owned();
    // Keep reading its events so that its stdout never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

    // A client that speaks no SSH version the gateway knows: dropped, with a debug line that
    // names the client's address.
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    let wanted = format!("peer={}", client.local_addr().unwrap());
    client.write_all(b"SSH-1.0-nobody-speaks-this\r\n").await.unwrap();
    let mut stderr = BufReader::new(gateway.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains(&wanted) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    let Ok(Some(line)) = found else { panic!("no log line with {wanted} on stderr; it had: {seen:#?}") };
    assert!(line.contains(" DEBUG ") && line.contains("remote_access_core::gateway"), "{line}");
    drop(client);
    gateway.start_kill().unwrap();
    gateway.wait().await.unwrap();
}

#[test]
fn a_rust_log_the_program_cannot_read_is_reported_and_the_default_used() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("RUST_LOG", "remote_access_core=loud")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // No arguments: the usage (exit 2), after the warning; no panic.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("remote-access gateway: ignoring RUST_LOG=\"remote_access_core=loud\" ("),
        "{stderr}"
    );
    assert!(
        stderr.contains("logging at info and above instead")
            && stderr.contains("usage: remote-access gateway"),
        "{stderr}"
    );
}
