//! ssh-audit (an independent auditor of SSH servers, from PyPI) against the gateway: no
//! algorithm it rates `fail` may be offered, and nothing is compressed before authentication.

use remote_access_core::AuthorityOptions;
use remote_access_test_peers::*;
use tokio::process::Command;

use crate::builds::*;

/// The algorithms ssh-audit rates, with its notes, as `kind name: level note` lines.
fn findings(report: &serde_json::Value, level: &str) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ["kex", "key", "enc", "mac"] {
        for algorithm in report[kind].as_array().into_iter().flatten() {
            let notes = algorithm["notes"][level].as_array().into_iter().flatten();
            for note in notes {
                found.push(format!("{kind} {}: {level} {}", algorithm["algorithm"], note));
            }
        }
    }
    found
}

/// ssh-audit's JSON report on a gateway with `options`.
async fn audit(options: remote_access_core::GatewayOptions) -> serde_json::Value {
    let authority = authority(AuthorityOptions::default());
    let gateway = remote_access_core::Gateway::new(authority, options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let port = running.local_addr().port().to_string();
    // The connection-rate test opens connections as fast as it can: the rate limit has its own
    // test (`tests/attacks.rs`), and here it would only slow the audit down.
    let out = Command::new("ssh-audit")
        .args(["--json", "--skip-rate-test", "--timeout", "30", "--port", &port, "127.0.0.1"])
        .finish()
        .await;
    running.stop().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!("ssh-audit printed no JSON ({err}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_audit_finds_nothing_that_fails() {
    let report = audit(gateway_options()).await;
    let fails = findings(&report, "fail");
    assert!(fails.is_empty(), "ssh-audit rates these `fail`:\n{}", fails.join("\n"));
    let compression: Vec<&str> =
        report["compression"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
    assert_eq!(compression, ["none"], "{report:#}");
    let offered = |kind: &str| -> Vec<String> {
        report[kind].as_array().into_iter().flatten().map(|a| a["algorithm"].to_string()).collect()
    };
    assert!(!offered("kex").iter().any(|k| k.contains("diffie-hellman")), "{:?}", offered("kex"));
    // What it warns about, for the record (docs/security.md summarises it).
    eprintln!("ssh-audit warnings:\n{}", findings(&report, "warn").join("\n"));

    // The check bites: an operator who asks for a broken key exchange and cipher gets `fail`s.
    let mut weak = gateway_options();
    weak.kex_algorithms = vec!["diffie-hellman-group1-sha1".into(), "curve25519-sha256".into()];
    weak.ciphers = vec!["aes128-cbc".into(), "aes128-ctr".into()];
    let fails = findings(&audit(weak).await, "fail");
    assert!(fails.iter().any(|f| f.contains("diffie-hellman-group1-sha1")), "{fails:?}");
}
