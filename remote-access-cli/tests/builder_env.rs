//! `remote-access builder-env` as a platform's agent runs it on a builder: the files it writes
//! read back in a real `sh`, what it leaves out and why, its exit codes; and `--print-profile`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use remote_access_core::BuildEnvironment;
use remote_access_test_peers::Run;

/// `remote-access builder-env ARGS` with `stdin`: (exit code, stdout, stderr).
fn builder_env(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remote-access"))
        .arg("builder-env")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `$name` after `sh` sourced `dir/env.sh` under `set -eu`.
fn read_back(dir: &Path, name: &str) -> String {
    let out: Output = Command::new("sh")
        .arg("-c")
        .arg(format!("set -eu; . ./env.sh; printf %s \"${{{name}-unset}}\""))
        .current_dir(dir)
        .finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A directory for the kit that only its owner writes.
fn kit_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn print_profile_prints_the_script_to_install() {
    let (code, stdout, stderr) = builder_env(&["--print-profile"], b"");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, BuildEnvironment::profile_script());
    let (code, _, stderr) = builder_env(&["--print-profile", "--dir", "/tmp"], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("--print-profile takes no other option"), "{stderr}");
}

#[test]
fn a_whole_environment_from_env_0_is_written_without_what_the_kit_never_exports() {
    let kit = kit_dir();
    let run = kit.path().join("run");
    // What an agent captures from the build: `env -0`, a real one.
    let captured = Command::new("env")
        .args(["-i", "HOME=/root", "PWD=/b", "FCI_BUILD_DIR=/b/clone", "NOTES=line 1\nline 2 'q' $(x)"])
        .args(["PATH=/opt/flutter/bin:/usr/bin", "SIGNING_KEY=hunter2", "env", "-0"])
        .finish();
    assert!(captured.status.success());
    let file = kit.path().join("build.env");
    std::fs::write(&file, &captured.stdout).unwrap();

    let (code, stdout, stderr) = builder_env(
        &[
            "--dir",
            run.to_str().unwrap(),
            "--env-file",
            file.to_str().unwrap(),
            "--env",
            "EXTRA=from --env",
            "--env=FCI_BUILD_DIR=/b/clone 2",
            "--secret",
            "SIGNING_KEY",
            "--deadline",
            "2026-05-04T14:20:00+02:00",
            "--rule",
            "until 20 minutes after the build steps complete",
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "remote-access builder-env: left out (the kit never exports them): \"HOME\" \"PWD\"\n"
    );
    assert_eq!(read_back(&run, "NOTES"), "line 1\nline 2 'q' $(x)");
    assert_eq!(read_back(&run, "PATH"), "/opt/flutter/bin:/usr/bin");
    assert_eq!(read_back(&run, "FCI_BUILD_DIR"), "/b/clone 2", "--env wins over the file");
    assert_eq!(read_back(&run, "EXTRA"), "from --env");
    assert_eq!(read_back(&run, "SIGNING_KEY"), "unset");
    let env_sh = std::fs::read_to_string(run.join("env.sh")).unwrap();
    assert!(
        env_sh.contains("\n# SIGNING_KEY: left out (secret)\n") && !env_sh.contains("hunter2"),
        "{env_sh}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("deadline")).unwrap(),
        "1777897200\n2026-05-04T12:20:00Z\nuntil 20 minutes after the build steps complete\n"
    );

    // The next run replaces everything: no --deadline, no deadline file.
    let (code, _, stderr) =
        builder_env(&["--dir", run.to_str().unwrap(), "--env-file", "-"], b"ONE=1\nTWO=a=b\n\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!((read_back(&run, "TWO"), read_back(&run, "NOTES")), ("a=b".into(), "unset".into()));
    assert!(!run.join("deadline").exists());
}

#[test]
fn refused_input_exits_2_and_an_unwritable_directory_1() {
    let kit = kit_dir();
    let dir = kit.path().to_str().unwrap();
    for (args, said) in [
        (
            &["--env", "HOME=/x"][..],
            "invalid environment variable name: HOME: describes the user's own login",
        ),
        (&["--env", "LD_PRELOAD=/x.so"], "invalid environment variable name: LD_PRELOAD: the dynamic loader"),
        (&["--env", "NOEQUALS"], "--env takes NAME=VALUE, not \"NOEQUALS\""),
        (&["--env", "1X=y"], "\"1X\" is not a shell identifier"),
        (&["--deadline", "in 20 minutes"], "--deadline takes an RFC 3339 time"),
        (&["--secret", "A B"], "\"A B\" is not a shell identifier"),
    ] {
        let mut words = vec!["--dir", dir];
        words.extend_from_slice(args);
        let (code, _, stderr) = builder_env(&words, b"");
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = builder_env(&[], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("--dir is required") && stderr.contains("usage: remote-access builder-env"));
    assert!(!stderr.contains("Redis"), "builder-env takes no Redis options: {stderr}");

    // `env` output with a multi-line value cannot be read line by line: said, not guessed.
    let (code, _, stderr) = builder_env(&["--dir", dir, "--env-file", "-"], b"A=1\nB=two\nlines\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("-: record 3 is not NAME=VALUE") && stderr.contains("env -0"), "{stderr}");
    assert!(!kit.path().join("env.sh").exists(), "nothing written on refused input");

    std::fs::set_permissions(kit.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, stderr) = builder_env(&["--dir", dir, "--env", "A=1"], b"");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");
}
