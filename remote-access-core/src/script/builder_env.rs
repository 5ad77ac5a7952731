//! The builder-side kit: what a user's SSH session on the builder knows about the build.
//!
//! The gateway only forwards the bytes of that session, which is encrypted end to end from the
//! user's `ssh` to the builder's sshd, so it can write nothing into the user's shell. Instead the
//! platform keeps two files current on the builder ([`BuildEnvironment::write`]): `env.sh`, the
//! variables the build exported, and `deadline`, when access ends; a profile script installed
//! on the builder image ([`BuildEnvironment::profile_script`]) reads them in every shell the
//! user opens. See `docs/builder-kit.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroize;

use super::quote;
use crate::error::{Error, Result};

/// The profile script; a file of its own so that `sh -n` and editors read it as shell.
const PROFILE_SCRIPT: &str = include_str!("builder_profile.sh");

/// The files in the kit's directory, as the profile script names them.
const ENV_FILE: &str = "env.sh";
const DEADLINE_FILE: &str = "deadline";
/// The builder sshd's `Banner`: the SSH authentication banner every login to the builder shows
/// (the gateway's own banner cannot name the build's deadline).
const BANNER_FILE: &str = "banner";

/// Limits that keep `env.sh` quick to source at every prompt and every command.
const MAX_NAME: usize = 128;
const MAX_VALUE: usize = 128 * 1024;
const MAX_TOTAL: usize = 1024 * 1024;
/// The rule shares a line with the time at login; longer text would wrap into noise.
const MAX_RULE_CHARS: usize = 240;

/// The first line of `env.sh`, before its digest: the profile script applies the file again
/// only when this line changes.
const ENV_HEADER: &str = "# remote-access environment sha256:";

/// The names the kit never exports (separated by spaces), each list with the reason a user is
/// told.
const REFUSED: &[(&str, &str)] = &[
    (
        "HOME SHELL USER LOGNAME USERNAME MAIL PWD OLDPWD SHLVL _ TERM COLUMNS LINES SSH_AUTH_SOCK \
         SSH_AGENT_PID SSH_CLIENT SSH_CONNECTION SSH_TTY SSH_ORIGINAL_COMMAND SSH_USER_AUTH \
         XDG_RUNTIME_DIR XDG_SESSION_ID",
        "describes the user's own login and terminal, which sshd and the login shell set for each session",
    ),
    (
        "BASH_ENV ENV ZDOTDIR PROMPT_COMMAND PS0 PS1 PS2 PS3 PS4 PROMPT PROMPT2 PROMPT3 PROMPT4 RPROMPT \
         RPS1 RPROMPT2 RPS2 IFS CDPATH SHELLOPTS BASHOPTS POSIXLY_CORRECT GLOBIGNORE TMOUT FPATH \
         MODULE_PATH",
        "steers the user's shell (its start files, prompt, parsing or logout) rather than the build's programs",
    ),
    (
        // zsh's UID and friends call setuid(); its lowercase arrays are tied to PATH and others.
        "UID EUID GID EGID PPID BASHPID LINENO RANDOM SRANDOM SECONDS EPOCHSECONDS EPOCHREALTIME \
         HISTCMD OPTIND OPTARG OPTERR GROUPS argv status pipestatus path fpath cdpath manpath mailpath \
         module_path psvar signals",
        "is special or read-only in bash or zsh: exporting it would fail (ending a `set -e` script) or \
         change the shell itself",
    ),
];

/// Prefixes of names the kit never exports, with the reason.
const REFUSED_PREFIXES: &[(&str, &str)] = &[
    ("REMOTE_ACCESS_", "names starting with REMOTE_ACCESS_ are the kit's own"),
    ("BASH_", "names starting with BASH_ are bash's own"),
    ("ZSH_", "names starting with ZSH_ are zsh's own"),
    ("LD_", "the dynamic loader reads LD_ variables for every program the user runs (ssh, sudo, the shell)"),
    (
        "DYLD_",
        "the dynamic loader reads DYLD_ variables for every program the user runs (ssh, sudo, the shell)",
    ),
];

/// What the users' shells on a builder learn about the build: the variables it exported, which
/// of them are secret, and when remote access ends. The platform (or its agent on the builder)
/// fills one in and [writes](BuildEnvironment::write) it to the kit's directory whenever the
/// build's environment or the deadline changes; the [profile
/// script](BuildEnvironment::profile_script) on the builder image shows it in the user's
/// shell.
///
/// `PATH` is exported like any other variable: rerunning the build's commands needs the tools
/// the build put on it, and the user, who controls the builder anyway, gains nothing by it.
/// Names that describe the login (`HOME`, `USER`, `TERM`, ...), steer the shell (`PS1`,
/// `PROMPT_COMMAND`, `BASH_ENV`, `IFS`, ...) or the dynamic loader (`LD_*`, `DYLD_*`), or
/// are special in bash or zsh (`UID`, ...), are refused by [`set`](BuildEnvironment::set) and
/// left out by [`set_all`](BuildEnvironment::set_all).
///
/// `Debug` shows names only, never values.
///
/// ```
/// # use remote_access_core::BuildEnvironment;
/// let mut env = BuildEnvironment::new();
/// env.set("FCI_BUILD_DIR", "/Users/builder/clone")?;
/// env.set("API_TOKEN", "s3cr3t")?;
/// env.secret("API_TOKEN")?; // never written: `# API_TOKEN: left out (secret)`
/// env.deadline(Some(time::macros::datetime!(2026-05-04 12:20 UTC)))?;
/// env.rule("until 20 minutes after the build steps complete, and never after 13:40 UTC");
/// assert!(!format!("{env:?}").contains("s3cr3t"));
/// let dir = std::env::temp_dir().join(format!("remote-access-doc-{}", std::process::id()));
/// env.write(&dir)?; // dir/env.sh and dir/deadline
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct BuildEnvironment {
    variables: BTreeMap<String, String>,
    secrets: BTreeSet<String>,
    deadline: Option<OffsetDateTime>,
    rule: String,
    /// Bytes of names and values held, against [`MAX_TOTAL`].
    size: usize,
}

impl BuildEnvironment {
    /// An empty environment without a deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exports `name` with `value` in the users' shells (replacing an earlier value). The name
    /// is a shell identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes) that the kit does
    /// not refuse (see the type's documentation); the value is any text without a NUL, at most
    /// 128 KiB, and all names and values together at most 1 MiB. A name marked
    /// [`secret`](BuildEnvironment::secret) is accepted and not kept.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        check_name(name)?;
        if let Some(reason) = refusal(name) {
            return Err(Error::invalid(
                "environment variable name",
                format!("{name}: {reason}; the remote access kit does not export it"),
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(
                "environment variable value",
                format!("{name} contains a NUL byte, which no environment variable can hold"),
            ));
        }
        if value.len() > MAX_VALUE {
            return Err(Error::invalid(
                "environment variable value",
                format!("{name} is {} bytes; at most {MAX_VALUE} are written", value.len()),
            ));
        }
        if self.secrets.contains(name) {
            return Ok(());
        }
        let replaced = self.variables.get(name).map_or(0, |old| name.len() + old.len());
        let size = self.size - replaced + name.len() + value.len();
        if size > MAX_TOTAL {
            return Err(Error::invalid(
                "environment size",
                format!("adding {name} makes the environment {size} bytes; at most {MAX_TOTAL} are written"),
            ));
        }
        self.variables.insert(name.to_owned(), value.to_owned());
        self.size = size;
        Ok(())
    }

    /// Exports every variable of a whole environment (as `std::env::vars()` or a build
    /// agent's map of it yields them) that the kit may export, and returns the names it left
    /// out: those that are no shell identifier, or that [`set`](BuildEnvironment::set) refuses
    /// (`HOME`, `PWD`, `SHLVL`, ... are in every environment). A value `set` refuses is an
    /// error; variables before it are kept.
    pub fn set_all<I, N, V>(&mut self, variables: I) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut left_out = Vec::new();
        for (name, value) in variables {
            let name = name.as_ref();
            if check_name(name).is_err() || refusal(name).is_some() {
                left_out.push(name.to_owned());
                continue;
            }
            self.set(name, value.as_ref())?;
        }
        Ok(left_out)
    }

    /// Marks `name` secret: its value is never written, now or if set later, and `env.sh` says
    /// `# NAME: left out (secret)` so that a user who misses it knows why. Call it for every
    /// variable the platform keeps secret (signing keys, tokens), before or after setting it.
    pub fn secret(&mut self, name: &str) -> Result<()> {
        check_name(name)?;
        if self.secrets.contains(name) {
            return Ok(());
        }
        // Known secret now: wiped rather than left in freed memory.
        let freed = self.variables.remove(name).map_or(0, |mut value| {
            let len = value.len();
            value.zeroize();
            name.len() + len
        });
        // The comment line costs its name.
        let size = self.size - freed + name.len();
        if size > MAX_TOTAL {
            return Err(Error::invalid(
                "environment size",
                format!(
                    "marking {name} secret makes the environment {size} bytes; at most {MAX_TOTAL} are written"
                ),
            ));
        }
        self.secrets.insert(name.to_owned());
        self.size = size;
        Ok(())
    }

    /// When remote access ends at the latest (`None`: not known, and the `deadline` file is
    /// removed). Give it the session's deadline ([`Session::deadline`](crate::Session::deadline))
    /// when the build is issued and every `deadline_changed` event's afterwards. Written to the
    /// second; times before 1970 or after 9999 are refused.
    pub fn deadline(&mut self, at: Option<OffsetDateTime>) -> Result<()> {
        if let Some(at) = at
            && (at.unix_timestamp() <= 0 || utc(at).is_none_or(|at| at.year() > 9999))
        {
            return Err(Error::invalid("deadline", "must be after 1970 and before the year 10000"));
        }
        self.deadline = at;
        Ok(())
    }

    /// The rule in words, shown with the time at login (e.g. "until 20 minutes after the build
    /// steps complete, and never after 13:40 UTC"); empty for none. Kept to one line of
    /// printable text: control and bidirectional-formatting characters become spaces, and it
    /// is cut at 240 characters.
    pub fn rule(&mut self, text: &str) {
        self.rule = one_line(text);
    }

    /// Writes `env.sh`, `deadline` and `banner` into `dir` (created, mode 755, if missing; its
    /// parent must exist), each replaced atomically (a new file of mode 644 in `dir`, synced,
    /// renamed over the old one, so a shell reads the old file or the new one, never half of
    /// either). `banner` is the builder sshd's `Banner` (an SSH authentication banner shown at
    /// every login: when access ends, and that logging out finishes the build). Without a
    /// deadline `deadline` and `banner` are removed.
    ///
    /// Every login shell sources `env.sh`, so whoever may write to `dir` runs code in the
    /// users' shells: a `dir` that its group or others may write is refused.
    pub fn write(&self, dir: &Path) -> Result<()> {
        prepare_dir(dir)?;
        replace_file(dir, ENV_FILE, self.env_script().as_bytes())?;
        match (self.deadline_text()?, self.banner_text()?) {
            (Some(deadline), Some(banner)) => {
                replace_file(dir, DEADLINE_FILE, deadline.as_bytes())?;
                replace_file(dir, BANNER_FILE, banner.as_bytes())
            }
            _ => {
                for file in [DEADLINE_FILE, BANNER_FILE] {
                    match fs::remove_file(dir.join(file)) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(file_error(&dir.join(file), "cannot remove", &err)),
                    }
                }
                sync_dir(dir)
            }
        }
    }

    /// The builder's SSH banner: when access ends, the rule, and what logging out does.
    fn banner_text(&self) -> Result<Option<String>> {
        let Some(at) = self.deadline else { return Ok(None) };
        let at = utc(at).ok_or_else(|| Error::invalid("deadline", "out of range in UTC"))?;
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
        let when = at.format(&format).map_err(|err| Error::invalid("deadline", err.to_string()))?;
        let rule = if self.rule.is_empty() { String::new() } else { format!(" Access lasts {}.", self.rule) };
        Ok(Some(format!(
            "remote-access: access to this build ends at {when}.{rule}\n\
             Logging out (exit) after the build steps completed finishes the build.\n"
        )))
    }

    /// The kit's profile script (POSIX sh), for the builder image: installed as
    /// `/etc/profile.d/remote-access.sh`, sourced from the first line of `/etc/bash.bashrc`
    /// (bash run by sshd for a command reads that, not `BASH_ENV`) and from `/etc/zshenv`, and
    /// named in `BASH_ENV` and `ENV` (sshd's `SetEnv`) for other shells; see
    /// `docs/builder-kit.md`. It reads `${REMOTE_ACCESS_DIR:-/run/remote-access}`: it sources
    /// `env.sh` (in a session's first shell, and at a prompt after the file changed) and reads
    /// `deadline` as text only; interactive shells say when access ends, and bash and zsh show
    /// the minutes left in front of the prompt. Missing files are no error, in dash, bash and
    /// zsh, under `set -eu` too.
    pub fn profile_script() -> &'static str {
        PROFILE_SCRIPT
    }

    /// The text of `env.sh`: the digest line, a comment, then one `export NAME='value'` line
    /// per variable and one comment per secret, by name.
    fn env_script(&self) -> String {
        let mut body = String::with_capacity(self.size + 64 * (self.variables.len() + 4));
        body.push_str(
            "# The build's environment for SSH sessions on this builder, written by remote-access\n\
             # and applied by its profile script (remote-access builder-env --print-profile).\n\
             # Rewritten while the build runs: do not edit.\n",
        );
        let names: BTreeSet<&String> = self.variables.keys().chain(self.secrets.iter()).collect();
        for name in names {
            match self.variables.get(name) {
                Some(value) => {
                    let _ = writeln!(body, "export {name}={}", quote::sh(value));
                }
                None => {
                    let _ = writeln!(body, "# {name}: left out (secret)");
                }
            }
        }
        let digest = Sha256::digest(body.as_bytes());
        let mut text = String::with_capacity(body.len() + ENV_HEADER.len() + 66);
        text.push_str(ENV_HEADER);
        for byte in &digest[..16] {
            let _ = write!(text, "{byte:02x}");
        }
        text.push('\n');
        text.push_str(&body);
        text
    }

    /// The text of `deadline`: Unix seconds, RFC 3339 in UTC, the rule (each on a line).
    fn deadline_text(&self) -> Result<Option<String>> {
        let Some(at) = self.deadline else { return Ok(None) };
        let at = utc(at).ok_or_else(|| Error::invalid("deadline", "out of range in UTC"))?;
        let at = at.replace_nanosecond(0).unwrap_or(at);
        let rfc3339 = at.format(&Rfc3339).map_err(|err| Error::invalid("deadline", err.to_string()))?;
        Ok(Some(format!("{}\n{rfc3339}\n{}\n", at.unix_timestamp(), self.rule)))
    }
}

impl fmt::Debug for BuildEnvironment {
    /// Names only: values may be tokens the platform did not mark secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildEnvironment")
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets)
            .field("deadline", &self.deadline)
            .field("rule", &self.rule)
            .finish()
    }
}

/// `at` in UTC, if that is a time `time` can hold (`to_offset` would panic).
fn utc(at: OffsetDateTime) -> Option<OffsetDateTime> {
    at.checked_to_offset(time::UtcOffset::UTC)
}

/// A shell identifier of at most [`MAX_NAME`] bytes.
fn check_name(name: &str) -> Result<()> {
    let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !identifier {
        return Err(Error::invalid(
            "environment variable name",
            format!(
                "{:?} is not a shell identifier (letters, digits and _, not starting with a digit)",
                name.chars().take(MAX_NAME).collect::<String>()
            ),
        ));
    }
    if name.len() > MAX_NAME {
        return Err(Error::invalid(
            "environment variable name",
            format!("{}... is {} bytes; at most {MAX_NAME}", &name[..32], name.len()),
        ));
    }
    Ok(())
}

/// Why the kit does not export `name`, if it does not.
fn refusal(name: &str) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(names, _)| names.split_ascii_whitespace().any(|refused| refused == name))
        .map(|(_, reason)| *reason)
        .or_else(|| REFUSED_PREFIXES.iter().find(|(prefix, _)| name.starts_with(prefix)).map(|(_, why)| *why))
}

/// `text` as one line of printable characters, at most [`MAX_RULE_CHARS`].
fn one_line(text: &str) -> String {
    let printable = text.chars().map(|c| if c.is_control() || is_invisible_format(c) { ' ' } else { c });
    let mut line = String::new();
    for word in printable.collect::<String>().split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    match line.char_indices().nth(MAX_RULE_CHARS) {
        Some((cut, _)) => {
            line.truncate(cut);
            line.push_str("...");
            line
        }
        None => line,
    }
}

/// Line and paragraph separators, zero-width and bidirectional formatting characters: a
/// terminal shows them as nothing, or reorders the text around them.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// `dir` exists (created if missing) as a directory only its owner may write.
fn prepare_dir(dir: &Path) -> Result<()> {
    let what = "builder environment directory";
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
                .map_err(|err| Error::invalid(what, format!("cannot create {}: {err}", dir.display())))?;
            return Ok(());
        }
        Err(err) => return Err(Error::invalid(what, format!("cannot read {}: {err}", dir.display()))),
    };
    if !meta.is_dir() {
        return Err(Error::invalid(what, format!("{} is not a directory", dir.display())));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(Error::invalid(
            what,
            format!(
                "{} may be written by its group or others (mode {:o}), and every login shell sources \
                 env.sh from it; chmod go-w it",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically: a new file beside it, synced, then renamed over
/// it (which replaces a symbolic link there rather than writing through it).
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    let (temp, mut file) = create_temp(dir, name)?;
    let written = file
        .write_all(bytes)
        // The mode the profile script's readers need, whatever the umask.
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o644)))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, &target));
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(file_error(&target, "cannot write", &err));
    }
    sync_dir(dir)
}

/// A new file `dir/.name.PID.N` (never an existing one, nor through a link).
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{}.{n}", std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(file_error(&path, "cannot create", &err)),
        }
    }
    let err = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(file_error(&dir.join(name), "cannot create a temporary file for", &err))
}

/// Makes a rename or removal in `dir` durable. Some file systems cannot sync a directory;
/// the rename itself has happened either way, so that is no error.
fn sync_dir(dir: &Path) -> Result<()> {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// A file the kit could not write, as the caller's directory problem to fix.
fn file_error(path: &Path, doing: &str, err: &io::Error) -> Error {
    Error::invalid("builder environment directory", format!("{doing} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn kit_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// `$NAME` as `shell` reads it after sourcing `env.sh` under `set -eu`.
    fn read_back(shell: &str, dir: &Path, name: &str) -> Vec<u8> {
        let out = Command::new(shell)
            .arg("-c")
            .arg(format!("set -eu; . ./env.sh; printf %s \"${name}\""))
            .current_dir(dir)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {shell}: {err}"));
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    #[test]
    fn values_read_back_exactly_and_nothing_in_them_runs() {
        let dir = kit_dir();
        let canary = dir.path().join("ran");
        let c = canary.display();
        let values = [
            ("QUOTES", "it's \"quoted\" and 'again' ''".to_owned()),
            ("NEWLINES", "line 1\nline 2\r\n\n".to_owned()),
            ("DOLLARS", format!("$HOME ${{HOME}} $(touch {c}) $((1+1)) $'x' \\$")),
            ("BACKTICKS", format!("`touch {c}` \\` \\\\")),
            ("UNICODE", "ünïcödé ‘’ “” 日本 🚀 \u{202E}".to_owned()),
            ("GLOBS", "* ? [a] ~ ! # ; & | < > { } ( )".to_owned()),
            ("EMPTY", String::new()),
            ("SPACES", "  leading and trailing  ".to_owned()),
            ("path_like", "/opt/flutter/bin:/usr/bin".to_owned()),
        ];
        let mut env = BuildEnvironment::new();
        for (name, value) in &values {
            env.set(name, value).unwrap();
        }
        env.write(dir.path()).unwrap();
        for shell in ["sh", "bash"] {
            for (name, value) in &values {
                assert_eq!(read_back(shell, dir.path(), name), value.as_bytes(), "{shell} {name}");
            }
        }
        assert!(!canary.exists(), "a value was executed");
        let text = fs::read_to_string(dir.path().join(ENV_FILE)).unwrap();
        let exports: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("export ")).collect();
        let names: Vec<&str> = exports.iter().filter_map(|l| l.split('=').next()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "sorted by name");
        assert!(text.contains(r"export QUOTES='it'\''s"), "{text}");
    }

    #[test]
    fn names_must_be_identifiers_the_kit_may_export() {
        let mut env = BuildEnvironment::new();
        for bad in ["", "1A", "A-B", "A B", "A=B", "Ä", "A\n", "$A", &"A".repeat(129)] {
            let err = env.set(bad, "x").unwrap_err();
            assert!(matches!(err, Error::InvalidInput { what: "environment variable name", .. }), "{bad:?}");
        }
        for refused in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "ENV",
            "PROMPT_COMMAND",
            "PS1",
            "IFS",
            "SHELLOPTS",
            "BASHOPTS",
            "HOME",
            "SHELL",
            "USER",
            "LOGNAME",
            "REMOTE_ACCESS_DIR",
            "REMOTE_ACCESS_ENV",
            "UID",
            "TMOUT",
            "TERM",
            "path",
            "_",
        ] {
            let err = env.set(refused, "x").unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid environment variable name: {refused}: ")), "{err}");
            assert!(err.contains("does not export it"), "{err}");
        }
        for fine in
            ["PATH", "FCI_BUILD_DIR", "_private", "a1", "http_proxy", "LANG", "DISPLAY", &"A".repeat(128)]
        {
            env.set(fine, "x").unwrap();
        }
        let err = env.set("ANDROID_HOME", &"x".repeat(MAX_VALUE + 1)).unwrap_err().to_string();
        assert!(err.contains("ANDROID_HOME is 131073 bytes; at most 131072"), "{err}");
        let err = env.set("NUL", "a\0b").unwrap_err().to_string();
        assert!(err.contains("NUL byte"), "{err}");
    }

    #[test]
    fn the_whole_environment_is_bounded() {
        let mut env = BuildEnvironment::new();
        let value = "v".repeat(MAX_VALUE - 8);
        for i in 0..8 {
            env.set(&format!("BIG_{i}"), &value).unwrap();
        }
        let err = env.set("BIG_8", &value).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "environment size", .. }), "{err}");
        // Replacing a value counts the new one only; marking one secret frees its value.
        env.set("BIG_0", "small").unwrap();
        env.set("BIG_8", &value).unwrap();
        env.secret("BIG_1").unwrap();
        env.set("BIG_9", &value).unwrap();
    }

    #[test]
    fn set_all_leaves_out_what_the_kit_never_exports() {
        let mut env = BuildEnvironment::new();
        let left_out = env
            .set_all([
                ("HOME", "/root"),
                ("FCI_BUILD_DIR", "/b"),
                ("BASH_FUNC_f%%", "() { :; }"),
                ("PWD", "/b"),
                ("PATH", "/opt/bin:/usr/bin"),
            ])
            .unwrap();
        assert_eq!(left_out, ["HOME", "BASH_FUNC_f%%", "PWD"]);
        assert_eq!(format!("{env:?}").matches("\"FCI_BUILD_DIR\"").count(), 1);
        assert!(env.set_all([("OK", "a"), ("BAD", "\0")]).is_err());
    }

    #[test]
    fn secrets_are_left_out_with_a_comment_and_never_shown() {
        let dir = kit_dir();
        let mut env = BuildEnvironment::new();
        env.set("SIGNING_KEY", "hunter2-before").unwrap();
        env.secret("SIGNING_KEY").unwrap();
        env.secret("API_TOKEN").unwrap();
        env.set("API_TOKEN", "hunter2-after").unwrap();
        env.set("VISIBLE", "shown-value").unwrap();
        assert!(env.secret("not a name").is_err());
        let debug = format!("{env:?}");
        for value in ["hunter2", "shown-value"] {
            assert!(!debug.contains(value), "{debug}");
        }
        assert!(debug.contains("VISIBLE") && debug.contains("API_TOKEN"), "{debug}");
        env.write(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(ENV_FILE)).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\n# API_TOKEN: left out (secret)\n"), "{text}");
        assert!(text.contains("\n# SIGNING_KEY: left out (secret)\n"), "{text}");
        assert_eq!(read_back("sh", dir.path(), "VISIBLE"), b"shown-value");
        let out = Command::new("sh")
            .arg("-c")
            .arg(". ./env.sh; printf %s \"${API_TOKEN-unset}${SIGNING_KEY-unset}\"")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"unsetunset");
    }

    #[test]
    fn files_are_replaced_atomically_never_written_through_a_link() {
        let dir = kit_dir();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(ENV_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(DEADLINE_FILE)).unwrap();

        let mut env = BuildEnvironment::new();
        env.set("FIRST", "1").unwrap();
        env.deadline(Some(time::macros::datetime!(2026-05-04 12:20:30.75 UTC))).unwrap();
        env.rule("until 20 minutes after\nthe build steps complete\u{1b}[31m \u{202E}ok");
        env.write(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        for file in [ENV_FILE, DEADLINE_FILE] {
            let meta = fs::symlink_metadata(dir.path().join(file)).unwrap();
            assert!(meta.file_type().is_file(), "{file} is a regular file now");
            assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{file}");
        }
        let deadline = fs::read_to_string(dir.path().join(DEADLINE_FILE)).unwrap();
        assert_eq!(
            deadline,
            "1777897230\n2026-05-04T12:20:30Z\nuntil 20 minutes after the build steps complete [31m ok\n"
        );
        let first = fs::read_to_string(dir.path().join(ENV_FILE)).unwrap();

        // A rewrite replaces the file; an unchanged environment keeps its digest line.
        env.write(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(ENV_FILE)).unwrap(), first);
        env.set("SECOND", "2").unwrap();
        env.deadline(None).unwrap();
        env.write(dir.path()).unwrap();
        let second = fs::read_to_string(dir.path().join(ENV_FILE)).unwrap();
        assert_ne!(first.lines().next(), second.lines().next(), "the digest line changes with the content");
        assert!(first.starts_with(ENV_HEADER) && second.contains("export SECOND='2'\n"), "{second}");
        assert!(!dir.path().join(DEADLINE_FILE).exists(), "no deadline, no file");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [ENV_FILE], "no temporary file left behind");
    }

    #[test]
    fn the_directory_must_be_one_only_its_owner_writes() {
        let parent = kit_dir();
        let env = BuildEnvironment::new();
        // Missing: created, mode 755.
        let created = parent.path().join("run");
        env.write(&created).unwrap();
        assert_eq!(fs::metadata(&created).unwrap().permissions().mode() & 0o777, 0o755);
        // A file is no directory.
        let file = parent.path().join("file");
        fs::write(&file, "").unwrap();
        let err = env.write(&file).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        // Writable by others: refused.
        let open = parent.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = env.write(&open).unwrap_err().to_string();
        assert!(err.contains("chmod go-w"), "{err}");
        assert!(!open.join(ENV_FILE).exists());
        // No parent: not created.
        assert!(env.write(&parent.path().join("no/such")).is_err());
    }

    #[test]
    fn deadlines_outside_what_the_file_can_say_are_refused() {
        let mut env = BuildEnvironment::new();
        assert!(env.deadline(Some(OffsetDateTime::UNIX_EPOCH)).is_err());
        assert!(env.deadline(Some(time::macros::datetime!(1969-12-31 23:59 UTC))).is_err());
        // In UTC this is in the year 10000: refused, not a panic.
        assert!(env.deadline(Some(time::macros::datetime!(9999-12-31 23:00 -05:00))).is_err());
        let later = time::macros::datetime!(2026-05-04 14:20 +02:00);
        env.deadline(Some(later)).unwrap();
        assert_eq!(env.deadline_text().unwrap().unwrap(), "1777897200\n2026-05-04T12:20:00Z\n\n");
    }

    #[test]
    fn rules_are_one_short_line() {
        assert_eq!(one_line("  a\tb\r\nc\u{2028}d\u{200B}e  "), "a b c d e");
        let long = one_line(&"é".repeat(500));
        assert_eq!(long.chars().count(), MAX_RULE_CHARS + 3);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn the_profile_script_parses_in_every_shell_it_is_for() {
        for shell in ["sh", "bash"] {
            let out = Command::new(shell).arg("-n").arg("-c").arg(PROFILE_SCRIPT).output().unwrap();
            assert!(out.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(PROFILE_SCRIPT.contains("${REMOTE_ACCESS_DIR:-/run/remote-access}"));
        assert!(PROFILE_SCRIPT.contains(ENV_FILE) && PROFILE_SCRIPT.contains("/deadline"));
    }
}
