//! The generated connection scripts: written to disk, run to their end or held open. They run
//! the real `ssh` client, so each run first checks that it is installed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::programs::{RunAsync, require};

/// Writes a script (mode 600, a new file) and returns its path; for keys and configurations too.
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    path
}

/// `sh SCRIPT`, to which a test adds the remote command; panics, saying how to install it, when
/// `ssh` (which the script runs) is missing.
///
/// It runs with SIGINT at its default, as from a terminal, whatever the test runner inherited:
/// a runner started in the background of a non-interactive shell (`.ci/run &`) ignores SIGINT,
/// every child inherits that, and ssh keeps an inherited `SIG_IGN` (clientloop.c installs its
/// handler only `if (ssh_signal(SIGINT, SIG_IGN) != SIG_IGN)`), so a test's Ctrl-C would do
/// nothing. coreutils' `env --default-signal` resets it for what it runs.
#[track_caller]
pub fn script_command(script: &Path) -> tokio::process::Command {
    require("ssh");
    let mut cmd = tokio::process::Command::new("env");
    cmd.args(["--default-signal=INT", "sh"]).arg(script);
    cmd
}

/// Runs a generated POSIX script with arguments; returns (exit code, stdout, stderr).
pub async fn run_script(path: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        script_command(path).args(args).stdin(Stdio::null()).finish(),
    )
    .await
    .expect("the script finishes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a script that keeps its connection open (`sleep`), to be cut; returns once the
/// builder has answered through it, so the connection is fully up.
pub async fn start_long_script(script: &Path) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = script_command(script)
        .arg("echo ready; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .start();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert!(matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"), "the long script came up: {ready:?}");
    child
}

/// Waits for a process to exit; returns its code and stderr.
pub async fn exit_of(mut child: tokio::process::Child) -> (i32, String) {
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the connection was cut")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    (status.code().unwrap_or(-1), stderr)
}
