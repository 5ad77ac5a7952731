//! Quoting and validation for every value that goes into a generated script or config.
//!
//! Values are checked first (hosts, users, paths) and then quoted for the one language that
//! reads them; nothing is ever spliced in raw.

use crate::error::{Error, Result};

/// `'...'` for POSIX sh: nothing inside single quotes is special except `'` itself.
pub(crate) fn sh(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `'...'` for PowerShell, which also treats the typographic single quotes as quotes.
pub(crate) fn powershell(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A value for an `ssh_config` line: `%` starts a token there, so it is doubled.
pub(crate) fn ssh_config_tokens(text: &str) -> String {
    text.replace('%', "%%")
}

/// A DNS name (letters, digits, `-`, dots) or an IP address; nothing a shell or config could
/// read as syntax.
pub(crate) fn check_host(what: &'static str, host: &str) -> Result<()> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if labels_ok { Ok(()) } else { Err(Error::invalid(what, "not a DNS name or IP address")) }
}

/// The build directory: `$NAME` (an environment variable on the builder) or a path without
/// control characters.
pub(crate) fn check_build_dir(dir: &str) -> Result<()> {
    if dir.is_empty() || dir.len() > 1024 {
        return Err(Error::invalid("build_dir", "must be 1 to 1024 bytes"));
    }
    if dir.chars().any(char::is_control) {
        return Err(Error::invalid("build_dir", "must not contain control characters"));
    }
    // The directory goes, single-quoted, into the ssh_config's `RemoteCommand`.
    if has_ssh_config_escape(dir) {
        return Err(Error::invalid(
            "build_dir",
            "must not have a backslash before a backslash, a quote or the end",
        ));
    }
    Ok(())
}

/// Whether OpenSSH would read a backslash in `text` as an escape on an `ssh_config` line: its
/// parser (`argv_split`) takes a backslash before a backslash or a quote as an escape, inside
/// quotes too. Such a value reads back as another one, or, with a backslash before a closing
/// quote, makes ssh refuse the whole file ("invalid quotes").
pub(crate) fn has_ssh_config_escape(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), None | Some('\\' | '\'' | '"')) {
            return true;
        }
    }
    false
}

/// The shell command, run by the builder's login shell, that enters the build directory.
pub(crate) fn cd_command(dir: &str) -> String {
    match env_var(dir) {
        // Expanded on the builder; with the variable unset, stay in the home directory.
        Some(name) => format!(r#"cd -- "${{{name}:-$HOME}}""#),
        None => format!("cd -- {}", sh(dir)),
    }
}

/// `NAME` when `dir` is exactly `$NAME` or `${NAME}` with a valid variable name.
fn env_var(dir: &str) -> Option<&str> {
    let name = dir.strip_prefix("${").and_then(|d| d.strip_suffix('}')).or_else(|| dir.strip_prefix('$'))?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh("a'b"), r"'a'\''b'");
        assert_eq!(powershell("it's ‘x’"), "'it''s ‘‘x’’'");
        assert_eq!(cd_command("$FCI_BUILD_DIR"), r#"cd -- "${FCI_BUILD_DIR:-$HOME}""#);
        assert_eq!(cd_command("${X_1}"), r#"cd -- "${X_1:-$HOME}""#);
        assert_eq!(cd_command("$(rm -rf ~)"), r"cd -- '$(rm -rf ~)'");
        assert_eq!(ssh_config_tokens("50%"), "50%%");
    }

    #[test]
    fn backslashes_that_ssh_config_would_read_as_escapes() {
        for escape in [r"C:\build\", r"a\\b", r"it\'s", r#"a\"b"#] {
            assert!(has_ssh_config_escape(escape), "{escape}");
            assert!(check_build_dir(escape).is_err(), "{escape}");
        }
        for fine in [r"C:\Users\me", r"\ back", "/home/x"] {
            assert!(!has_ssh_config_escape(fine), "{fine}");
            assert!(check_build_dir(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn hosts() {
        for good in ["gw.example.com", "localhost", "10.0.0.1", "::1", "fd00::5", "a-b.c"] {
            assert!(check_host("host", good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a;b", "a..b", "x\n", "'", "a_b", "[::1]"] {
            assert!(check_host("host", bad).is_err(), "{bad:?}");
        }
    }
}
