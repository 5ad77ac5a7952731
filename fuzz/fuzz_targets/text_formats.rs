//! Every text format the API parses from callers, fed arbitrary text: build ids (as text and
//! as JSON), triggers, protocols, the gateway's host key (OpenSSH private key text), public key
//! lines (builder and gateway host keys, SSH logins), the build agent's pinned key and private
//! key, sessions and policies as JSON (what a networked store hands back), gateway hosts and
//! build directories, revoke reasons, VNC passwords, events as the fleet's log holds them (JSON),
//! credentials bundles (with their OpenSSH certificates) and SSH CA keys.
//!
//! Byte 0 picks the format; the rest is the text (bytes that are not UTF-8 are replaced; the
//! agent's two keys are separated by 0xFF). Nothing may panic; what is accepted must be what
//! the rules say, and where a value prints back to text, parsing that text gives it again.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use remote_access_core::{
    AgentOptions, Authority, AuthorityOptions, BuildId, BuildRequest, Builder, ConnectionInfo, Credentials,
    Error, Event, HostKey, ManualClock, Policy, Protocol, ScriptOptions, Secret, Session, SshCa, Trigger,
    run_agent, vnc_auth_response, vnc_password_file,
};
use time::macros::datetime;

/// An issued build to hang connection info on, made once per thread.
struct Fixed {
    authority: Authority,
    creds: Credentials,
    session: Session,
    gateway_key: HostKey,
    info: ConnectionInfo,
}

thread_local! {
    static FIXED: Fixed = fixed();
}

fn fixed() -> Fixed {
    common::block_on(async {
        let clock = ManualClock::new(datetime!(2026-09-09 9:00 UTC));
        let authority =
            Authority::with_clock(AuthorityOptions::default(), Arc::new(clock))
                .expect("authority");
        let mut request = BuildRequest::new(BuildId::new("text-1").expect("id"), Trigger::Manual, true);
        request.builder = Some(Builder::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))));
        let creds = authority.issue(request).await.expect("issued");
        let session = authority.session(creds.build_id()).await.expect("session");
        let gateway_key = HostKey::generate().expect("host key");
        let info =
            ConnectionInfo::new(&creds, &session, &gateway_key, &ScriptOptions::new("gw.example.com", 22))
                .expect("connection info");
        Fixed { authority, creds, session, gateway_key, info }
    })
}

fn invalid_input(err: &Error) -> Option<&'static str> {
    match err {
        Error::InvalidInput { what, .. } => Some(what),
        _ => None,
    }
}

/// The documented build id rule: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `-` or `.`.
fn build_id_rule(id: &str) -> bool {
    (1..=BuildId::MAX_LEN).contains(&id.len())
        && !id.starts_with(['-', '.'])
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A DNS name or an IP address (ScriptOptions::gateway_host).
fn host_rule(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

/// `type base64`, nothing else.
fn is_key_line(line: &str) -> bool {
    let words: Vec<&str> = line.split(' ').collect();
    words.len() == 2
        && words[0].bytes().all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b))
        && !words[1].is_empty()
        && words[1].bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let [format, raw @ ..] = data else { return };
    let text = String::from_utf8_lossy(raw);
    FIXED.with(|fixed| match format % 12 {
        0 => build_id(&text),
        1 => names(&text),
        2 => host_key(&text),
        3 => public_key_line(fixed, &text),
        4 => session_json(&text),
        5 => policy_json(&text),
        6 => agent_keys(raw),
        7 => script_options(fixed, &text),
        8 => revoke_reason(fixed, &text),
        9 => vnc_password(&text),
        10 => event_json(&text),
        _ => bundle(fixed, &text),
    });
});

fn build_id(text: &str) {
    let parsed = BuildId::new(text);
    assert_eq!(parsed.is_ok(), build_id_rule(text), "{text:?}");
    assert_eq!(BuildId::from_str(text).ok(), parsed.as_ref().ok().cloned());
    match parsed {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string().parse::<BuildId>().ok(), Some(id.clone()));
            let json = serde_json::to_string(&id).expect("json");
            assert_eq!(serde_json::from_str::<BuildId>(&json).ok(), Some(id));
        }
        Err(err) => assert_eq!(invalid_input(&err), Some("build id")),
    }
    // As JSON: whatever string the JSON holds goes through the same check.
    if let Ok(id) = serde_json::from_str::<BuildId>(text) {
        assert!(build_id_rule(id.as_str()));
    }
    if let Ok(serde_json::Value::String(s)) = serde_json::from_str::<serde_json::Value>(text) {
        assert_eq!(serde_json::from_str::<BuildId>(text).is_ok(), build_id_rule(&s));
    }
}

fn names(text: &str) {
    let trigger = Trigger::from_str(text);
    assert_eq!(trigger.is_ok(), ["manual", "webhook", "scheduled", "api"].contains(&text), "{text:?}");
    if let Ok(trigger) = trigger {
        assert_eq!(trigger.as_str(), text);
        assert_eq!(Trigger::from_str(trigger.as_str()).ok(), Some(trigger));
    }
    let protocol = Protocol::from_str(text);
    assert_eq!(protocol.is_ok(), text == "ssh" || text == "vnc", "{text:?}");
    if let Ok(protocol) = protocol {
        assert_eq!(protocol.as_str(), text);
        assert_eq!(Protocol::from_str(protocol.as_str()).ok(), Some(protocol));
        let json = serde_json::to_string(&protocol).expect("json");
        assert_eq!(json, format!("\"{text}\""));
    }
    // serde also reads the map form (`{"ssh": null}`) of a unit variant: whatever form was
    // read, it must be one of the two protocols and write back in the plain string form.
    if let Ok(protocol) = serde_json::from_str::<Protocol>(text) {
        let json = serde_json::to_string(&protocol).expect("json");
        assert!(json == "\"ssh\"" || json == "\"vnc\"", "{json}");
        assert_eq!(serde_json::from_str::<Protocol>(&json).ok(), Some(protocol));
    }
}

/// A credentials bundle (what the command line's `issue` writes and `script` reads): refused,
/// or credentials whose certificate (if any) certifies their own key, which write back to a
/// bundle that reads again as the same. As an SSH CA key: refused, or one that persists.
fn bundle(fixed: &Fixed, text: &str) {
    if let Ok(ca) = SshCa::from_openssh(text) {
        let again = SshCa::from_openssh(ca.to_openssh().expect("a loaded CA prints").expose()).expect("loads");
        assert_eq!(again.public_key(), ca.public_key());
        assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug shows no key material");
    }
    let Ok(creds) = Credentials::from_bundle(text) else { return };
    let again = Credentials::from_bundle(creds.to_bundle().expect("prints").expose()).expect("reads again");
    assert_eq!(again.fingerprint(), creds.fingerprint());
    assert_eq!(again.certificate(), creds.certificate());
    assert_eq!(again.builder_host_certificate(), creds.builder_host_certificate());
    if let Some(line) = creds.certificate() {
        assert!(line.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{line:?}");
    }
    // A script made with them embeds the certificate safely or refuses it.
    let _ = fixed.info.posix_script(&creds);
}

fn host_key(text: &str) {
    let Ok(key) = HostKey::from_openssh(text) else { return };
    let public = key.public_key();
    assert!(is_key_line(&public), "public key {public:?}");
    let fingerprint = key.fingerprint();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint:?}");
    // What is persisted loads again as the same key.
    let persisted = key.to_openssh().expect("a loaded key prints");
    let again = HostKey::from_openssh(persisted.expose()).expect("a printed key loads");
    assert_eq!((again.fingerprint(), again.public_key()), (fingerprint, public));
    assert!(!format!("{key:?}").contains("PRIVATE"), "Debug shows no key material");
}

fn public_key_line(fixed: &Fixed, text: &str) {
    // As the builder's host key in connection info: refused, or pinned as `type base64`.
    let mut info = fixed.info.clone();
    info.builder_host_key = Some(text.to_owned());
    if let Ok(known_hosts) = info.known_hosts() {
        assert_eq!(known_hosts.lines().nth(1), Some(format!("remote-access-builder {text}").as_str()));
        assert!(is_key_line(text), "{text:?}");
    }
    // As the gateway's host key.
    let mut info = fixed.info.clone();
    info.gateway_host_key = text.to_owned();
    if info.known_hosts().is_ok() {
        assert!(is_key_line(text), "{text:?}");
    }
    // As a builder's host key at issue time: the comment is dropped, the rest kept.
    let mut builder = Builder::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)));
    builder.host_key = Some(text.to_owned());
    let id = BuildId::new("text-key").expect("id");
    let mut request = BuildRequest::new(id.clone(), Trigger::Manual, true);
    request.builder = Some(builder);
    let issued = common::block_on(async {
        let clock = ManualClock::new(datetime!(2026-09-09 9:00 UTC));
        let authority =
            Authority::with_clock(AuthorityOptions::default(), Arc::new(clock))
                .expect("authority");
        match authority.issue(request).await {
            Ok(_) => Some(authority.session(&id).await.expect("session")),
            Err(err) => {
                assert_eq!(invalid_input(&err), Some("builder.host_key"), "{err}");
                None
            }
        }
    });
    if let Some(session) = issued {
        let pinned = session.builder().and_then(|b| b.host_key.clone()).expect("pinned");
        assert!(is_key_line(&pinned), "{pinned:?}");
        assert!(text.trim().starts_with(&pinned), "{pinned:?} from {text:?}");
    }
    // As a key an SSH user presents: refused (no live session has it) and never a panic.
    let verified = common::block_on(fixed.authority.verify_ssh(fixed.creds.username(), text));
    if verified.is_ok() {
        let base64 = fixed.creds.public_key().split(' ').nth(1).expect("base64");
        assert!(text.contains(base64), "accepted another key: {text:?}");
    }
}

fn session_json(text: &str) {
    let Ok(session) = serde_json::from_str::<Session>(text) else { return };
    let json = serde_json::to_string(&session).expect("a session serializes");
    assert_eq!(serde_json::from_str::<Session>(&json).ok().as_ref(), Some(&session), "round trip");
    // A stored session may hold anything: the time rules must not panic on it.
    let deadline = session.deadline();
    let _ = session.next_deadline();
    for now in [session.started_at(), deadline, datetime!(2026-09-09 9:00 UTC)] {
        let mut copy = session.clone();
        let t = copy.handle(remote_access_core::Input::Tick, now);
        assert!(t.actions.len() <= 3);
        assert!(copy.is_ended() || now < copy.deadline());
    }
}

fn policy_json(text: &str) {
    let Ok(policy) = serde_json::from_str::<Policy>(text) else { return };
    let json = serde_json::to_string(&policy).expect("a policy serializes");
    assert_eq!(serde_json::from_str::<Policy>(&json).ok(), Some(policy));
    let valid = policy.validate().is_ok();
    let in_range = |d: Duration| d <= Policy::MAX_DURATION;
    let rule = in_range(policy.grace)
        && in_range(policy.max_build_duration)
        && !policy.max_build_duration.is_zero()
        && policy.finish_if_unused_after.is_none_or(in_range);
    assert_eq!(valid, rule, "{policy:?}");
    if valid {
        let start = datetime!(2026-09-09 9:00 UTC);
        let session =
            Session::new(BuildId::new("p").expect("id"), policy, start, start).expect("a valid policy");
        assert!(session.deadline() <= start + policy.max_build_duration);
    }
}

fn agent_keys(raw: &[u8]) {
    let mut parts = raw.splitn(2, |&b| b == 0xff);
    let pinned = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let private = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let mut options = AgentOptions::new("127.0.0.1:9", pinned, "agent", Secret::new(private));
    // No ports: run_agent returns after checking the keys, before any connection.
    options.ports = Vec::new();
    let result = common::block_on(run_agent(options, std::future::pending::<()>()));
    let err = result.expect_err("an agent without ports never runs");
    assert!(matches!(invalid_input(&err), Some("gateway_host_key" | "private_key" | "ports")), "{err}");
}

fn script_options(fixed: &Fixed, text: &str) {
    let options = ScriptOptions::new(text, 22);
    let made = ConnectionInfo::new(&fixed.creds, &fixed.session, &fixed.gateway_key, &options);
    assert_eq!(made.is_ok(), host_rule(text), "{text:?}");
    let mut options = ScriptOptions::new("gw.example.com", 22);
    options.build_dir = text.to_owned();
    let made = ConnectionInfo::new(&fixed.creds, &fixed.session, &fixed.gateway_key, &options);
    if made.is_ok() {
        assert!(!text.is_empty() && text.len() <= 1024 && !text.chars().any(char::is_control), "{text:?}");
    }
}

fn revoke_reason(fixed: &Fixed, text: &str) {
    let unknown = BuildId::new("no-such-build").expect("id");
    let result = common::block_on(fixed.authority.revoke(&unknown, text));
    let err = result.expect_err("no such build");
    let bad = text.len() > 256 || text.chars().any(char::is_control);
    assert_eq!(invalid_input(&err) == Some("revoke reason"), bad, "{err}");
}

fn vnc_password(text: &str) {
    let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
    let file = vnc_password_file(text);
    let response = vnc_auth_response(text, &challenge);
    // Only the first 8 bytes count.
    let bytes = text.as_bytes();
    if bytes.len() > 8
        && let Ok(prefix) = std::str::from_utf8(&bytes[..8])
    {
        assert_eq!(vnc_password_file(prefix), file);
        assert_eq!(vnc_auth_response(prefix, &challenge), response);
    }
}

/// An event as the fleet's log holds it (read back from Redis): what parses is a valid
/// event, and it writes back to JSON that reads back the same.
fn event_json(text: &str) {
    let Ok(event) = serde_json::from_str::<Event>(text) else { return };
    assert!(build_id_rule(event.build_id.as_str()), "{event:?}");
    let json = serde_json::to_string(&event).expect("an event serializes");
    assert_eq!(serde_json::from_str::<Event>(&json).ok(), Some(event));
}
