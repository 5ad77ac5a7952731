//! The builder kit (`docs/builder-kit.md`) from the platform's side: the build's environment
//! and the deadline, written for the users' shells on the builder when the build is issued,
//! and again when the authority says the deadline moved (the steps completed).
//!
//! Run: `cargo run -p remote-access-examples --bin builder-env [DIR]` (default: a new directory
//! under the system's temporary directory), then see what a user's shell makes of it:
//!
//! ```sh
//! remote-access builder-env --print-profile > /tmp/remote-access.sh
//! REMOTE_ACCESS_DIR=DIR bash --noprofile --rcfile /tmp/remote-access.sh -i
//! ```

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use remote_access_core::{
    Authority, AuthorityOptions, BuildEnvironment, BuildId, BuildRequest, EventKind, Trigger,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join(format!("remote-access-kit-{}", std::process::id()));
            std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
            dir
        }
    };
    let authority = Authority::new(AuthorityOptions::default())?;
    let mut events = authority.subscribe();
    let build_id = BuildId::new("build-1001")?;
    authority.issue(BuildRequest::new(build_id.clone(), Trigger::Manual, true)).await?;

    // What the agent on the builder knows of the build's environment (here made up: a real
    // agent reads it from the build, e.g. `env -0` at the end of each step), and which of
    // the variables the platform keeps secret.
    let mut env = BuildEnvironment::new();
    let left_out = env.set_all([
        ("FCI_BUILD_DIR", "/Users/builder/clone"),
        ("FLUTTER_ROOT", "/Users/builder/programs/flutter"),
        ("PATH", "/Users/builder/programs/flutter/bin:/usr/local/bin:/usr/bin:/bin"),
        ("RELEASE_NOTES", "Fixes the 'login' screen\nand the $PRICE label"),
        ("KEYSTORE_PASSWORD", "never written"),
        ("HOME", "/Users/builder"),
    ])?;
    env.secret("KEYSTORE_PASSWORD")?;
    println!("left out, as the login's own: {left_out:?}");

    // At issue: the session's deadline (its maximum duration while the steps run).
    let session = authority.session(&build_id).await?;
    env.deadline(Some(session.deadline()))?;
    env.rule(&session.access_rule());
    env.write(&dir)?;
    println!("written to {}: {env:?}", dir.display());

    // Later the steps complete, and the deadline moves: write it again.
    authority.steps_completed(&build_id).await?;
    while let Some(event) = events.try_next() {
        if let EventKind::DeadlineChanged { deadline } = event.kind {
            env.deadline(Some(deadline))?;
            env.rule(&authority.session(&build_id).await?.access_rule());
            env.write(&dir)?;
            println!("{event}");
        }
    }
    for file in ["env.sh", "deadline"] {
        println!("--- {}\n{}", dir.join(file).display(), std::fs::read_to_string(dir.join(file))?);
    }
    Ok(())
}
