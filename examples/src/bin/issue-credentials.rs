//! Issues remote access credentials for one build and walks its session through the time
//! rules: the user connects, the steps complete, the user logs out, the build is finished.
//!
//! Run: `cargo run -p remote-access-examples --bin issue-credentials [BUILD_ID]`
//!
//! Nothing secret is printed: the private key is written to a file only its owner can read
//! (and removed at the end), and the VNC password is shown only as its length.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use remote_access_core::{Authority, AuthorityOptions, BuildId, BuildRequest, Protocol, Trigger};
use time::format_description::well_known::Rfc3339;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let build_id = BuildId::new(std::env::args().nth(1).unwrap_or_else(|| "build-1001".into()))?;
    let authority = Authority::new(AuthorityOptions::default())?;
    let mut events = authority.subscribe();

    let credentials = authority.issue(BuildRequest::new(build_id.clone(), Trigger::Manual, true)).await?;
    let dir = TempDir::create()?;
    let key_path = dir.0.join("id_ed25519");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)?
        .write_all(credentials.private_key_openssh()?.expose().as_bytes())?;

    let session = authority.session(&build_id).await?;
    println!("build:              {}", credentials.build_id());
    println!("gateway username:   {}", credentials.username());
    println!("key fingerprint:    {}", credentials.fingerprint());
    println!("private key file:   {} (mode 600)", key_path.display());
    println!("builder authorized_keys line:\n  {}", credentials.authorized_keys_line());
    println!(
        "vnc password:       {} characters (Credentials::vnc_password)",
        credentials.vnc_password().expose().len()
    );
    println!("access:             {}", session.access_rule());
    println!("deadline:           {}", session.deadline().format(&Rfc3339)?);

    // What the gateway would do when the user logs in and out.
    authority.verify_ssh(credentials.username(), credentials.public_key()).await?;
    let connection = authority.connected(&build_id, Protocol::Ssh).await?;
    authority.steps_completed(&build_id).await?;
    connection.disconnect().await?;

    println!("events:");
    while let Some(event) = events.try_next() {
        println!("  {:<16} {}", event.kind.as_str(), event.reason);
    }
    let refused = authority.verify_ssh(credentials.username(), credentials.public_key()).await;
    println!(
        "login after logout: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted (bug!)".into())
    );
    Ok(())
}

/// A private directory for the key file, removed when dropped, even on an early error.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn create() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("remote-access-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
