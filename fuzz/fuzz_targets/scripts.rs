//! Connection info and every text generated from it (POSIX and PowerShell scripts, ssh_config,
//! known_hosts, VNC instructions, JSON, authorized_keys lines) from arbitrary build ids, hosts,
//! ports, users, builder host keys, build directories and file paths, and from arbitrary edits
//! of `ConnectionInfo`'s public fields after it was made.
//!
//! Inputs the API refuses are fine; whatever it accepts must give inert output. That is checked
//! by parsing, never by running anything:
//! - the scripts are lexed as their shell reads them; with single-quoted words, comments and
//!   here-document bodies set aside, what is left (the code) must be the same for every input,
//!   byte for byte, as for a benign reference build: hostile text can only live inside quotes,
//!   comments and here-documents;
//! - the quoted words read back to exactly what they must mean (the `cd` into the build
//!   directory, the banner), and the here-documents hold exactly the key, the known_hosts lines
//!   and an ssh_config;
//! - every ssh_config is read as OpenSSH reads it (`argv_split` quoting and escapes, `%`
//!   tokens): known keywords only, the line shape of the template, every value reading back to
//!   the value given.
//!
//! Input: fields separated by 0xFF (which UTF-8 never contains): control bytes, build id,
//! gateway host, build directory, builder user, builder host key (or its comment), identity
//! file, known_hosts file, and a value for the field edit that control byte 0 picks.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, ConnectionInfo, Credentials, Error, HostKey,
    ManualClock, ScriptOptions, Session, Trigger,
};
use remote_access_test_peers::{check_cd, is_ps_double_quote, is_ps_quote, ps_word, sh_word};
use time::macros::datetime;

const GATEWAY_ALIAS: &str = "remote-access-gateway";
const BUILDER_ALIAS: &str = "remote-access-builder";
const SHELL_ALIAS: &str = "remote-access-shell";
const COMMAND_ALIAS: &str = "remote-access-command";
const HEREDOC_END: &str = "REMOTE_ACCESS_END";
const REMOTE_SUFFIX: &str = " ; exec \"${SHELL:-/bin/sh}\" -l";

/// What stays the same for every input: keys, and the benign reference outputs' code.
struct Fixed {
    gateway_key: HostKey,
    /// A valid builder host key line (`ssh-ed25519 AAAA...`).
    builder_key: String,
    posix_code: String,
    powershell_code: String,
    /// Line shapes of the ssh_config in the POSIX script, in the PowerShell script, and from
    /// `ssh_config`.
    posix_config_shape: Vec<String>,
    powershell_config_shape: Vec<String>,
    ssh_config_shape: Vec<String>,
}

thread_local! {
    static FIXED: Fixed = fixed();
}

fn fixed() -> Fixed {
    let gateway_key = HostKey::generate().expect("host key");
    let builder_key = HostKey::generate().expect("host key").public_key();
    let id = BuildId::new("reference").expect("build id");
    let (creds, session) = issue(&id, Builder::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))), false)
        .expect("a benign build is issued");
    let info = ConnectionInfo::new(&creds, &session, &gateway_key, &ScriptOptions::new("gw.example.com", 22))
        .expect("benign connection info");
    let posix = info.posix_script(&creds).expect("script");
    let posix = lex_sh(posix.expose()).expect("the reference POSIX script lexes");
    let powershell = info.powershell_script(&creds).expect("script");
    let powershell = lex_powershell(powershell.expose()).expect("the reference PowerShell script lexes");
    let ssh_config = info.ssh_config("/k", "/h").expect("ssh_config");
    Fixed {
        gateway_key,
        builder_key,
        posix_code: posix.code,
        powershell_code: powershell.code,
        posix_config_shape: shape(&posix.bodies[2]),
        powershell_config_shape: shape(&powershell.bodies[2].replace('\r', "")),
        ssh_config_shape: shape(&ssh_config),
    }
}

fn issue(id: &BuildId, builder: Builder, vnc: bool) -> Result<(Credentials, Session), Error> {
    common::block_on(async {
        let mut options = AuthorityOptions::default();
        if vnc {
            options.vnc_ports = vec![5901];
        }
        let clock = ManualClock::new(datetime!(2026-09-09 9:00 UTC));
        let authority = Authority::with_clock(options, Arc::new(clock))?;
        let mut request = BuildRequest::new(id.clone(), Trigger::Manual, true);
        request.builder = Some(builder);
        let creds = authority.issue(request).await?;
        let session = authority.session(creds.build_id()).await?;
        Ok((creds, session))
    })
}

fn invalid_input(result: &Error) -> Option<&'static str> {
    match result {
        Error::InvalidInput { what, .. } => Some(what),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<String> =
        data.split(|&b| b == 0xff).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let control = data.split(|&b| b == 0xff).next().unwrap_or(&[]);
    let byte = |i: usize| control.get(i).copied().unwrap_or(0);
    FIXED.with(|fixed| run(fixed, field, byte));
});

fn run<'a>(fixed: &Fixed, field: impl Fn(usize) -> &'a str, byte: impl Fn(usize) -> u8) {
    let flags = byte(3);
    let (vnc, reverse, key_comment, ipv6) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0, flags & 8 != 0);

    // Refused values fall back to benign ones, so the other fields still get exercised.
    let id = BuildId::new(field(1)).unwrap_or_else(|_| BuildId::new("fuzz-build").expect("build id"));
    let address = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, u16::from(byte(5)), u16::from(byte(6))))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, byte(4), byte(5), byte(6)))
    };
    let mut builder = Builder::new(address);
    builder.ssh_port = u16::from_be_bytes([byte(7), byte(8)]);
    builder.reverse_tunnel = reverse;
    builder.vnc_port = vnc.then_some(5900);
    builder.user = field(4).to_owned();
    let key = field(5);
    builder.host_key = match (key_comment, key.is_empty()) {
        (true, _) => Some(format!("{} {key}", fixed.builder_key)),
        (false, true) => None,
        (false, false) => Some(key.to_owned()),
    };
    let mut issued = None;
    for _ in 0..4 {
        match issue(&id, builder.clone(), vnc) {
            Ok(ok) => {
                issued = Some(ok);
                break;
            }
            Err(err) => match invalid_input(&err) {
                Some("builder.user") => builder.user = "builder".into(),
                Some("builder.host_key") => builder.host_key = None,
                Some("builder port") => builder.ssh_port = 22,
                _ => panic!("issuing failed: {err}"),
            },
        }
    }
    let (creds, session) = issued.expect("issued with benign fallbacks");

    let mut options = ScriptOptions::new(field(2), u16::from_be_bytes([byte(1), byte(2)]));
    options.build_dir = field(3).to_owned();
    let mut made = None;
    for _ in 0..4 {
        match ConnectionInfo::new(&creds, &session, &fixed.gateway_key, &options) {
            Ok(info) => {
                made = Some(info);
                break;
            }
            Err(err) => match invalid_input(&err) {
                Some("gateway_host") => options.gateway_host = "gw.example.com".into(),
                Some("gateway_port") => options.gateway_port = 22,
                Some("build_dir") => options.build_dir = "$FCI_BUILD_DIR".into(),
                _ => panic!("connection info failed: {err}"),
            },
        }
    }
    let mut info = made.expect("connection info with benign fallbacks");
    check_info(&info, &creds);

    // The fields are public: edit one, then every generator must check it again.
    let value = field(8).to_owned();
    match byte(0) % 16 {
        0 => info.build_id = value,
        1 => info.gateway_host = value,
        2 => info.gateway_user = value,
        3 => info.gateway_host_key = value,
        4 => info.builder_host = value,
        5 => info.builder_user = value,
        6 => info.builder_host_key = Some(value),
        7 => info.key_fingerprint = value,
        8 => info.access_rule = value,
        9 => info.build_dir = value,
        10 => info.vnc_host = Some(value),
        11 => info.gateway_host_key = format!("{} {value}", info.gateway_host_key),
        12 => info.vnc_tls_fingerprint = Some(value),
        13 => info.vnc_websocket_url = Some(value),
        _ => {}
    }
    check_outputs(fixed, &info, &creds, field(6), field(7));
}

/// The key material in the info is the credentials' and the gateway's.
fn check_info(info: &ConnectionInfo, creds: &Credentials) {
    assert_eq!(info.build_id, creds.build_id().as_str());
    assert_eq!(info.gateway_user, creds.username());
    assert_eq!(info.key_fingerprint, creds.fingerprint());
    // authorized_keys lines: `[restrict,pty ]type base64 remote-access build ID`.
    let line = creds.authorized_keys_line();
    assert_eq!(
        line.split(' ').collect::<Vec<_>>(),
        [
            creds.public_key().split(' ').next().unwrap_or(""),
            creds.public_key().split(' ').nth(1).unwrap_or(""),
            "remote-access",
            "build",
            creds.build_id().as_str()
        ]
    );
    assert_eq!(creds.authorized_keys_line_restricted(), format!("restrict,pty {line}"));
}

fn check_outputs(fixed: &Fixed, info: &ConnectionInfo, creds: &Credentials, identity: &str, known: &str) {
    // JSON: parses, and says what the fields say.
    let json: serde_json::Value = serde_json::from_str(&info.to_json()).expect("connection info is JSON");
    assert_eq!(json["build_dir"].as_str(), Some(info.build_dir.as_str()));
    assert_eq!(json["gateway_host"].as_str(), Some(info.gateway_host.as_str()));

    let Ok(known_hosts) = info.known_hosts() else {
        // The info is refused: so must every generator be.
        assert!(info.posix_script(creds).is_err());
        assert!(info.powershell_script(creds).is_err());
        assert!(info.ssh_config("/k", "/h").is_err());
        assert!(info.vnc_instructions(creds).is_err());
        return;
    };
    check_known_hosts(info, &known_hosts);

    match info.ssh_config(identity, known) {
        Ok(config) => {
            check_ssh_config(info, &config, false, Some((identity, known)));
            assert_eq!(shape(&config), fixed.ssh_config_shape, "ssh_config has the template's lines");
        }
        Err(err) => assert!(matches!(invalid_input(&err), Some("identity_file" | "known_hosts_file"))),
    }

    if info.build_id != creds.build_id().as_str() {
        // Edited to another (valid) build: the credentials no longer match.
        let mismatch = |err: Error| assert_eq!(invalid_input(&err), Some("credentials"));
        info.posix_script(creds).map(drop).map_or_else(mismatch, |()| panic!("another build's script"));
        info.powershell_script(creds).map(drop).map_or_else(mismatch, |()| panic!("another build's script"));
        info.vnc_instructions(creds).map(drop).map_or_else(mismatch, |()| panic!("another build's VNC"));
        return;
    }
    let posix = info.posix_script(creds).expect("a checked info gives a POSIX script");
    check_posix(fixed, info, creds, posix.expose(), &known_hosts);
    let powershell = info.powershell_script(creds).expect("a checked info gives a PowerShell script");
    check_powershell(fixed, info, creds, powershell.expose(), &known_hosts);

    if let Some(text) = info.vnc_instructions(creds).expect("a checked info gives VNC instructions") {
        let text = text.expose();
        assert!(info.vnc_port.is_some() || info.builder_vnc_port.is_some());
        // A heading, the password, at most seven lines of ways in, the end of access.
        assert!((3..=10).contains(&text.lines().count()), "VNC instructions: {text:?}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
        if let (Some(host), Some(port)) = (&info.vnc_host, info.vnc_port) {
            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let address = format!("  address:    {host}::{port} ");
            assert!(text.lines().any(|line| line.starts_with(&address)), "{address:?} in {text:?}");
        }
    } else {
        assert!(info.vnc_port.is_none() && info.builder_vnc_port.is_none());
    }
}

fn check_known_hosts(info: &ConnectionInfo, text: &str) {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len(), 1 + usize::from(info.builder_host_key.is_some()), "known_hosts {text:?}");
    assert!(text.ends_with('\n'));
    for (line, alias) in lines.iter().zip([GATEWAY_ALIAS, BUILDER_ALIAS]) {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 3, "known_hosts line {line:?}");
        assert_eq!(words[0], alias);
        assert!(words[1].bytes().all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b)), "{line:?}");
        assert!(words[2].bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "{line:?}");
    }
}

/// The sequence of keywords (or `#`, `Host`) of an ssh_config, one per line.
fn shape(config: &str) -> Vec<String> {
    config
        .split_terminator('\n')
        .map(|line| match line.trim_start().split_once(' ') {
            _ if line.starts_with('#') => "#".to_owned(),
            Some((keyword, _)) => keyword.to_owned(),
            None => line.to_owned(),
        })
        .collect()
}

/// OpenSSH's `argv_split` (misc.c), as `readconf` applies it to every line after the keyword:
/// `'` and `"` quote, a backslash escapes `'`, `"`, `\` (and a space outside quotes), a `#` at
/// the start of a word ends the line. `None` where OpenSSH reports "invalid quotes".
fn argv_split(s: &str) -> Option<Vec<String>> {
    let s: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == ' ' || s[i] == '\t' {
            i += 1;
            continue;
        }
        if s[i] == '#' {
            break;
        }
        let mut quote = None;
        let mut word = String::new();
        while i < s.len() {
            let c = s[i];
            if c == '\\' {
                let next = s.get(i + 1).copied();
                if matches!(next, Some('\'' | '"' | '\\')) || (quote.is_none() && next == Some(' ')) {
                    i += 1;
                }
                word.push(s[i]);
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                word.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return None;
        }
        words.push(word);
    }
    Some(words)
}

/// `%` starts a token in these ssh_config values: ours must all be `%%`.
fn percent_unescaped(raw: &str) -> Option<String> {
    if raw.replace("%%", "").contains('%') { None } else { Some(raw.replace("%%", "%")) }
}

/// Reads an ssh_config as OpenSSH would and checks each line against what the info says.
fn check_ssh_config(info: &ConnectionInfo, config: &str, command_alias: bool, files: Option<(&str, &str)>) {
    assert!(config.ends_with('\n'), "ssh_config ends with a newline");
    let hosts_ok = |patterns: &[String]| {
        let mut allowed = vec![GATEWAY_ALIAS, BUILDER_ALIAS, SHELL_ALIAS, "*"];
        if command_alias {
            allowed.push(COMMAND_ALIAS);
        }
        !patterns.is_empty() && patterns.iter().all(|p| allowed.contains(&p.as_str()))
    };
    let host_chars =
        |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b));
    for line in config.split_terminator('\n') {
        if line.starts_with('#') {
            assert_eq!(line, format!("# remote-access: build {}", info.build_id));
            continue;
        }
        let (keyword, rest) = line.trim_start().split_once(' ').unwrap_or((line, ""));
        assert!(line == format!("{keyword} {rest}") || line == format!("  {keyword} {rest}"), "{line:?}");
        let args = argv_split(rest).unwrap_or_else(|| panic!("ssh would refuse (invalid quotes): {line:?}"));
        let one = || {
            assert_eq!(args.len(), 1, "one argument: {line:?}");
            args[0].as_str()
        };
        match keyword {
            "Host" => assert!(hosts_ok(&args), "{line:?}"),
            "HostName" => {
                let host = one();
                assert!(
                    host_chars(host) && (host == info.gateway_host || host == info.builder_host),
                    "{line:?}"
                );
            }
            "Port" => {
                let port = one();
                let ports = [info.gateway_port.to_string(), info.builder_port.to_string()];
                assert!(ports.iter().any(|p| p == port), "{line:?}");
            }
            "User" => {
                let user = one();
                let chars =
                    user.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
                assert!(chars && (user == info.gateway_user || user == info.builder_user), "{line:?}");
            }
            "HostKeyAlias" => assert!([GATEWAY_ALIAS, BUILDER_ALIAS].contains(&one()), "{line:?}"),
            "ProxyJump" => assert_eq!(one(), GATEWAY_ALIAS),
            "StrictHostKeyChecking" => {
                assert!(
                    one() == "yes" || (one() == "accept-new" && info.builder_host_key.is_none()),
                    "{line:?}"
                )
            }
            "RequestTTY" | "IdentitiesOnly" => assert_eq!(one(), "yes"),
            "PasswordAuthentication" | "KbdInteractiveAuthentication" | "ForwardAgent" | "ForwardX11" => {
                assert_eq!(one(), "no")
            }
            "ServerAliveInterval" => assert_eq!(one(), "30"),
            // Only the script's own known_hosts decides: not the machine's.
            "GlobalKnownHostsFile" => assert_eq!(one(), "none"),
            // The rest of the line, raw, goes to the builder's shell (after `%` tokens).
            "RemoteCommand" => {
                let command = percent_unescaped(rest).unwrap_or_else(|| panic!("a lone % in {line:?}"));
                let cd =
                    command.strip_suffix(REMOTE_SUFFIX).unwrap_or_else(|| panic!("RemoteCommand {line:?}"));
                check_cd(cd, &info.build_dir);
            }
            "IdentityFile" | "UserKnownHostsFile" => {
                let (identity, known) = files.unwrap_or_else(|| panic!("unexpected {line:?}"));
                let expected = if keyword == "IdentityFile" { identity } else { known };
                let path = percent_unescaped(one()).unwrap_or_else(|| panic!("a lone % in {line:?}"));
                assert_eq!(path, expected, "ssh reads another path from {line:?}");
            }
            _ => panic!("unexpected ssh_config line {line:?}"),
        }
    }
}

/// A script split the way its shell reads it: the code, with every single-quoted word (or run
/// of them) replaced by `'Q'`, comments dropped and here-document bodies replaced by a mark;
/// and the bodies.
struct Lexed {
    code: String,
    bodies: Vec<String>,
}

/// POSIX sh: `'...'` (no escapes inside), `\x` outside quotes, `"..."` (kept as code: nothing
/// hostile may be there), `#` comments at the start of a word, `<<'WORD'` here-documents (the
/// body starts after the line and ends at a line equal to WORD).
fn lex_sh(script: &str) -> Result<Lexed, String> {
    let s: Vec<char> = script.chars().collect();
    let mut code = String::new();
    let mut bodies = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let (mut i, mut in_literal, mut word_start) = (0, false, true);
    let literal = |code: &mut String, in_literal: &mut bool| {
        if !*in_literal {
            code.push_str("'Q'");
            *in_literal = true;
        }
    };
    while i < s.len() {
        let c = s[i];
        match c {
            '\'' => {
                let end = (i + 1..s.len()).find(|&j| s[j] == '\'').ok_or("unterminated '")?;
                literal(&mut code, &mut in_literal);
                i = end + 1;
                word_start = false;
            }
            '\\' => {
                if i + 1 >= s.len() {
                    return Err("a backslash at the end".into());
                }
                literal(&mut code, &mut in_literal);
                i += 2;
                word_start = false;
            }
            '"' => {
                in_literal = false;
                code.push('"');
                i += 1;
                loop {
                    let c = *s.get(i).ok_or("unterminated \"")?;
                    code.push(c);
                    i += 1;
                    if c == '\\' {
                        code.push(*s.get(i).ok_or("unterminated \"")?);
                        i += 1;
                    } else if c == '"' {
                        break;
                    }
                }
                word_start = false;
            }
            '#' if word_start => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '<' if s.get(i + 1) == Some(&'<') => {
                in_literal = false;
                code.push_str("<<");
                i += 2;
                while s.get(i).is_some_and(|&c| c == ' ' || c == '\t') {
                    i += 1;
                }
                // Only quoted delimiters: an unquoted one would expand `$` and backquotes.
                if s.get(i) != Some(&'\'') {
                    return Err("an unquoted here-document".into());
                }
                let end = (i + 1..s.len()).find(|&j| s[j] == '\'').ok_or("unterminated '")?;
                pending.push(s[i + 1..end].iter().collect());
                code.push_str("'DELIMITER'");
                i = end + 1;
                word_start = false;
            }
            '\n' => {
                in_literal = false;
                code.push('\n');
                i += 1;
                for delimiter in pending.drain(..) {
                    let mut body = String::new();
                    loop {
                        if i >= s.len() {
                            return Err(format!("here-document {delimiter} not closed"));
                        }
                        let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
                        let line: String = s[i..end].iter().collect();
                        i = end + 1;
                        if line == delimiter {
                            break;
                        }
                        body.push_str(&line);
                        body.push('\n');
                    }
                    bodies.push(body);
                    code.push_str("<<BODY>>\n");
                }
                word_start = true;
            }
            _ => {
                in_literal = false;
                code.push(c);
                i += 1;
                word_start = matches!(c, ' ' | '\t' | ';' | '&' | '|' | '(' | ')' | '<' | '>');
            }
        }
    }
    if !pending.is_empty() {
        return Err("a here-document without a body".into());
    }
    Ok(Lexed { code, bodies })
}

/// PowerShell: single-quoted strings (any of the five single quotes, doubled inside), `"..."`
/// (any of the four double quotes; kept as code), backtick escapes, `#` and `<# #>` comments,
/// `@'` here-strings (the body starts on the next line and ends at a line starting with a
/// single quote and `@`). Expandable here-strings (`@"`) are refused.
fn lex_powershell(script: &str) -> Result<Lexed, String> {
    let s: Vec<char> = script.chars().collect();
    let mut code = String::new();
    let mut bodies = Vec::new();
    let (mut i, mut in_literal, mut word_start) = (0, false, true);
    while i < s.len() {
        let c = s[i];
        if c == '@' && s.get(i + 1).is_some_and(|&q| is_ps_quote(q)) {
            in_literal = false;
            i += 2;
            while s.get(i).is_some_and(|&c| c == ' ' || c == '\t' || c == '\r') {
                i += 1;
            }
            if s.get(i) != Some(&'\n') {
                return Err("text after @' on its line".into());
            }
            i += 1;
            let mut body = String::new();
            loop {
                if i >= s.len() {
                    return Err("here-string not closed".into());
                }
                if is_ps_quote(s[i]) && s.get(i + 1) == Some(&'@') {
                    i += 2;
                    break;
                }
                let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
                body.extend(&s[i..(end + 1).min(s.len())]);
                i = end + 1;
            }
            bodies.push(body);
            code.push_str("@'BODY'@");
            word_start = false;
        } else if c == '@' && s.get(i + 1).is_some_and(|&q| is_ps_double_quote(q)) {
            return Err("an expandable here-string".into());
        } else if is_ps_quote(c) {
            i += 1;
            loop {
                let c = *s.get(i).ok_or("unterminated '")?;
                i += 1;
                if is_ps_quote(c) {
                    if s.get(i).is_some_and(|&q| is_ps_quote(q)) {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            if !in_literal {
                code.push_str("'Q'");
                in_literal = true;
            }
            word_start = false;
        } else if is_ps_double_quote(c) {
            in_literal = false;
            code.push(c);
            i += 1;
            loop {
                let c = *s.get(i).ok_or("unterminated \"")?;
                code.push(c);
                i += 1;
                if c == '`' {
                    code.push(*s.get(i).ok_or("unterminated \"")?);
                    i += 1;
                } else if is_ps_double_quote(c) {
                    if s.get(i).is_some_and(|&q| is_ps_double_quote(q)) {
                        code.push(s[i]);
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            word_start = false;
        } else if c == '<' && s.get(i + 1) == Some(&'#') {
            in_literal = false;
            let end = (i + 2..s.len().saturating_sub(1)).find(|&j| s[j] == '#' && s[j + 1] == '>');
            i = end.ok_or("unterminated <#")? + 2;
        } else if c == '#' && word_start {
            in_literal = false;
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '`' {
            in_literal = false;
            code.push(c);
            code.push(*s.get(i + 1).ok_or("a backtick at the end")?);
            i += 2;
            word_start = false;
        } else {
            in_literal = false;
            code.push(c);
            i += 1;
            word_start =
                c.is_whitespace() || matches!(c, ';' | '|' | '&' | '(' | ')' | '{' | '}' | '=' | ',');
        }
    }
    Ok(Lexed { code, bodies })
}

fn check_posix(fixed: &Fixed, info: &ConnectionInfo, creds: &Credentials, script: &str, known_hosts: &str) {
    let lexed = lex_sh(script).unwrap_or_else(|err| panic!("sh would not read the script as meant ({err})"));
    assert_eq!(lexed.code, fixed.posix_code, "the script's code differs from the template's");
    // The bodies: the key, the known_hosts lines, the ssh_config.
    assert_eq!(lexed.bodies.len(), 3);
    assert_eq!(
        script.lines().filter(|l| *l == HEREDOC_END).count(),
        3,
        "here-documents end only where meant"
    );
    let key = creds.private_key_openssh().expect("key");
    assert_eq!(lexed.bodies[0], *key.expose());
    assert_eq!(lexed.bodies[1], known_hosts);
    check_ssh_config(info, &lexed.bodies[2], false, None);
    assert_eq!(shape(&lexed.bodies[2]), fixed.posix_config_shape);
    // The quoted words mean what they must.
    let cd = script.lines().find_map(|l| l.trim_start().strip_prefix("cd_command=")).expect("cd_command");
    check_cd(&sh_word(cd).expect("cd_command is one quoted word"), &info.build_dir);
    let banner = script.lines().find_map(|l| l.strip_prefix("echo ")?.strip_suffix(" >&2")).expect("banner");
    let banner = sh_word(banner).expect("the banner is one quoted word");
    assert!(banner.starts_with(&format!("remote-access: build {} through ", info.build_id)), "{banner:?}");
}

fn check_powershell(
    fixed: &Fixed,
    info: &ConnectionInfo,
    creds: &Credentials,
    script: &str,
    known_hosts: &str,
) {
    let lexed = lex_powershell(script)
        .unwrap_or_else(|err| panic!("PowerShell would not read the script as meant ({err})"));
    assert_eq!(lexed.code, fixed.powershell_code, "the script's code differs from the template's");
    assert_eq!(lexed.bodies.len(), 3);
    let key = creds.private_key_openssh().expect("key");
    assert_eq!(lexed.bodies[0], key.expose().replace('\n', "\r\n"));
    assert_eq!(lexed.bodies[1], known_hosts.replace('\n', "\r\n"));
    let config = lexed.bodies[2].replace("\r\n", "\n");
    assert!(!config.contains('\r'));
    check_ssh_config(info, &config, true, None);
    assert_eq!(shape(&config), fixed.powershell_config_shape);
    let line = |prefix: &str| {
        script
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(|w| w.trim_end_matches('\r').to_owned()))
    };
    let cd = ps_word(&line("$cdCommand = ").expect("$cdCommand")).expect("$cdCommand is one quoted string");
    check_cd(&cd, &info.build_dir);
    let banner = ps_word(&line("Write-Host ").expect("Write-Host")).expect("the banner is one quoted string");
    assert!(banner.starts_with(&format!("remote-access: build {} through ", info.build_id)), "{banner:?}");
}
