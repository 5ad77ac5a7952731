//! The `gateway` program's VNC certificate flags: the certificate it serves is the one given,
//! and a key that does not fit it stops the program with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::process::Stdio;
use std::time::Duration;

use remote_access_core::TlsIdentity;
use remote_access_test_peers::{RedisServer, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// A TLS handshake with `port` as `gw.example.com`, trusting only `trusted`: succeeds only if
/// the port presents that certificate.
async fn handshake(port: u16, trusted: &TlsIdentity) -> Result<(), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = trusted.certificate_pem();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("gw.example.com").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.map(drop)
}

fn gateway(redis: &RedisServer, dir: &std::path::Path, vnc_port: u16, cert: &str, key: &str) -> Command {
    std::fs::write(dir.join("vnc.pem"), cert).unwrap();
    std::fs::write(dir.join("vnc.key"), key).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(["--listen", "127.0.0.1:0", "--redis", &redis.url(), "--generate-host-key"])
        .arg("--host-key-file")
        .arg(dir.join("host_key"))
        .args(["--vnc-port", &vnc_port.to_string(), "--vnc-require-encryption"])
        .arg("--vnc-tls-cert")
        .arg(dir.join("vnc.pem"))
        .arg("--vnc-tls-key")
        .arg(dir.join("vnc.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_vnc_certificate_it_is_given_and_refuses_a_mismatched_key() {
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().unwrap();
    let identity = TlsIdentity::generate(&["gw.example.com"]).unwrap();
    let other = TlsIdentity::generate(&["gw.example.com"]).unwrap();

    let vnc_port = free_port();
    let mut running = gateway(
        &redis,
        scratch.path(),
        vnc_port,
        &identity.certificate_pem(),
        identity.private_key_pem().expose(),
    )
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(running.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await;
        let Ok(Ok(Some(line))) = line else { panic!("the gateway did not start: {line:?} after {lines:?}") };
        lines.push(line);
    }
    assert!(lines[0].starts_with("listening on "), "{lines:?}");
    assert_eq!(lines[1], format!("vnc tls certificate sha256 {}", identity.fingerprint()));
    // The VNC port (wss://: a client that speaks TLS first) presents that certificate.
    handshake(vnc_port, &identity).await.unwrap();
    assert!(handshake(vnc_port, &other).await.is_err(), "a client trusting another certificate refuses it");
    running.start_kill().unwrap();
    running.wait().await.unwrap();

    let refused = gateway(
        &redis,
        scratch.path(),
        free_port(),
        &identity.certificate_pem(),
        other.private_key_pem().expose(),
    )
    .output()
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(2), "refused input");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("does not fit the certificate"), "{stderr}");
}
