//! The generated connection scripts: written to disk, run to their end or held open. They run
//! the real `ssh` client, so each run first checks that it is installed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

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

/// A command on the builder that answers each line it reads, through the script: a user's
/// live session through the gateway.
pub struct EchoSession {
    child: tokio::process::Child,
    input: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl EchoSession {
    /// Returns once the builder answered through it.
    pub async fn open(script: &std::path::Path) -> EchoSession {
        let mut child = script_command(script)
            .arg("echo ready; while read line; do echo \"got $line\"; done")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .start();
        let input = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut echo = EchoSession { child, input: Some(input), lines };
        assert_eq!(echo.line().await.as_deref(), Some("ready"), "the session came up");
        echo
    }

    /// The next line it prints (`None` once it is gone).
    pub async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await.unwrap().unwrap()
    }

    /// Sends `text` and returns the answer (`None` once the session is gone).
    pub async fn say(&mut self, text: &str) -> Option<String> {
        self.input.as_mut()?.write_all(format!("{text}\n").as_bytes()).await.ok()?;
        self.line().await
    }

    /// Ends the command (its input closed), as `exit` in a shell: `ssh`'s exit status.
    pub async fn exit(mut self) -> std::process::ExitStatus {
        drop(self.input.take());
        while self.line().await.is_some() {}
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.unwrap().unwrap()
    }
}
