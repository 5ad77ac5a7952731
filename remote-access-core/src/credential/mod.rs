//! Per-build credentials: generated fresh for each build, handed to the platform once.

mod generate;

pub(crate) use generate::{Generated, GeneratedAgent, generate, generate_agent, password_digest};

use std::fmt;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;

use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// One build's credentials, as issued: an Ed25519 key pair for SSH (gateway and builder), a
/// gateway username, and a VNC password.
///
/// This is the only place the private key exists; the store keeps just the public half. Drop
/// it once the user has their connection script: the key is zeroized on drop. `Debug` shows
/// only public parts.
pub struct Credentials {
    pub(crate) build_id: BuildId,
    pub(crate) username: String,
    pub(crate) key: PrivateKey,
    pub(crate) public_key: String,
    pub(crate) fingerprint: String,
    pub(crate) vnc_password: Secret<String>,
    /// Only for builds reached by a reverse tunnel.
    pub(crate) agent: Option<GeneratedAgent>,
}

impl Credentials {
    pub(crate) fn new(build_id: BuildId, generated: Generated) -> Result<Self> {
        let Generated { username, key, fingerprint, vnc_password } = generated;
        let public_key = key.public_key().to_openssh().map_err(Error::key_material)?;
        Ok(Self { build_id, username, key, public_key, fingerprint, vnc_password, agent: None })
    }

    /// The build these credentials open.
    pub fn build_id(&self) -> &BuildId {
        &self.build_id
    }

    /// The username to give the gateway, e.g. `ra-k3v9x0c2m1qz`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The public key in OpenSSH format, without a comment (`ssh-ed25519 AAAA...`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The line to add to the builder user's `~/.ssh/authorized_keys`; its comment names the
    /// build, so a leftover line is easy to trace.
    pub fn authorized_keys_line(&self) -> String {
        format!("{} remote-access build {}", self.public_key, self.build_id)
    }

    /// [`Credentials::authorized_keys_line`] with OpenSSH's `restrict,pty` options: a terminal,
    /// but no port, agent or X11 forwarding from the builder and no `~/.ssh/rc`.
    pub fn authorized_keys_line_restricted(&self) -> String {
        format!("restrict,pty {}", self.authorized_keys_line())
    }

    /// The key's `SHA256:` fingerprint, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The private key in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`), for the user's
    /// connection script. The text is zeroized when the returned value drops.
    pub fn private_key_openssh(&self) -> Result<Secret<String>> {
        let pem = self.key.to_openssh(LineEnding::LF).map_err(Error::key_material)?;
        // Copy out of the `Zeroizing` into our own zeroized wrapper; both are wiped on drop.
        Ok(Secret::new(pem.as_str().to_owned()))
    }

    /// The builder agent's username, for builds reached by a reverse tunnel.
    pub fn agent_username(&self) -> Option<&str> {
        self.agent.as_ref().map(|a| a.username.as_str())
    }

    /// The builder agent's key fingerprint, for builds reached by a reverse tunnel.
    pub fn agent_fingerprint(&self) -> Option<&str> {
        self.agent.as_ref().map(|a| a.fingerprint.as_str())
    }

    /// The builder agent's private key (OpenSSH text), to install on the builder for its agent.
    /// It can only register this build's tunnel; it opens nothing for a user.
    pub fn agent_private_key_openssh(&self) -> Result<Option<Secret<String>>> {
        let Some(agent) = &self.agent else { return Ok(None) };
        let pem = agent.key.to_openssh(LineEnding::LF).map_err(Error::key_material)?;
        Ok(Some(Secret::new(pem.as_str().to_owned())))
    }

    /// The 8-character VNC password the user types into their VNC client.
    pub fn vnc_password(&self) -> &Secret<String> {
        &self.vnc_password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("build_id", &self.build_id)
            .field("username", &self.username)
            .field("fingerprint", &self.fingerprint)
            .field("private_key", &"[redacted]")
            .field("vnc_password", &self.vnc_password)
            .field("agent_username", &self.agent_username())
            .finish()
    }
}
