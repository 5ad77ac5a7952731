//! Generated scripts and configs stay inert whatever goes into them: every value is validated
//! or quoted. Checked by parsing (`sh -n`, and an independent reading of the quoted words),
//! never by running hostile text.

use std::process::{Command, Stdio};
use std::sync::Arc;

use proptest::prelude::*;
use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, ConnectionInfo, Credentials, Error, HostKey,
    ManualClock, ScriptOptions, Session, Trigger,
};
use remote_access_test_peers::{Run, check_cd, ps_word, sh_word};
use time::macros::datetime;

fn issue(id: &str, user: &str) -> Result<(Credentials, Session), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let clock = ManualClock::new(datetime!(2026-09-09 9:00 UTC));
        let authority = Authority::with_clock(AuthorityOptions::default(), Arc::new(clock))?;
        let mut request = BuildRequest::new(BuildId::new(id)?, Trigger::Manual, true);
        let mut builder = Builder::new("10.1.2.3".parse().unwrap());
        builder.user = user.to_owned();
        request.builder = Some(builder);
        let creds = authority.issue(request).await?;
        let session = authority.session(creds.build_id()).await?;
        Ok((creds, session))
    })
}

fn sh_parses(shell: &str, script: &str) -> bool {
    let mut child = Command::new(shell)
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!("{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// Every check on the outputs for one set of inputs.
fn check_outputs(creds: &Credentials, info: &ConnectionInfo, dir: &str) {
    let posix = info.posix_script(creds).unwrap();
    let posix = posix.expose();
    assert!(sh_parses("sh", posix), "sh -n rejects the script");
    assert!(sh_parses("bash", posix), "bash -n rejects the script");
    // The cd command is one quoted word that reads back exactly.
    let line =
        posix.lines().find_map(|l| l.trim_start().strip_prefix("cd_command=")).expect("cd_command line");
    let cd = sh_word(line).expect("cd_command is a single-quoted word");
    check_cd(&cd, dir);
    // The config's RemoteCommand reads back too (ssh_config doubles %).
    let remote = posix.lines().find_map(|l| l.strip_prefix("  RemoteCommand ")).expect("RemoteCommand");
    let remote = remote.replace("%%", "%");
    let remote_cd = remote.strip_suffix(" ; exec \"${SHELL:-/bin/sh}\" -l").expect("RemoteCommand shape");
    check_cd(remote_cd, dir);
    // Here-documents end only where we end them.
    assert_eq!(posix.lines().filter(|l| *l == "REMOTE_ACCESS_END").count(), 3);

    let ps = info.powershell_script(creds).unwrap();
    let ps = ps.expose();
    let line =
        ps.lines().find_map(|l| l.trim_start().strip_prefix("$cdCommand = ")).expect("$cdCommand line");
    assert_eq!(ps_word(line.trim_end_matches('\r')).as_deref(), Some(cd.as_str()));
    let openers = ps.lines().filter(|l| l.trim_end().ends_with("@'")).count();
    let closers = ps.lines().filter(|l| l.starts_with("'@")).count();
    assert_eq!((openers, closers), (3, 3), "here-strings are balanced");
    serde_json::from_str::<serde_json::Value>(&info.to_json()).expect("connection info is JSON");
}

#[test]
fn hostile_build_directories_stay_inside_their_quotes() {
    let (creds, session) = issue("hostile-1", "builder").unwrap();
    let key = HostKey::generate().unwrap();
    for dir in [
        "$FCI_BUILD_DIR",
        "/home/builder/it's here",
        "'; rm -rf ~; echo '",
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "\"; touch /tmp/pwned; \"",
        "%h %d %% 100%",
        "‘quoted’ ‚low‛ \\ back",
        "${HOME}",
        "$HOME/sub dir",
        "REMOTE_ACCESS_END",
        "'@",
    ] {
        let mut options = ScriptOptions::new("gw.example.com", 2222);
        options.build_dir = dir.to_owned();
        let info = ConnectionInfo::new(&creds, &session, &key, &options).unwrap();
        check_outputs(&creds, &info, dir);
    }
    for bad_dir in ["", "line\nbreak", "tab\there", "nul\0"] {
        let mut options = ScriptOptions::new("gw.example.com", 2222);
        options.build_dir = bad_dir.to_owned();
        let err = ConnectionInfo::new(&creds, &session, &key, &options).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "build_dir", .. }), "{bad_dir:?}");
    }
}

#[test]
fn hostile_hosts_and_users_are_refused() {
    let (creds, session) = issue("hostile-2", "builder").unwrap();
    let key = HostKey::generate().unwrap();
    for host in
        ["gw.example.com; rm -rf ~", "-oProxyCommand=touch", "$(x)", "a b", "", "gw\nHost *", "x'y", "[::1]"]
    {
        let err = ConnectionInfo::new(&creds, &session, &key, &ScriptOptions::new(host, 22)).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "gateway_host", .. }), "{host:?}");
    }
    for user in ["root;id", "-o", "a b", "Builder", "x$(y)", "", &"u".repeat(33)] {
        let err = issue("hostile-3", user).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "builder.user", .. }), "{user:?}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_build_directory_and_build_id_give_parseable_inert_scripts(
        dir in "\\PC{1,40}",
        id in "[A-Za-z0-9][A-Za-z0-9._-]{0,30}",
        host in prop_oneof!["[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,5}){0,2}", "\\PC{1,20}"],
        port in 1u16..,
    ) {
        let (creds, session) = issue(&id, "builder").unwrap();
        let key = HostKey::generate().unwrap();
        let mut options = ScriptOptions::new(host.clone(), port);
        options.build_dir = dir.clone();
        match ConnectionInfo::new(&creds, &session, &key, &options) {
            Ok(info) => check_outputs(&creds, &info, &dir),
            Err(Error::InvalidInput { what, .. }) => prop_assert!(matches!(what, "gateway_host" | "build_dir"), "{what}"),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

#[test]
fn values_from_a_store_or_edited_fields_are_checked_again() {
    let (creds, session) = issue("hostile-4", "builder").unwrap();
    let key = HostKey::generate().unwrap();
    let options = ScriptOptions::new("gw.example.com", 2222);

    // A session as a networked store might hand it back, with hostile builder fields.
    let json = serde_json::to_string(&session).unwrap();
    let good_key = key.public_key();
    for (field, value) in [
        ("\"user\":\"builder\"", "\"user\":\"b\\nProxyCommand touch /tmp/pwned\""),
        ("\"host_key\":null", &format!("\"host_key\":\"{good_key}\\nREMOTE_ACCESS_END\\ntouch /tmp/pwned\"")),
        ("\"host_key\":null", "\"host_key\":\"ssh-ed25519 AAAA'; touch /tmp/pwned\""),
    ] {
        assert!(json.contains(field), "{field} in {json}");
        let forged: Session = serde_json::from_str(&json.replace(field, value)).unwrap();
        let err = ConnectionInfo::new(&creds, &forged, &key, &options).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{value}: {err}");
    }

    // Public fields edited after `new`: every generator checks again.
    let info = ConnectionInfo::new(&creds, &session, &key, &options).unwrap();
    type Edit<'a> = Box<dyn Fn(&mut ConnectionInfo) + 'a>;
    let edits: Vec<Edit<'_>> = vec![
        Box::new(|i| i.builder_user = "x\n  ProxyCommand touch /tmp/pwned".into()),
        Box::new(|i| i.gateway_host = "gw\nHost *".into()),
        Box::new(|i| i.gateway_user = "ra-x'$(id)'".into()),
        Box::new(|i| i.gateway_host_key = format!("{good_key}\nREMOTE_ACCESS_END")),
        Box::new(|i| i.builder_host = "10.0.0.1; id".into()),
        Box::new(|i| i.build_id = "b\nid".into()),
        Box::new(|i| i.deadline = "soon'; id; '".into()),
        Box::new(|i| i.access_rule = "soon\n$(id)".into()),
        Box::new(|i| i.key_fingerprint = "SHA256:x\nid".into()),
        Box::new(|i| i.vnc_host = Some("$(id)".into())),
        Box::new(|i| i.vnc_tls_fingerprint = Some("AB\nid".into())),
        Box::new(|i| i.vnc_require_encryption = true),
        Box::new(|i| i.vnc_websocket_url = Some("javascript:alert(1)".into())),
    ];
    for edit in edits {
        let mut edited = info.clone();
        edit(&mut edited);
        assert!(edited.posix_script(&creds).is_err());
        assert!(edited.powershell_script(&creds).is_err());
        assert!(edited.ssh_config("/k", "/h").is_err());
        assert!(edited.known_hosts().is_err());
    }
    assert!(info.ssh_config("/k\nHost *", "/h").is_err());
}

/// A build with a gateway VNC port of `port` on a gateway reached at `host`, with `options`
/// edited by `edit`: its VNC instructions.
fn vnc_instructions(
    port: u16,
    host: &str,
    edit: impl FnOnce(&mut ScriptOptions),
) -> (ConnectionInfo, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut options = AuthorityOptions::default();
        options.vnc_ports = vec![port];
        let authority = Authority::new(options).unwrap();
        let mut request = BuildRequest::new(BuildId::new("vnc-text").unwrap(), Trigger::Manual, true);
        let mut builder = Builder::new("10.1.2.3".parse().unwrap());
        builder.vnc_port = Some(5900);
        request.builder = Some(builder);
        let creds = authority.issue(request).await.unwrap();
        let session = authority.session(creds.build_id()).await.unwrap();
        let mut options = ScriptOptions::new(host, 22);
        edit(&mut options);
        let info = ConnectionInfo::new(&creds, &session, &HostKey::generate().unwrap(), &options).unwrap();
        let text = info.vnc_instructions(&creds).unwrap().unwrap().expose().clone();
        assert!(text.contains(creds.vnc_password().expose()));
        (info, text)
    })
}

/// The value of an instructions line (`  label:   VALUE   (comment)`).
fn line_value<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.trim_start().strip_prefix(label)?.split_whitespace().next())
}

#[test]
fn vnc_instructions_give_each_client_form_it_reads() {
    // A port of 5900 and above: HOST::PORT and the display form, which means the same port.
    let (info, text) = vnc_instructions(5913, "gw.example.com", |_| {});
    assert_eq!(line_value(&text, "address:"), Some("gw.example.com::5913"), "{text}");
    assert_eq!(line_value(&text, "display:"), Some("gw.example.com:13"), "{text}");
    assert!(text.contains("unencrypted on the internet: prefer the SSH tunnel"), "{text}");
    assert_eq!(line_value(&text, "ssh tunnel:"), Some("127.0.0.1::5901"), "{text}");
    assert_eq!(info.vnc_websocket_url.as_deref(), Some("ws://gw.example.com:5913/websockify"));
    assert_eq!(line_value(&text, "browser:"), Some("ws://gw.example.com:5913/websockify"));

    // Below 5900: no display form, and the text says why.
    let (_, text) = vnc_instructions(2000, "gw.example.com", |_| {});
    assert_eq!(line_value(&text, "address:"), Some("gw.example.com::2000"));
    assert_eq!(line_value(&text, "display:"), None, "{text}");
    assert!(text.contains("below 5900"), "{text}");

    // With a certificate: VeNCrypt and its fingerprint, wss://; IPv6 hosts in brackets.
    let fingerprint = ["AB"; 32].join(":");
    let (info, text) = vnc_instructions(5999, "2001:db8::7", |o| {
        o.vnc_tls_fingerprint = Some(fingerprint.clone());
        o.vnc_require_encryption = true;
    });
    assert_eq!(line_value(&text, "address:"), Some("[2001:db8::7]::5999"), "{text}");
    assert_eq!(line_value(&text, "display:"), Some("[2001:db8::7]:99"), "{text}");
    assert!(text.contains("VeNCrypt X509Vnc") && text.contains(&fingerprint), "{text}");
    assert!(text.contains("unencrypted VNC is refused"), "{text}");
    assert_eq!(info.vnc_websocket_url.as_deref(), Some("wss://[2001:db8::7]:5999/websockify"));
    assert_eq!(info.vnc_tls_fingerprint.as_deref(), Some(fingerprint.as_str()));
    let json = info.to_json();
    assert!(json.contains("\"vnc_websocket_url\": \"wss://[2001:db8::7]:5999/websockify\""), "{json}");

    // Without WebSocket, no URL.
    let (info, text) = vnc_instructions(5913, "gw.example.com", |o| o.vnc_websocket = false);
    assert_eq!(info.vnc_websocket_url, None);
    assert_eq!(line_value(&text, "browser:"), None);
}

/// With a user CA and a host CA: both scripts embed the certificate where it reads back whole
/// (a here-document, a PowerShell single-quoted string), give it to the builder aliases only,
/// and trust the host CA for the builder's address with nothing on first use.
#[test]
fn certificates_go_into_both_scripts_and_only_to_the_builder() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (creds, session, host_ca) = runtime.block_on(async {
        let mut options = AuthorityOptions::default();
        options.user_ca = Some(remote_access_core::SshCa::generate().unwrap());
        options.certificate_source_addresses = vec!["10.9.0.0/24".to_owned()];
        let host_ca = remote_access_core::SshCa::generate().unwrap();
        let authority = Authority::new(options).unwrap();
        let mut request = BuildRequest::new(BuildId::new("certs-1").unwrap(), Trigger::Manual, true);
        let mut builder = Builder::new("10.1.2.3".parse().unwrap());
        builder.ssh_port = 2200;
        request.builder = Some(builder);
        let creds = authority.issue(request).await.unwrap();
        let session = authority.session(creds.build_id()).await.unwrap();
        (creds, session, host_ca)
    });
    let certificate = creds.certificate().unwrap().to_owned();
    let mut options = ScriptOptions::new("gw.example.com", 2222);
    options.builder_host_ca = Some(host_ca.public_key());
    let info = ConnectionInfo::new(&creds, &session, &HostKey::generate().unwrap(), &options).unwrap();
    let known = info.known_hosts().unwrap();
    assert!(known.contains(&format!("@cert-authority 10.1.2.3,[10.1.2.3]:2200 {}\n", host_ca.public_key())));

    let posix = info.posix_script(&creds).unwrap();
    let posix = posix.expose();
    assert!(sh_parses("sh", posix) && sh_parses("bash", posix));
    assert_eq!(posix.lines().filter(|l| *l == "REMOTE_ACCESS_END").count(), 4);
    let lines: Vec<&str> = posix.lines().collect();
    let at = lines.iter().position(|l| l.contains("builder-cert.pub\" <<'REMOTE_ACCESS_END'")).unwrap();
    assert_eq!(lines[at + 1], certificate);
    assert!(posix.contains("Host remote-access-builder remote-access-shell\\n  CertificateFile"));
    assert!(!posix.contains("accept-new") && !posix.contains("HostKeyAlias remote-access-builder"));

    let ps = info.powershell_script(&creds).unwrap();
    let ps = ps.expose();
    let line = ps.lines().find(|l| l.contains("builder-cert.pub'), ")).unwrap();
    let quoted = line.split("'builder-cert.pub'), ").nth(1).unwrap().split(" + ").next().unwrap();
    assert_eq!(ps_word(quoted).as_deref(), Some(certificate.as_str()));
    assert!(
        ps.contains(
            "Host remote-access-builder remote-access-shell remote-access-command`n  CertificateFile"
        )
    );

    let config = info.ssh_config_with_certificate("/keys/id", "/keys/id.cert", "/keys/known").unwrap();
    assert!(
        config.ends_with(
            "Host remote-access-builder remote-access-shell\n  CertificateFile \"/keys/id.cert\"\n"
        )
    );
    assert!(info.ssh_config_with_certificate("/keys/id", "bad\"path", "/keys/known").is_err());
}
