//! Builder secrets are per build: a build's user, who controls the builder, can capture what the
//! gateway logs in to it with, and must learn nothing that opens another builder.
//!
//! The attack: the user stops the builder's VNC server and listens on its port with a fake RFB
//! server that picks the challenge and records the gateway's answer. The answer recovers (by a
//! dictionary search, offline) that build's builder password only; another build's VNC server
//! refuses it. Plus: the generated password stays out of `Debug`, events and logs; a macOS
//! account password is generated when asked for; a platform-supplied password used for several
//! builds is warned about once.

use std::time::Duration;

use crate::builds::*;
use crate::vnc_viewer::VncViewer;
use remote_access_core::{
    AuthorityOptions, BuildId, BuildRequest, Builder, Credentials, Error, Secret, Trigger, vnc_auth_response,
};
use remote_access_test_peers::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The challenge the fake server chooses: fixed, as an attacker with a precomputed table would.
const CHOSEN_CHALLENGE: [u8; 16] = *b"attacker-chosen!";

/// A fake builder VNC server (RFB 3.8, VNC Authentication with `CHOSEN_CHALLENGE`) for one
/// connection: returns the 16-byte answer the gateway sent, then refuses the login.
async fn fake_vnc_server(listener: TcpListener) -> [u8; 16] {
    let (mut tcp, _) = listener.accept().await.unwrap();
    tcp.write_all(b"RFB 003.008\n").await.unwrap();
    let mut version = [0u8; 12];
    tcp.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    tcp.write_all(&[1, 2]).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), 2, "the gateway chose VNC Authentication");
    tcp.write_all(&CHOSEN_CHALLENGE).await.unwrap();
    let mut answer = [0u8; 16];
    tcp.read_exact(&mut answer).await.unwrap();
    let reason = b"Authentication failed";
    tcp.write_all(&1u32.to_be_bytes()).await.unwrap();
    tcp.write_all(&(reason.len() as u32).to_be_bytes()).await.unwrap();
    tcp.write_all(reason).await.unwrap();
    answer
}

/// An RFB 3.8 login with VNC Authentication; returns the SecurityResult (0 is success).
async fn rfb_login(port: u16, password: &str) -> u32 {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut version = [0u8; 12];
    tcp.read_exact(&mut version).await.unwrap();
    tcp.write_all(b"RFB 003.008\n").await.unwrap();
    let count = usize::from(tcp.read_u8().await.unwrap());
    assert!(count > 0, "the server offers security types");
    let mut types = vec![0u8; count];
    tcp.read_exact(&mut types).await.unwrap();
    assert!(types.contains(&2), "VNC Authentication offered: {types:?}");
    tcp.write_all(&[2]).await.unwrap();
    let mut challenge = [0u8; 16];
    tcp.read_exact(&mut challenge).await.unwrap();
    tcp.write_all(&vnc_auth_response(password, &challenge)).await.unwrap();
    tcp.read_u32().await.unwrap()
}

/// Forwards every connection to `listener` to the loopback `port`: B's builder is reached at an
/// address known before its VNC server (which needs B's password) can start.
fn forward(listener: TcpListener, port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

fn route(port: u16) -> Builder {
    let mut builder = Builder::new("127.0.0.1".parse().unwrap());
    builder.vnc_port = Some(port);
    builder
}

fn builder_password(creds: &Credentials) -> String {
    creds.builder_vnc_password().expect("a generated builder VNC password").expose().clone()
}

async fn vnc_port_of(authority: &remote_access_core::Authority, creds: &Credentials) -> u16 {
    authority.session(creds.build_id()).await.unwrap().vnc_port().expect("a VNC port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_builder_vnc_server_captures_only_its_own_builds_password() {
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![free_port(), free_port()];
    let authority = authority(options);
    let running = gateway(&authority).start("127.0.0.1:0").await.unwrap();

    // Build A: its user has stopped the builder's VNC server and listens on its port.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = authority.issue(request("secrets-a", route(fake.local_addr().unwrap().port()))).await.unwrap();
    // Build B: a real x11vnc with B's own generated password, installed as a platform would.
    let b_entry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = authority.issue(request("secrets-b", route(b_entry.local_addr().unwrap().port()))).await.unwrap();
    let (a_builder, b_builder) = (builder_password(&a), builder_password(&b));
    assert_ne!(a_builder, b_builder, "each build gets its own builder password");
    for password in [&a_builder, &b_builder] {
        assert_eq!(password.len(), 8);
        assert!(password.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
    let b_server = x11vnc(&b_builder);
    let _forwarding = forward(b_entry, b_server.port);

    // A's user opens VNC through the gateway with A's own password: the gateway logs in to the
    // fake server, which records the answer to the challenge it chose.
    let captured = tokio::spawn(fake_vnc_server(fake));
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        rfb_login(vnc_port_of(&authority, &a).await, a.vnc_password().expose()),
    )
    .await
    .expect("the gateway answers the user");
    assert_ne!(result, 0, "the fake server refused, so the user is refused too");
    let answer = tokio::time::timeout(Duration::from_secs(30), captured).await.unwrap().unwrap();

    // The offline search: every candidate whose DES answer matches. Here the dictionary holds
    // the passwords an attacker would hope for; only A's builder password matches.
    let dictionary = [
        "password",
        "secret",
        "vncpass",
        "builder",
        a.vnc_password().expose().as_str(),
        b.vnc_password().expose().as_str(),
        b_builder.as_str(),
        a_builder.as_str(),
    ];
    let recovered: Vec<&str> = dictionary
        .into_iter()
        .filter(|candidate| vnc_auth_response(candidate, &CHOSEN_CHALLENGE) == answer)
        .collect();
    assert_eq!(
        recovered,
        [a_builder.as_str()],
        "the answer gives away A's builder password and nothing else"
    );

    // What A's user recovered is worth nothing on B's builder: its VNC server refuses it and
    // accepts only B's own password, which the gateway uses for B's user.
    assert_ne!(rfb_login(b_server.port, &a_builder).await, 0, "B's VNC server refuses A's builder password");
    assert_eq!(rfb_login(b_server.port, &b_builder).await, 0, "B's VNC server accepts B's builder password");
    let mut viewer = VncViewer::connect(vnc_port_of(&authority, &b).await, b.vnc_password().expose()).await;
    viewer.refresh().await;
    drop(viewer);

    running.stop().await.unwrap();
}

/// Runs `body` on a one-thread runtime with every log line at TRACE written to the result.
fn with_logs<T>(body: impl std::future::Future<Output = T>) -> (T, String) {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(capture(&logs));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = runtime.block_on(body);
    (out, logs.text())
}

fn vnc_authority() -> remote_access_core::Authority {
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![free_port(), free_port(), free_port(), free_port()];
    authority(options)
}

#[test]
fn the_generated_builder_password_stays_out_of_debug_events_and_logs() {
    let ((password, texts), logs) = with_logs(async {
        let authority = vnc_authority();
        let mut events = authority.subscribe();
        let creds = authority.issue(request("secrets-debug", route(5900))).await.unwrap();
        let password = builder_password(&creds);
        let file = creds.builder_vnc_password_file().expect("a password file for a VNC server");
        assert_eq!(*file.expose(), remote_access_core::vnc_password_file(&password));
        let mut texts = vec![
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{:?} {}", creds.builder_vnc_password(), creds.builder_vnc_password().unwrap()),
            format!("{file:?} {file}"),
        ];
        let mut issued = 0;
        while let Some(event) = events.try_next() {
            issued += usize::from(event.kind.as_str() == "issued");
            texts.push(format!("{event} {event:?}"));
        }
        assert_eq!(issued, 1, "the issued event was seen");
        (password, texts)
    });
    assert!(texts[0].contains("builder_vnc_password"), "Debug names the field: {}", texts[0]);
    for text in texts.iter().chain([&logs]) {
        assert!(!text.contains(&password), "the builder password leaks: {text}");
    }
}

#[test]
fn a_macos_account_password_is_generated_when_only_the_username_is_given() {
    let ((), logs) = with_logs(async {
        let authority = vnc_authority();
        let mut request = request("secrets-mac", route(5900));
        request.builder_vnc_username = Some("ci".into());
        let creds = authority.issue(request).await.unwrap();
        let password = builder_password(&creds);
        assert_eq!(password.len(), 20, "an account password is not held to VNC's 8 characters");
        assert!(password.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(creds.builder_vnc_password_file().is_none(), "an account password is no VNC password file");

        // A username with no VNC port and no password has nothing to generate for.
        let mut request = BuildRequest::new(BuildId::new("secrets-mac-2").unwrap(), Trigger::Manual, true);
        request.builder_vnc_username = Some("ci".into());
        let err = authority.issue(request).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");

        // No VNC port, nothing supplied: no builder password at all.
        let creds = authority.issue(request_without_vnc("secrets-novnc")).await.unwrap();
        assert!(creds.builder_vnc_password().is_none() && creds.builder_vnc_password_file().is_none());
    });
    assert!(!logs.contains("already used"), "generated passwords are never warned about");
}

fn request_without_vnc(id: &str) -> BuildRequest {
    request(id, Builder::new("127.0.0.1".parse().unwrap()))
}

/// A supplied password unique to this test run (the warning's memory is process-wide).
fn unique_password() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:016x}", RandomState::new().hash_one(std::time::SystemTime::now()))
}

#[test]
fn a_supplied_builder_password_used_for_several_builds_is_warned_about_once() {
    let shared = unique_password();
    let other = unique_password();
    let (supplied_back, logs) = with_logs(async {
        let authority = vnc_authority();
        let mut supplied_back = Vec::new();
        for (id, password) in
            [("shared-1", &shared), ("shared-2", &shared), ("shared-3", &shared), ("own", &other)]
        {
            let mut request = request(id, route(5900));
            request.builder_vnc_password = Some(Secret::new(password.clone()));
            let creds = authority.issue(request).await.unwrap();
            supplied_back.push(builder_password(&creds));
            authority.revoke(creds.build_id(), "next").await.unwrap(); // frees the VNC port
        }
        supplied_back
    });
    let expected = [&shared, &shared, &shared, &other].map(String::clone);
    assert_eq!(supplied_back, expected, "a supplied password is used as given");
    let warnings: Vec<&str> =
        logs.lines().filter(|line| line.contains("already used for another build")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the shared password, none for the other: {logs}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("shared-2"), "{}", warnings[0]);
    assert!(!logs.contains(&shared) && !logs.contains(&other), "no password in the logs: {logs}");
}
