//! The gateway's host key: what users pin, so it must be persisted by the platform.

use std::fmt;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The gateway's SSH host key (Ed25519). Generate it once, store
/// [`HostKey::to_openssh`] somewhere safe, and load it with [`HostKey::from_openssh`] on every
/// start: the connection scripts pin its public half, so a new key locks users out of running
/// sessions. `Debug` shows only the fingerprint.
///
/// ```
/// use remote_access_core::HostKey;
/// let key = HostKey::generate()?;
/// let again = HostKey::from_openssh(key.to_openssh()?.expose())?;
/// assert_eq!(key.fingerprint(), again.fingerprint());
/// assert!(key.public_key().starts_with("ssh-ed25519 "));
/// # Ok::<(), remote_access_core::Error>(())
/// ```
#[derive(Clone)]
pub struct HostKey {
    pub(crate) key: PrivateKey,
}

impl HostKey {
    /// A fresh Ed25519 host key from the CSPRNG.
    pub fn generate() -> Result<Self> {
        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .map_err(Error::key_material)?;
        Ok(Self { key })
    }

    /// Loads a host key from OpenSSH private key text (unencrypted).
    pub fn from_openssh(text: &str) -> Result<Self> {
        let key = russh::keys::decode_secret_key(text, None)
            .map_err(|_| Error::invalid("host key", "not an unencrypted OpenSSH private key"))?;
        Ok(Self { key })
    }

    /// The private key as OpenSSH text, to persist. Zeroized when dropped.
    pub fn to_openssh(&self) -> Result<Secret<String>> {
        let pem = self.key.to_openssh(LineEnding::LF).map_err(Error::key_material)?;
        Ok(Secret::new(pem.as_str().to_owned()))
    }

    /// The public key, `ssh-ed25519 AAAA...`, without a comment.
    pub fn public_key(&self) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment("");
        public.to_openssh().map(|line| line.trim().to_owned()).unwrap_or_default()
    }

    /// The `SHA256:` fingerprint users can compare with what `ssh` shows.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}
