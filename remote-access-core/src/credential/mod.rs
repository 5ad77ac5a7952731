//! Per-build credentials: generated fresh for each build, handed to the platform once; the
//! gateway's host key; and the VNC password arithmetic (RFB's DES challenge-response and the
//! password file), which is pure and shared by the authority and the VNC proxy.

mod builder;
mod bundle;
mod generate;
mod host_key;
mod ssh_ca;
mod tls_identity;
mod vnc_password;

pub(crate) use builder::{generate_builder_password, note_supplied};
pub(crate) use generate::{Generated, GeneratedAgent, generate, generate_agent, password_digest};
pub use host_key::HostKey;
pub use ssh_ca::SshCa;
pub(crate) use ssh_ca::{UserCertificate, check_source_addresses, parse_certificate, revoked_keys};
pub use tls_identity::TlsIdentity;
pub(crate) use vnc_password::{check_vnc_response, vnc_response};
pub use vnc_password::{vnc_auth_response, vnc_password_file};

use std::fmt;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;

use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// One build's credentials, as issued: an Ed25519 key pair for SSH (gateway and builder), a
/// gateway username, a VNC password, and the builder's own VNC password for the platform to
/// install on the builder.
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
    /// What the gateway logs in to the builder's VNC server with: generated for this build
    /// unless the platform supplied one.
    pub(crate) builder_vnc_password: Option<Secret<String>>,
    /// Set for a macOS builder: the password is then that account's, not a VNC password.
    pub(crate) builder_vnc_account: bool,
    /// The user key's OpenSSH certificate, when the authority has a user CA.
    pub(crate) certificate: Option<String>,
    /// The builder's host certificate, when the authority has a host CA and the request gave
    /// the builder's host key.
    pub(crate) builder_host_certificate: Option<String>,
}

impl Credentials {
    pub(crate) fn new(build_id: BuildId, generated: Generated) -> Result<Self> {
        let Generated { username, key, fingerprint, vnc_password } = generated;
        let public_key = key.public_key().to_openssh().map_err(Error::key_material)?;
        Ok(Self {
            build_id,
            username,
            key,
            public_key,
            fingerprint,
            vnc_password,
            agent: None,
            builder_vnc_password: None,
            builder_vnc_account: false,
            certificate: None,
            builder_host_certificate: None,
        })
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

    /// The OpenSSH user certificate of the build's key (`ssh-ed25519-cert-v01@openssh.com
    /// AAAA... <build id>`), when the authority has a user CA (`AuthorityOptions::user_ca`)
    /// and the build a builder: signed for the builder's login user, valid until the build's
    /// latest possible end, with `permit-pty` only (and `permit-port-forwarding` when the build
    /// may reach further ports). A builder whose sshd trusts the CA (`TrustedUserCAKeys`) then
    /// needs no `authorized_keys` line, and refuses the certificate once it expires. Public:
    /// it is useless without the private key. The scripts use it.
    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// The builder's host certificate (its host key signed by `AuthorityOptions::host_ca` for
    /// the builder's address, until the build's latest possible end), when the request gave
    /// the builder's host key: install it as the builder's sshd `HostCertificate`.
    pub fn builder_host_certificate(&self) -> Option<&str> {
        self.builder_host_certificate.as_deref()
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

    /// The password the gateway logs in to the builder's VNC server with; the user never sees
    /// it. Install it on the builder as you install [`Credentials::authorized_keys_line`]: for
    /// x11vnc or TigerVNC, as the password file of [`Credentials::builder_vnc_password_file`];
    /// for a macOS builder (`BuildRequest::builder_vnc_username`), as that account's password.
    ///
    /// Generated for this build (8 characters, or 20 for a macOS account) unless the request
    /// supplied one, which is then returned as it was given. `None` if the builder has no VNC
    /// port and none was supplied. Generated is safer: the build's user controls the builder,
    /// so can capture this password; one generated per build opens no other builder.
    pub fn builder_vnc_password(&self) -> Option<&Secret<String>> {
        self.builder_vnc_password.as_ref()
    }

    /// The 8 bytes of a standard VNC password file (see [`crate::vnc_password_file`]) holding
    /// [`Credentials::builder_vnc_password`], for the builder's VNC server (`x11vnc -rfbauth`,
    /// TigerVNC's `-PasswordFile`); write them to a root-owned file of mode 0600. `None`
    /// without a builder VNC password, and for a macOS account (whose password is set on the
    /// account instead). The file is as good as the password: DES with a published key.
    pub fn builder_vnc_password_file(&self) -> Option<Secret<[u8; 8]>> {
        let password = self.builder_vnc_password.as_ref().filter(|_| !self.builder_vnc_account)?;
        Some(Secret::new(vnc_password_file(password.expose())))
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
            .field("builder_vnc_password", &self.builder_vnc_password)
            .field("agent_username", &self.agent_username())
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}
