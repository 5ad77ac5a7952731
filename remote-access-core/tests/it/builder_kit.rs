//! The builder-side kit on a real builder: the profile script installed on a real sshd as an
//! image installs it (a line at the top of the bashrc, `SetEnv BASH_ENV=... ENV=...`), its files
//! written by `BuildEnvironment::write`, and a user who logs in through a real gateway with the
//! generated script and the real `ssh`. Also the interactive shells themselves (bash's prompt,
//! dash's greeting) without a gateway, and the script's harmlessness when its files are missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use remote_access_core::{
    Authority, AuthorityOptions, BuildEnvironment, Credentials, EventKind, RunningGateway,
};
use remote_access_test_peers::*;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::builds::*;

/// The kit as an image installs it: the profile script, the line that sources it at the top
/// of a bashrc, and the directory the platform's agent writes (mode 755, as
/// `BuildEnvironment::write` requires).
struct Kit {
    dir: tempfile::TempDir,
    profile: PathBuf,
    run: PathBuf,
    /// A home whose `.bashrc` sources the kit: the tests may not edit root's own, nor
    /// `/etc/bash.bashrc`, where an image puts that line.
    home: PathBuf,
}

impl Kit {
    fn install() -> Kit {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let profile = dir.path().join("remote-access.sh");
        std::fs::write(&profile, BuildEnvironment::profile_script()).unwrap();
        let run = dir.path().join("run");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join(".bashrc"), format!(". '{}'\n", profile.display())).unwrap();
        Kit { dir, profile, run, home }
    }

    /// An sshd whose sessions get the kit. bash run by sshd for a command reads the bashrc
    /// files instead of BASH_ENV (Debian's, and any bash whose stdin is a socket), hence the
    /// home; BASH_ENV and ENV reach the other shells. Its `Banner` is the kit's.
    fn sshd(&self) -> Sshd {
        let profile = self.profile.to_str().unwrap();
        let run = self.run.to_str().unwrap();
        let home = self.home.to_str().unwrap();
        Sshd::start_with(
            "127.0.0.1",
            &[("BASH_ENV", profile), ("ENV", profile), ("REMOTE_ACCESS_DIR", run), ("HOME", home)],
            &format!("Banner {run}/banner\n"),
        )
    }
}

/// A value that a shell would run or split if it were not quoted exactly, with `canary` as
/// the file it would create.
fn hostile_value(canary: &Path) -> String {
    let c = canary.display();
    format!("it's \"quoted\" $(touch {c}) `touch {c}` $HOME\nsecond line ünï 🚀 \\ '' end")
}

/// `HH:MM` of `at` in UTC, as the kit says it.
fn hh_mm(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// The minutes of every `(remote access: N min left)` tag in `text`, in order.
fn minutes_shown(text: &str) -> Vec<i64> {
    text.split("(remote access: ")
        .skip(1)
        .filter_map(|rest| rest.split_once(" min left)"))
        .map(|(n, _)| n.parse().unwrap())
        .collect()
}

/// A build on the kit's sshd behind a running gateway, and its connection script.
struct Build {
    builder: Sshd,
    authority: Authority,
    running: RunningGateway,
    creds: Credentials,
    scratch: tempfile::TempDir,
    script: PathBuf,
}

impl Build {
    async fn issue(kit: &Kit, id: &str) -> Build {
        let builder = kit.sshd();
        let authority = authority(AuthorityOptions::default());
        let gateway = gateway(&authority);
        let running = gateway.start("127.0.0.1:0").await.unwrap();
        let creds = authority.issue(request(id, builder.builder())).await.unwrap();
        builder.authorize(&creds.authorized_keys_line());
        let scratch = tempfile::tempdir().unwrap();
        let port = running.local_addr().port();
        let script = posix_script(&authority, &gateway, port, &creds, scratch.path(), "connect.sh").await;
        Build { builder, authority, running, creds, scratch, script }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_gateway_see_the_builds_environment_but_not_its_secrets() {
    let kit = Kit::install();
    let Build { builder, authority, running, creds, scratch, script } = Build::issue(&kit, "kit-1").await;

    // The build's own directory, not the one sshd names: the generated script's `cd` must see
    // the build's FCI_BUILD_DIR, so BASH_ENV ran before it.
    let build_dir = scratch.path().join("it's the build");
    std::fs::create_dir(&build_dir).unwrap();
    let canary = scratch.path().join("executed");
    let hostile = hostile_value(&canary);
    let mut env = BuildEnvironment::new();
    env.set("FCI_BUILD_DIR", build_dir.to_str().unwrap()).unwrap();
    env.set("HOSTILE", &hostile).unwrap();
    env.set("SIGNING_KEY", "hunter2-never-shown").unwrap();
    env.secret("SIGNING_KEY").unwrap();
    let session = authority.session(creds.build_id()).await.unwrap();
    env.deadline(Some(session.deadline())).unwrap();
    env.write(&kit.run).unwrap();

    let command =
        "pwd; printenv HOSTILE; printenv SIGNING_KEY || echo no-signing-key; cd \"$FCI_BUILD_DIR\" && pwd";
    let (code, stdout, stderr) = run_script(&script, &[command]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}\nsshd: {}", builder.log());
    let dir = build_dir.display();
    assert_eq!(stdout, format!("{dir}\n{hostile}\nno-signing-key\n{dir}\n"), "stderr: {stderr}");
    assert!(!stderr.contains("remote access ends"), "no greeting for a command: {stderr}");
    // The builder sshd's banner, from the kit's file: the build's own deadline, at every login.
    let deadline = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    let banner = format!("access to this build ends at {}", session.deadline().format(&deadline).unwrap());
    assert!(
        stderr.contains(&banner) && stderr.contains("finishes the build"),
        "the builder's banner: {stderr}"
    );
    assert!(!canary.exists(), "a value was executed");
    let env_sh = std::fs::read_to_string(kit.run.join("env.sh")).unwrap();
    assert!(env_sh.contains("\n# SIGNING_KEY: left out (secret)\n") && !env_sh.contains("hunter2"));

    // A variable the build exports later reaches the next login.
    let (_, stdout, _) = run_script(&script, &["printenv LATE || echo unset"]).await;
    assert_eq!(stdout, "unset\n");
    env.set("LATE", "exported after the first login").unwrap();
    env.write(&kit.run).unwrap();
    let (code, stdout, stderr) = run_script(&script, &["printenv LATE"]).await;
    assert_eq!((code, stdout.as_str()), (0, "exported after the first login\n"), "{stderr}");
    assert!(!canary.exists(), "a value was executed");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_interactive_session_picks_up_new_variables_and_the_new_deadline_at_the_next_prompt() {
    let kit = Kit::install();
    let Build { builder: _builder, authority, running, creds, scratch: _scratch, script } =
        Build::issue(&kit, "kit-2").await;
    let mut events = authority.subscribe();

    // What the platform's agent writes when the build is issued: the maximum duration bounds
    // access while the steps run.
    let mut env = BuildEnvironment::new();
    env.set("EARLY", "from the start").unwrap();
    let first_deadline = authority.session(creds.build_id()).await.unwrap().deadline();
    env.deadline(Some(first_deadline)).unwrap();
    env.rule("until 20 minutes after the build steps complete");
    env.write(&kit.run).unwrap();

    // An interactive bash that reads the kit as a login shell would (`--rcfile`: no terminal
    // here, so no login shell of the image's own); its prompts and greeting go to stderr.
    let mut child = script_command(&script)
        .arg("exec bash --noprofile --rcfile \"$BASH_ENV\" -i")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .start();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.unwrap().unwrap().unwrap()
    };

    stdin.write_all(b"printenv EARLY; printenv LATE || echo unset\n").await.unwrap();
    assert_eq!(next_line().await, "from the start");
    assert_eq!(next_line().await, "unset");

    // The steps complete while the user is logged in: the agent hears of the new deadline
    // and writes it with a variable the build exported at its end.
    authority.steps_completed(creds.build_id()).await.unwrap();
    let changed = next_event(&mut events, "deadline_changed").await;
    let EventKind::DeadlineChanged { deadline } = changed.kind else { panic!("{changed:?}") };
    assert!(deadline < first_deadline);
    env.deadline(Some(deadline)).unwrap();
    env.set("LATE", "exported after the login").unwrap();
    env.write(&kit.run).unwrap();

    // Any command (here an empty line) brings the next prompt, which applies both.
    stdin.write_all(b"\nprintenv LATE\n").await.unwrap();
    assert_eq!(next_line().await, "exported after the login");
    stdin.write_all(b"exit\n").await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    let stderr = stderr.await.unwrap();
    assert!(status.success(), "{stderr}");

    // The greeting named the first deadline; the prompts counted down from it, then from the
    // new one (minutes are rounded up, and a loaded machine may take a few).
    let greeting = format!("remote access ends at {} UTC (in ", hh_mm(first_deadline));
    assert!(stderr.contains(&greeting), "{stderr}");
    assert!(stderr.contains("until 20 minutes after the build steps complete"), "{stderr}");
    let shown = minutes_shown(&stderr);
    assert!(shown.len() >= 3, "a tag at every prompt: {stderr}");
    let (first, last) = (shown[0], shown[shown.len() - 1]);
    assert!((100..=120).contains(&first), "{shown:?}");
    assert!((1..=20).contains(&last), "{shown:?}");
    next_event(&mut events, "finish_build").await;
    running.stop().await.unwrap();
}

/// How each shell runs interactively with the kit: dash reads `ENV`; bash, which reads `ENV`
/// only as `sh`, is given it as its rc file (a login shell would read it from profile.d).
fn interactive<'a>(kit: &'a Kit, program: &str) -> Vec<&'a str> {
    match program {
        "bash" => vec!["--noprofile", "--rcfile", kit.profile.to_str().unwrap(), "-i"],
        _ => vec!["-i"],
    }
}

/// Runs `shell ARGS` in `kit`'s environment with `input` on stdin: (success, stdout, stderr).
async fn shell(kit: &Kit, program: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(kit.dir.path())
        .env("REMOTE_ACCESS_DIR", &kit.run)
        .env("ENV", &kit.profile)
        .env("BASH_ENV", &kit.profile)
        .env_remove("REMOTE_ACCESS_ENV")
        .env_remove("PROMPT_COMMAND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .start();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shells_show_the_time_left_and_the_prompt_counts_down() {
    let kit = Kit::install();
    let deadline = OffsetDateTime::now_utc() + Duration::from_secs(20 * 60);
    let mut env = BuildEnvironment::new();
    env.set("FROM_BUILD", "yes").unwrap();
    env.deadline(Some(deadline)).unwrap();
    env.rule("until 20 minutes after the build steps complete, and never after 13:40 UTC");
    env.write(&kit.run).unwrap();
    let greeting = format!(
        "remote access ends at {} UTC (in 20 min): until 20 minutes after the build steps complete, and never \
         after 13:40 UTC\nLogging out (exit) after the build steps have completed finishes the build.\n",
        hh_mm(deadline)
    );

    // bash: the greeting once, the tag in front of the prompt the user already had, `$?`
    // untouched for the user's own prompt commands.
    let (ok, stdout, stderr) = shell(
        &kit,
        "bash",
        &interactive(&kit, "bash"),
        "printenv FROM_BUILD\nfalse\necho \"status $?\"\nexit\n",
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "yes\nstatus 1\n");
    assert_eq!(stderr.matches("remote access ends at").count(), 1, "{stderr}");
    let shown = minutes_shown(&stderr);
    assert!(shown.len() >= 4 && shown.iter().all(|n| (1..=20).contains(n)), "{shown:?} in {stderr}");
    assert!(!stderr.contains(" min left) \n"), "the user's own prompt follows the tag: {stderr}");
    assert!(!stderr.contains("left) (remote access"), "one tag per prompt: {stderr}");
    // The greeting is whole (with a terminal (20 min) would be exact; on a loaded machine the
    // minute may have turned).
    let said = greeting.replace("(in 20 min)", &format!("(in {} min)", shown[0]));
    assert!(stderr.contains(&said) || stderr.contains(&greeting), "{stderr}");

    // dash has no prompt hook: the greeting and the environment only.
    let (ok, stdout, stderr) =
        shell(&kit, "sh", &interactive(&kit, "sh"), "printenv FROM_BUILD\nexit\n").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "yes\n");
    assert!(stderr.contains(&format!("remote access ends at {} UTC (in ", hh_mm(deadline))), "{stderr}");

    // A passed deadline says so.
    env.deadline(Some(OffsetDateTime::now_utc() - Duration::from_secs(60))).unwrap();
    env.write(&kit.run).unwrap();
    let (ok, _, stderr) = shell(&kit, "bash", &interactive(&kit, "bash"), "exit\n").await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("remote access ended at ") && stderr.contains("(remote access ended) "),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_harmless_without_its_files_and_under_set_eu() {
    let kit = Kit::install();
    let profile = kit.profile.to_str().unwrap();
    let sourced = format!("set -eu; . '{profile}'; echo \"still here ${{REMOTE_ACCESS_ENV-unset}}\"");
    for program in ["sh", "bash"] {
        // No directory at all.
        let (ok, stdout, stderr) = shell(&kit, program, &["-c", &sourced], "").await;
        assert!(ok && stdout == "still here \n" && stderr.is_empty(), "{program}: {stdout} {stderr}");
        let (ok, _, stderr) = shell(&kit, program, &interactive(&kit, program), "exit\n").await;
        assert!(ok && !stderr.contains("remote access"), "{program}: {stderr}");
    }
    // bash reads BASH_ENV before a `-eu` script's first line.
    let (ok, stdout, stderr) = shell(&kit, "bash", &["-eu", "-c", "echo ran"], "").await;
    assert!(ok && stdout == "ran\n" && stderr.is_empty(), "{stdout} {stderr}");

    // An empty environment and a deadline file that is not one: still nothing goes wrong.
    BuildEnvironment::new().write(&kit.run).unwrap();
    std::fs::write(kit.run.join("deadline"), "$(touch x)\n`touch x`\n\n").unwrap();
    for program in ["sh", "bash"] {
        let (ok, stdout, stderr) = shell(&kit, program, &["-c", &sourced], "").await;
        assert!(
            ok && stdout.starts_with("still here # remote-access environment sha256:"),
            "{stdout} {stderr}"
        );
        let (ok, _, stderr) = shell(&kit, program, &interactive(&kit, program), "exit\n").await;
        assert!(ok && !stderr.contains("remote access"), "{program}: {stderr}");
    }
    assert!(!kit.dir.path().join("x").exists(), "the deadline file was executed");

    // A script that changes a variable the build exported keeps its value in the shells it
    // starts: only a session's first shell applies env.sh.
    let mut env = BuildEnvironment::new();
    env.set("TOOL_HOME", "/from/the/build").unwrap();
    env.write(&kit.run).unwrap();
    let (ok, stdout, stderr) = shell(
        &kit,
        "bash",
        &["-c", "echo $TOOL_HOME; TOOL_HOME=/mine; export TOOL_HOME; bash -c 'echo $TOOL_HOME'"],
        "",
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "/from/the/build\n/mine\n");
}
