//! Secrets never appear in `Debug`, `Display`, errors, events or logs.
//!
//! Every type that holds a secret is formatted every way it can be, and everything the library
//! logs at every level during a whole lifecycle is captured, then searched for the VNC password
//! and for every line of the private key's text. The same for a full session through a running
//! gateway, with russh's own logs: the real `ssh`, a VNC login, refusals, revocation.
//!
//! A test binary of its own, not a module of `tests/it`: the capture is a `tracing` subscriber
//! for this thread (`set_default`), and with the `it` binary's many gateways logging on other
//! threads at the same time, tracing's process-wide callsite cache dropped some of this
//! thread's lines (seen as a missing "VNC connection admitted"). Here the two tests take
//! turns, and nothing else runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

#[allow(dead_code)] // each binary uses a part
#[path = "it/builds.rs"]
mod builds;
#[path = "it/vnc_viewer.rs"]
mod vnc_viewer;

/// One test at a time: they share the process's `log` logger and tracing's callsite cache.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::io::Write;
use std::sync::Arc;

use remote_access_test_peers::{Captured, capture};

use remote_access_core::unstable::{MemoryStore, Store};
use remote_access_core::{
    AuthorityOptions, BuildId, BuildRequest, Error, ManualClock, Protocol, Secret, Trigger,
};
use time::macros::datetime;

/// russh logs through the `log` crate: everything it logs on this thread, at every level, goes
/// to `logs` too, until the returned guard drops. The `log` logger is process-wide and every
/// test of this binary shares the process, so only this thread's lines are kept (the test runs
/// the gateway on a current-thread runtime: all its tasks, russh's included, log here), and only
/// one test may call this.
fn capture_log_crate(logs: &Captured) -> impl Drop {
    struct Logger(Captured, std::thread::ThreadId);
    impl log::Log for Logger {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            std::thread::current().id() == self.1
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let _ = writeln!(self.0.clone(), "{} {}: {}", record.level(), record.target(), record.args());
            }
        }
        fn flush(&self) {}
    }
    struct Quiet;
    impl Drop for Quiet {
        fn drop(&mut self) {
            log::set_max_level(log::LevelFilter::Off);
        }
    }
    let logger: &'static Logger = Box::leak(Box::new(Logger(logs.clone(), std::thread::current().id())));
    log::set_logger(logger).expect("the only `log` logger of the `it` test binary");
    log::set_max_level(log::LevelFilter::Trace);
    Quiet
}

/// The lines of an OpenSSH private key's body (each long enough to be telling).
fn key_lines(pem: &Secret<String>) -> Vec<String> {
    let lines: Vec<String> = pem
        .expose()
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 3, "the key text has a body");
    lines
}

fn assert_secret_free(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "{what} leaks a secret: {text}");
    }
}

#[test]
fn no_secret_in_debug_display_errors_events_or_logs() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(capture(&logs));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut texts: Vec<(String, String)> = Vec::new();
    let secrets = runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(datetime!(2026-02-02 2:00 UTC));
        let authority = remote_access_core::unstable::authority(
            AuthorityOptions::default(),
            store.clone(),
            Arc::new(clock),
        )
        .unwrap();
        let mut events = authority.subscribe();
        let build = BuildId::new("secret-test").unwrap();
        let creds = authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();

        let pem = creds.private_key_openssh().unwrap();
        let mut secrets = key_lines(&pem);
        secrets.push(creds.vnc_password().expose().clone());

        texts.push(("Credentials Debug".into(), format!("{creds:?} {creds:#?}")));
        texts.push(("Secret<String>".into(), format!("{pem:?} {pem} {:?}", creds.vnc_password())));
        let record = store.credential_for_build(&build).await.unwrap().unwrap();
        texts.push(("CredentialRecord".into(), format!("{record:?}")));
        texts.push(("MemoryStore".into(), format!("{store:?}")));
        texts.push(("Authority".into(), format!("{authority:?}")));

        // The VNC TLS key: its identity and the gateway options holding it print no key, nor
        // does a bundle's Secret; the bundle's text holds the private key (it is the secret).
        let identity = remote_access_core::TlsIdentity::generate(&["gw.example.com"]).unwrap();
        let tls_key = identity.private_key_pem();
        secrets.extend(key_lines(&tls_key));
        let mut gateway_options = remote_access_core::GatewayOptions::default();
        gateway_options.vnc_tls = Some(identity.clone());
        texts.push(("TlsIdentity".into(), format!("{identity:?} {identity:#?} {tls_key:?}")));
        texts.push(("GatewayOptions with vnc_tls".into(), format!("{gateway_options:?}")));
        let bundle = creds.to_bundle().unwrap();
        texts.push(("credentials bundle Secret".into(), format!("{bundle:?} {bundle}")));
        assert!(bundle.expose().contains(&key_lines(&pem)[1]), "the bundle holds the key");

        // Every refusal a user can provoke, as Display and Debug.
        let errors: Vec<Error> = vec![
            authority.verify_vnc(&build, "wrongpw1").await.unwrap_err(),
            authority.verify_ssh("ra-nobody", creds.public_key()).await.unwrap_err(),
            authority.verify_ssh(creds.username(), "garbage").await.unwrap_err(),
            authority.verify_ssh(creds.username(), creds.vnc_password().expose()).await.unwrap_err(),
            authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap_err(),
        ];
        authority.verify_ssh(creds.username(), creds.public_key()).await.unwrap();
        authority.verify_vnc(&build, creds.vnc_password().expose()).await.unwrap();
        let live = authority.connected(&build, Protocol::Vnc).await.unwrap();
        texts.push(("LiveConnection".into(), format!("{live:?}")));
        authority.steps_completed(&build).await.unwrap();
        live.disconnect().await.unwrap();
        let after: Vec<Error> = vec![
            authority.verify_vnc(&build, creds.vnc_password().expose()).await.unwrap_err(),
            authority.verify_ssh(creds.username(), creds.public_key()).await.unwrap_err(),
            authority.connected(&build, Protocol::Ssh).await.unwrap_err(),
        ];
        for err in errors.iter().chain(&after) {
            texts.push(("Error".into(), format!("{err} {err:?}")));
        }
        let session = authority.session(&build).await.unwrap();
        texts.push(("Session".into(), format!("{session:?}")));
        let record = store.credential_for_build(&build).await.unwrap().unwrap();
        texts.push(("tombstone".into(), format!("{record:?}")));

        let mut n = 0;
        while let Some(event) = events.try_next() {
            texts.push(("Event".into(), format!("{event} {event:?}")));
            n += 1;
        }
        assert!(n >= 6, "the lifecycle produced events");
        secrets
    });

    let logs = logs.text();
    assert!(logs.contains("remote access event"), "the capture saw the library's logs");
    texts.push(("logs".into(), logs));
    for (what, text) in &texts {
        assert_secret_free(what, text, &secrets);
    }
}

#[test]
fn no_secret_in_the_logs_and_events_of_a_full_session_through_the_gateway() {
    use crate::builds::*;
    use crate::vnc_viewer::VncViewer;
    use remote_access_test_peers::*;
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(capture(&logs));
    let _log_crate = capture_log_crate(&logs);
    // One thread, so that every task of the gateway logs through this thread's subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (secrets, events) = runtime.block_on(async {
        let builder = Sshd::start();
        let screen = x11vnc("builder1");
        let vnc_port = free_port();
        let mut options = AuthorityOptions::default();
        options.vnc_ports = vec![vnc_port];
        let authority = authority(options);
        let mut events = authority.subscribe();
        let host_key = remote_access_core::HostKey::generate().unwrap();
        let mut gateway_options = gateway_options();
        gateway_options.host_key = Some(host_key.clone());
        let gateway = remote_access_core::Gateway::new(authority.clone(), gateway_options).unwrap();
        let running = gateway.start("127.0.0.1:0").await.unwrap();

        let mut route = builder.builder();
        route.vnc_port = Some(screen.port);
        let mut request = request("full-session", route);
        request.builder_vnc_password = Some(Secret::new(screen.password.clone()));
        let creds = authority.issue(request).await.unwrap();
        builder.authorize(&creds.authorized_keys_line());
        let scratch = tempfile::tempdir().unwrap();
        let port = running.local_addr().port();
        let script = posix_script(&authority, &gateway, port, &creds, scratch.path(), "s.sh").await;

        // A command through the real ssh; a VNC login; a wrong VNC password; revocation.
        let out = script_command(&script).arg("echo through").finish().await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "through",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut viewer = VncViewer::connect(vnc_port, creds.vnc_password().expose()).await;
        viewer.refresh().await;
        drop(viewer);
        let mut wrong = tokio::net::TcpStream::connect(("127.0.0.1", vnc_port)).await.unwrap();
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 12];
            wrong.read_exact(&mut buf).await.unwrap();
            wrong.write_all(b"RFB 003.008\n").await.unwrap();
            let mut types = [0u8; 2];
            wrong.read_exact(&mut types).await.unwrap();
            wrong.write_all(&[2]).await.unwrap();
            let mut challenge = [0u8; 16];
            wrong.read_exact(&mut challenge).await.unwrap();
            wrong.write_all(&remote_access_core::vnc_auth_response("wrongpw1", &challenge)).await.unwrap();
            assert_eq!(wrong.read_u32().await.unwrap(), 1, "the wrong password is refused");
        }
        authority.revoke(creds.build_id(), "end of test").await.unwrap();
        let refused = script_command(&script).arg("true").finish().await;
        assert_eq!(refused.status.code(), Some(255));
        running.stop().await.unwrap();

        let mut secrets = key_lines(&creds.private_key_openssh().unwrap());
        secrets.extend(key_lines(&host_key.to_openssh().unwrap()));
        secrets.push(creds.vnc_password().expose().clone());
        secrets.push(screen.password.clone());
        let mut seen = Vec::new();
        while let Some(event) = events.try_next() {
            seen.push(format!("{event} {event:?}"));
        }
        (secrets, seen)
    });
    let logs = logs.text();
    // The capture saw the gateway, the VNC proxy and russh itself, and each refusal with its
    // reason (the wrong VNC password; the script's key after the revocation, refused when it
    // was only offered).
    for expected in [
        "authenticated",
        "VNC connection admitted",
        "russh",
        "VNC connection refused",
        "authentication refused",
        "credential revoked",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in the logs:\n{logs}");
    }
    assert!(events.len() >= 5, "{events:?}");
    assert_secret_free("logs", &logs, &secrets);
    for event in &events {
        assert_secret_free("event", event, &secrets);
    }
}

#[test]
fn secret_wrapper_redacts_every_format() {
    let s = Secret::new(String::from("p4ssw0rd"));
    for text in [format!("{s}"), format!("{s:?}"), format!("{s:#?}"), format!("{:>20}", s)] {
        assert!(!text.contains("p4ssw0rd"), "{text}");
    }
}
