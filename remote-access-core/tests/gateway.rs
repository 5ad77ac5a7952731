//! The SSH gateway against real peers: the real `ssh` client runs the generated script through
//! the gateway to a real `sshd` playing the builder.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use remote_access_core::{AuthorityOptions, ConnectionInfo, ScriptOptions};
use tokio::process::Command;

/// Runs a generated POSIX script with arguments; returns (exit code, stdout, stderr).
async fn run_script(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("sh")
            .arg(path)
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the script finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_script_runs_commands_on_the_builder_in_the_build_directory() {
    let builder = Sshd::start();
    let authority = authority(AuthorityOptions::default());
    let gateway = gateway(&authority);
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let creds = authority
        .issue(request("e2e-1", builder.builder()))
        .await
        .unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let session = authority.session(creds.build_id()).await.unwrap();
    let options = ScriptOptions::new("127.0.0.1", running.local_addr().port());
    let info = ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let script = write_script(
        scratch.path(),
        "connect.sh",
        info.posix_script(&creds).unwrap().expose(),
    );

    let (code, stdout, stderr) = run_script(&script, &["printenv FCI_BUILD_DIR; pwd"]).await;
    assert_eq!(
        code,
        0,
        "stdout: {stdout}\nstderr: {stderr}\nsshd: {}",
        builder.log()
    );
    let build_dir = builder.build_dir.display().to_string();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [build_dir.as_str(), build_dir.as_str()]
    );
    assert!(stderr.contains("access ends by"), "{stderr}");
    running.stop().await.unwrap();
}
