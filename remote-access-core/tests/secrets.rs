//! Secrets never appear in `Debug`, `Display`, errors, events or logs.
//!
//! Every type that holds a secret is formatted every way it can be, and everything the library
//! logs at every level during a whole lifecycle is captured, then searched for the VNC password
//! and for every line of the private key's text.

use std::io::Write;
use std::sync::{Arc, Mutex};

use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Error, ManualClock, MemoryStore, Protocol, Secret,
    Store, Trigger,
};
use time::macros::datetime;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_secret_free(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "{what} leaks a secret: {text}");
    }
}

#[test]
fn no_secret_in_debug_display_errors_events_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut texts: Vec<(String, String)> = Vec::new();
    let secrets = runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(datetime!(2026-02-02 2:00 UTC));
        let authority =
            Authority::with_parts(AuthorityOptions::default(), store.clone(), Arc::new(clock)).unwrap();
        let mut events = authority.subscribe();
        let build = BuildId::new("secret-test").unwrap();
        let creds = authority.issue(BuildRequest::new(build.clone(), Trigger::Manual, true)).await.unwrap();

        let pem = creds.private_key_openssh().unwrap();
        let mut secrets: Vec<String> = pem
            .expose()
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .map(str::to_owned)
            .collect();
        assert!(secrets.len() >= 3, "the key text has a body");
        secrets.push(creds.vnc_password().expose().clone());

        texts.push(("Credentials Debug".into(), format!("{creds:?} {creds:#?}")));
        texts.push(("Secret<String>".into(), format!("{pem:?} {pem} {:?}", creds.vnc_password())));
        let record = store.credential_for_build(&build).await.unwrap().unwrap();
        texts.push(("CredentialRecord".into(), format!("{record:?}")));
        texts.push(("MemoryStore".into(), format!("{store:?}")));
        texts.push(("Authority".into(), format!("{authority:?}")));

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
        authority.disconnected(live).await.unwrap();
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

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("remote access event"), "the capture saw the library's logs");
    texts.push(("logs".into(), logs));
    for (what, text) in &texts {
        assert_secret_free(what, text, &secrets);
    }
}

#[test]
fn secret_wrapper_redacts_every_format() {
    let s = Secret::new(String::from("p4ssw0rd"));
    for text in [format!("{s}"), format!("{s:?}"), format!("{s:#?}"), format!("{:>20}", s)] {
        assert!(!text.contains("p4ssw0rd"), "{text}");
    }
}
