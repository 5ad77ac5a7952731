//! What the commands share for their output: JSON for scripts (`--json`), aligned text for
//! people, files only their owner can read for secrets.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Prints `value` as pretty JSON, one document.
pub(crate) fn json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Prints `label: value` lines, aligned.
pub(crate) fn lines(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    for (label, value) in rows {
        println!("{:<width$} {value}", format!("{label}:"));
    }
}

/// A time as RFC 3339, to the second.
pub(crate) fn time(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339).unwrap_or_default()
}

/// Creates `dir` (mode 700) if it does not exist; refuses one others can read.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(std::io::Error::other(format!(
                    "{} is readable by others (mode {:o}): use a private directory (chmod 700)",
                    dir.display(),
                    mode & 0o777
                )));
            }
            Ok(())
        }
        Err(err) => Err(std::io::Error::new(err.kind(), format!("cannot create {}: {err}", dir.display()))),
    }
}

/// Writes `bytes` to a new file `path` of mode 600; an existing file is not overwritten.
pub(crate) fn private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|err| {
            std::io::Error::new(err.kind(), format!("cannot create {}: {err}", path.display()))
        })?;
    file.write_all(bytes)
}
