//! Starting the external programs the tests run, or failing with which one is missing and how to
//! install it. Every start goes through [`started`]: a newcomer's plain `cargo test` either works
//! or names what to install; it never skips a test and never dies on a bare `unwrap`.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

/// Where `./scripts/test` puts the Python tools (vncdotool): its `bin` goes on `PATH`.
const TEST_VENV: &str = "~/.cache/remote-access/test-venv";

/// How to install `program` (a name or a path).
fn how_to_install(program: &str) -> String {
    let name = Path::new(program).file_name().and_then(OsStr::to_str).unwrap_or(program);
    let package = match name {
        "sshd" => "openssh-server",
        "ssh" | "ssh-keygen" => "openssh-client",
        "Xvfb" => "xvfb",
        "x11vnc" => "x11vnc",
        "Xtigervnc" => "tigervnc-standalone-server",
        "vncpasswd" => "tigervnc-tools",
        "vncsnapshot" => "vncsnapshot",
        "xtigervncviewer" => "tigervnc-viewer",
        "gvnccapture" | "gvncviewer" => "gvncviewer",
        "chromium" => "chromium",
        "novnc" => "novnc",
        "websockify" => "websockify",
        "xwd" => "x11-apps",
        "xsetroot" => "x11-xserver-utils",
        "openssl" => "openssl",
        "redis-server" => "redis-server",
        "redis-cli" => "redis-tools",
        "bash" => "bash",
        "sh" => "dash",
        "kill" => "procps",
        "dbclient" | "dropbearconvert" => "dropbear-bin",
        "plink" | "puttygen" => "putty-tools",
        "curl" => "curl",
        "systemd-analyze" => "systemd",
        "haproxy" => "haproxy",
        "python3" => "python3",
        "python3-paramiko" => "python3-paramiko",
        "vncdo" => {
            return format!(
                "`pip install vncdotool==1.4.2` (into a virtual environment), or put \
                 {TEST_VENV}/bin on PATH if `./scripts/test` has created it"
            );
        }
        "ssh-audit" => {
            return format!(
                "`pip install ssh-audit==3.9.0` (into a virtual environment), or put {TEST_VENV}/bin \
                 on PATH if `./scripts/test` has created it"
            );
        }
        "paramiko" => {
            return format!(
                "`pip install paramiko==5.1.0` into the virtual environment {TEST_VENV} (or the one \
                 REMOTE_ACCESS_TEST_VENV names)"
            );
        }
        _ => return "your system's package manager".to_owned(),
    };
    format!("`apt-get install {package}` (Debian)")
}

/// What a test says when it cannot run `program`.
pub(crate) fn missing(program: &str, why: &dyn std::fmt::Display) -> String {
    format!(
        "cannot run `{program}` ({why}): the tests run it as a real peer.\n\
         Install it with {}.\n\
         `./scripts/test` installs every program the tests need (Debian packages, and vncdotool \
         into {TEST_VENV}) and then runs all the checks.",
        how_to_install(program)
    )
}

/// The result of starting `program`; a panic that names the program and how to install it when
/// it could not be started.
#[track_caller]
fn started<T>(program: &OsStr, result: io::Result<T>) -> T {
    match result {
        Ok(started) => started,
        Err(err) => panic!("{}", missing(&program.to_string_lossy(), &err)),
    }
}

/// Panics, naming `program` and how to install it, unless it is on `PATH` (or, given as a path,
/// exists). For programs that something else runs: the generated scripts run `ssh`.
#[track_caller]
pub fn require(program: &str) {
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(Path::new(program))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
    };
    if !found {
        panic!("{}", missing(program, &"not found on PATH"));
    }
}

/// Starting a program the tests need (`std::process`): a missing one fails the test with its name
/// and how to install it.
pub trait Run {
    /// `spawn`, or a panic naming the program and how to install it.
    fn start(&mut self) -> std::process::Child;
    /// `output` (run to its end, stdout and stderr captured), or the same panic.
    fn finish(&mut self) -> Output;
}

impl Run for std::process::Command {
    #[track_caller]
    fn start(&mut self) -> std::process::Child {
        let result = self.spawn();
        started(self.get_program(), result)
    }

    #[track_caller]
    fn finish(&mut self) -> Output {
        let result = self.output();
        started(self.get_program(), result)
    }
}

/// [`Run`] for `tokio::process`.
pub trait RunAsync {
    /// `spawn`, or a panic naming the program and how to install it.
    fn start(&mut self) -> tokio::process::Child;
    /// `output` (run to its end, stdout and stderr captured), or the same panic.
    fn finish(&mut self) -> impl Future<Output = Output> + Send;
}

impl RunAsync for tokio::process::Command {
    #[track_caller]
    fn start(&mut self) -> tokio::process::Child {
        let result = self.spawn();
        started(self.as_std().get_program(), result)
    }

    async fn finish(&mut self) -> Output {
        let result = self.output().await;
        started(self.as_std().get_program(), result)
    }
}

/// Runs a command to its end (60 s at most, stdin closed); returns (exit code, stdout, stderr).
pub async fn output_of(cmd: &mut tokio::process::Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.stdin(Stdio::null()).finish())
        .await
        .expect("finishes");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named_with_how_to_install_it() {
        let panic = std::panic::catch_unwind(|| {
            let _ = std::process::Command::new("vncdo-not-installed-here").start().wait();
        })
        .unwrap_err();
        let text = panic.downcast_ref::<String>().unwrap();
        assert!(text.starts_with("cannot run `vncdo-not-installed-here`"), "{text}");
        assert!(text.contains("./scripts/test"), "{text}");
        assert!(missing("vncdo", &"gone").contains("pip install vncdotool==1.4.2"));
        assert!(missing("/usr/sbin/sshd", &"gone").contains("apt-get install openssh-server"));
    }

    #[test]
    fn require_finds_programs_on_the_path() {
        require("sh");
        require("/bin/sh");
        assert!(std::panic::catch_unwind(|| require("not-a-program-anywhere")).is_err());
    }
}
