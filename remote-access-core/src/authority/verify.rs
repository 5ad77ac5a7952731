//! Checking what users present: an SSH key, a VNC password or RFB response. Wrong guesses
//! are counted per build to tell the platform (a `guessing` event), never to lock the owner out.

use subtle::ConstantTimeEq;

use super::Authority;
use crate::build::BuildId;
use crate::credential::check_vnc_response;
use crate::error::{DenialReason, Error, Result};
use crate::secret::Secret;
use crate::session::{EventKind, Input, Session};
use crate::store::CredentialRecord;

/// Usernames longer than this are refused without a store lookup.
const MAX_USERNAME_LEN: usize = 64;
/// Failed logins in a row against one build's credential before the platform hears of it
/// (a `guessing` event), and again each time the run doubles. They never lock the credential:
/// strangers' guesses must not keep its owner out. What slows guessers is the gateway's
/// backoff per source (address and prefix), which the owner does not share. The run is counted
/// in the store, across the fleet, and forgotten 15 minutes after its last failure.
const GUESSING_EVENT_AFTER: u32 = 10;

/// Which of a build's credentials a failed login tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Guessed {
    Key,
    VncPassword,
}

impl Guessed {
    fn as_str(self) -> &'static str {
        match self {
            Self::Key => "SSH key",
            Self::VncPassword => "VNC password",
        }
    }

    /// The key the store counts this credential's run of failures under.
    fn run(self, build_id: &BuildId) -> String {
        let credential = match self {
            Self::Key => "ssh-key",
            Self::VncPassword => "vnc-password",
        };
        format!("build:{build_id}:{credential}")
    }
}

/// An SSH key offered without a signature (a probe), or signed: both count as failures when
/// wrong, only a signed one proves the owner (and ends the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    Probe,
    Signed,
}

/// Who an SSH credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The user: may open channels to the builder.
    User,
    /// The builder's agent: may only register the build's reverse tunnel.
    Agent,
}

impl Authority {}

impl Authority {
    /// Checks an SSH login: `username` and the public key (OpenSSH text, `ssh-ed25519 AAAA...`)
    /// must be a live session's user. Returns the build they open.
    pub async fn verify_ssh(&self, username: &str, public_key: &str) -> Result<BuildId> {
        let key = russh::keys::PublicKey::from_openssh(public_key)
            .map_err(|_| Error::invalid("public key", "not an OpenSSH public key line"))?;
        let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        match self.verify_ssh_key(username, &fingerprint, Attempt::Signed).await? {
            (build_id, Role::User) => Ok(build_id),
            // An agent's credential is no user's: it opens nothing.
            (_, Role::Agent) => Err(Error::denied(DenialReason::WrongKey)),
        }
    }

    /// [`Authority::verify_ssh`] for the gateway: the key by its `SHA256:` fingerprint, the
    /// user's credential or the build agent's. A key offered without a signature yet (a
    /// probe) that is wrong for a known username counts towards the `guessing` event like a
    /// signed one (a guesser never needs to sign); only a signed login ends the run.
    pub(crate) async fn verify_ssh_key(
        &self,
        username: &str,
        fingerprint: &str,
        attempt: Attempt,
    ) -> Result<(BuildId, Role)> {
        if username.len() > MAX_USERNAME_LEN {
            return Err(Error::denied(DenialReason::UnknownUser));
        }
        self.in_contact()?;
        let record = self
            .inner
            .store
            .credential_for_user(username)
            .await?
            .ok_or(Error::denied(DenialReason::UnknownUser))?;
        if record.revoked.is_some() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        let role = if record.username == username && record.key_fingerprint == fingerprint {
            Role::User
        } else if record.agent_username.as_deref() == Some(username)
            && record.agent_key_fingerprint.as_deref() == Some(fingerprint)
        {
            Role::Agent
        } else {
            // Probes count too: a guesser never needs to sign, and the owner's own client
            // offers the right key first (the scripts set IdentitiesOnly).
            self.guessed(&record.build_id, Guessed::Key).await;
            return Err(Error::denied(DenialReason::WrongKey));
        };
        if attempt == Attempt::Signed {
            self.owner_logged_in(&record.build_id, Guessed::Key).await;
        }
        self.require_live(&record.build_id).await?;
        Ok((record.build_id, role))
    }

    /// The build's credential, unless it is a tombstone.
    pub(super) async fn live_credential(&self, build_id: &BuildId) -> Result<CredentialRecord> {
        self.in_contact()?;
        let record = self.credential_of(build_id).await?;
        if record.revoked.is_some() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        Ok(record)
    }

    /// The build's credential, live or tombstone.
    pub(super) async fn credential_of(&self, build_id: &BuildId) -> Result<CredentialRecord> {
        self.inner
            .store
            .credential_for_build(build_id)
            .await?
            .ok_or_else(|| Error::UnknownBuild { build_id: build_id.to_string() })
    }

    /// Checks a VNC password for the build's session, in constant time.
    pub async fn verify_vnc(&self, build_id: &BuildId, password: &str) -> Result<()> {
        let record = self.live_credential(build_id).await?;
        if !bool::from(password.as_bytes().ct_eq(record.vnc_password.expose().as_bytes())) {
            self.guessed(build_id, Guessed::VncPassword).await;
            return Err(Error::denied(DenialReason::WrongPassword));
        }
        self.owner_logged_in(build_id, Guessed::VncPassword).await;
        self.require_live(build_id).await
    }

    /// The live session that holds a gateway VNC port, with its session (a passed deadline is
    /// applied first).
    pub(crate) async fn vnc_route(&self, port: u16) -> Result<Option<Session>> {
        self.in_contact()?;
        let Some(build_id) = self.inner.store.session_for_vnc_port(port).await? else {
            return Ok(None);
        };
        match self.session(&build_id).await {
            Ok(session) if !session.is_ended() => Ok(Some(session)),
            Ok(_) | Err(Error::UnknownBuild { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Checks a VNC Authentication response against the build's password (constant time) and
    /// that the session is live; returns the builder's own VNC password for the upstream login.
    pub(crate) async fn verify_vnc_response(
        &self,
        build_id: &BuildId,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<(Secret<String>, Option<String>)>> {
        let record = self.live_credential(build_id).await?;
        if !check_vnc_response(record.vnc_password.expose().as_bytes(), challenge, response) {
            self.guessed(build_id, Guessed::VncPassword).await;
            return Err(Error::denied(DenialReason::WrongPassword));
        }
        self.owner_logged_in(build_id, Guessed::VncPassword).await;
        self.require_live(build_id).await?;
        Ok(record.builder_vnc_password.map(|password| (password, record.builder_vnc_username)))
    }

    /// Counts a failed login against a build's credential; when the run reaches
    /// [`GUESSING_EVENT_AFTER`], and each time it doubles after that, the platform hears of it.
    /// The credential itself stays usable by its owner.
    pub(super) async fn guessed(&self, build_id: &BuildId, credential: Guessed) {
        // Counted in the store: every count is handed to one gateway only, so the platform
        // hears of each threshold once, however many gateways the guesses reached.
        let count = match self.inner.store.add_failure(&credential.run(build_id), None).await {
            Ok(count) => count,
            Err(err) => {
                tracing::debug!(%build_id, %err, "a failed login against a build's credential was not counted");
                return;
            }
        };
        let what = credential.as_str();
        if count < GUESSING_EVENT_AFTER
            || !count.is_multiple_of(GUESSING_EVENT_AFTER)
            || !(count / GUESSING_EVENT_AFTER).is_power_of_two()
        {
            return;
        }
        tracing::warn!(%build_id, count, credential = what, "failed logins in a row against a build's credential");
        let reason = format!(
            "{count} failed logins in a row (wrong {what}); the sources are being slowed down, the owner is not; consider revoking if it goes on"
        );
        self.publish(build_id, EventKind::Guessing, reason);
    }

    /// The owner proved the credential: the run of failures against it ends.
    async fn owner_logged_in(&self, build_id: &BuildId, credential: Guessed) {
        if let Err(err) = self.inner.store.take_back_failures(&credential.run(build_id), None).await {
            tracing::debug!(%build_id, %err, "a run of failed logins against a build's credential was not ended");
        }
    }

    /// Applies a passed deadline and refuses if the session is over.
    pub(super) async fn require_live(&self, build_id: &BuildId) -> Result<()> {
        let (session, _) = self.apply(build_id, Input::Tick).await?;
        if session.is_ended() {
            return Err(Error::denied(DenialReason::Revoked));
        }
        Ok(())
    }
}
