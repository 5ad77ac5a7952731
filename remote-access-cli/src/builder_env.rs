//! `remote-access builder-env`: on the builder, writes what the users' SSH sessions show of the
//! build (its environment, when access ends) for the kit's profile script, or prints that
//! script for the builder image (`docs/builder-kit.md`). Needs no Redis: the platform's agent
//! runs it on the builder whenever the build's environment or the deadline changes.

use std::io::Read;

use remote_access_core::BuildEnvironment;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::args::{Args, Spec, Usage};
use crate::{Failure, Outcome};

pub(crate) const SUMMARY: &str = "on a builder: write the build's environment and deadline for users' shells";

pub(crate) const USAGE: &str = "usage: remote-access builder-env --dir DIR [OPTIONS]\n\
     \x20      remote-access builder-env --print-profile\n\n\
     Writes DIR/env.sh (the build's variables, as `export NAME='value'` lines) and DIR/deadline\n\
     (when remote access ends) for the profile script that --print-profile prints, which the\n\
     builder image installs: /etc/profile.d, the top of /etc/bash.bashrc, /etc/zshenv, sshd's\n\
     SetEnv BASH_ENV and ENV (docs/builder-kit.md). Each run replaces both files with what it\n\
     is given: pass the whole environment and the current deadline every time (no --deadline\n\
     removes the deadline file). Every login shell sources env.sh, so DIR (created if missing)\n\
     must be writable by its owner only. Secret variables are left out, with a comment saying\n\
     so.\n\n\
     options:\n\
     \x20 --dir DIR                  the kit's directory (the profile reads /run/remote-access\n\
     \x20                            unless REMOTE_ACCESS_DIR names another)\n\
     \x20 --env NAME=VALUE           a variable to export (repeat); names the kit never exports\n\
     \x20                            (HOME, PS1, LD_PRELOAD, ...) are refused\n\
     \x20 --env-file FILE            variables as `env -0` prints them (NAME=VALUE records ending in\n\
     \x20                            NUL), or one NAME=VALUE per line without any NUL (values cannot\n\
     \x20                            hold a newline then); `-` reads stdin. Names the kit never\n\
     \x20                            exports are left out and listed on stderr. --env wins\n\
     \x20 --secret NAME              a variable never to write (repeat), e.g. signing keys, tokens\n\
     \x20 --deadline TIME            when access ends at the latest, RFC 3339 (2026-05-04T12:20:00Z)\n\
     \x20 --rule TEXT                that rule in words, shown with the time at login\n\
     \x20 --print-profile            print the profile script to install, and nothing else\n";

pub(crate) const SPEC: Spec = Spec {
    values: &["dir", "env", "env-file", "secret", "deadline", "rule"],
    switches: &["print-profile"],
    positional: 0,
    store: false,
};

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    if args.switch("print-profile") {
        if SPEC.values.iter().any(|name| args.value(name).is_some()) {
            return Err(Usage("--print-profile takes no other option".into()).into());
        }
        print!("{}", BuildEnvironment::profile_script());
        return Ok(());
    }
    let dir = args.required("dir")?;
    let mut env = BuildEnvironment::new();
    let mut left_out = Vec::new();
    for file in args.values("env-file") {
        left_out.extend(env.set_all(env_file(file)?)?);
    }
    for pair in args.values("env") {
        let (name, value) =
            pair.split_once('=').ok_or_else(|| Usage(format!("--env takes NAME=VALUE, not {pair:?}")))?;
        env.set(name, value)?;
    }
    for name in args.values("secret") {
        env.secret(name)?;
    }
    if let Some(text) = args.value("deadline") {
        let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            Usage(format!("--deadline takes an RFC 3339 time (2026-05-04T12:20:00Z), not {text:?}"))
        })?;
        env.deadline(Some(at))?;
    }
    if let Some(rule) = args.value("rule") {
        env.rule(rule);
    }
    if !left_out.is_empty() {
        left_out.sort();
        left_out.dedup();
        eprintln!(
            "remote-access builder-env: left out (the kit never exports them): {}",
            left_out.iter().map(|name| format!("{name:?}")).collect::<Vec<_>>().join(" ")
        );
    }
    // A directory or file that cannot be written is this machine's problem (exit 1), not input.
    env.write(std::path::Path::new(dir)).map_err(|err| Failure::Other(err.to_string()))
}

/// The `NAME=VALUE` records of `path` (`-`: stdin): NUL-terminated if the file holds a NUL,
/// else one per line. A record that is not UTF-8 is left out under its name, as text.
fn env_file(path: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut bytes))
    };
    read.map_err(|err| Failure::Other(format!("cannot read {path}: {err}")))?;
    let separator = if bytes.contains(&0) { 0 } else { b'\n' };
    let mut records = Vec::new();
    for (n, record) in bytes.split(|b| *b == separator).enumerate() {
        if record.is_empty() {
            continue;
        }
        let Some(eq) = record.iter().position(|b| *b == b'=') else {
            let hint = if separator == b'\n' {
                " (a value with a newline? write the file with `env -0`)"
            } else {
                ""
            };
            return Err(Usage(format!("{path}: record {} is not NAME=VALUE{hint}", n + 1)).into());
        };
        let (name, value) = (&record[..eq], &record[eq + 1..]);
        match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Ok(name), Ok(value)) => records.push((name.to_owned(), value.to_owned())),
            // Named, so set_all leaves it out and says which; a value that is not text cannot
            // be shown in a shell as the build had it anyway.
            _ => records.push((format!("{} (not UTF-8)", String::from_utf8_lossy(name)), String::new())),
        }
    }
    Ok(records)
}
