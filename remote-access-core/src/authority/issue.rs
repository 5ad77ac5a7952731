//! Issuing a build's credentials, and the platform's reports of the build's progress.

use rand_core::Rng;
use time::OffsetDateTime;

use super::Authority;
use crate::build::{BuildId, Builder, Trigger};
use crate::clock::later;
use crate::credential::{self, Credentials, Generated};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::session::{Event, EventKind, Input, Policy, Session};
use crate::store::{Conflict, CredentialRecord, Insert};

/// How often fresh credentials are drawn when one clashes with an earlier build's.
const MAX_GENERATE_ATTEMPTS: usize = 8;
/// Revocation reasons end up in events and logs; keep them short.
const MAX_REASON_LEN: usize = 256;

/// A platform's request for remote access to one build.
///
/// ```
/// use remote_access_core::{BuildId, BuildRequest, Trigger};
/// let request = BuildRequest::new(BuildId::new("build-42")?, Trigger::Manual, true);
/// assert!(request.remote_access_enabled);
/// # Ok::<(), remote_access_core::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildRequest {
    /// The build.
    pub build_id: BuildId,
    /// How it was started.
    pub trigger: Trigger,
    /// Whether the user ticked "enable remote access".
    pub remote_access_enabled: bool,
    /// When the build started; the maximum duration counts from here. `None` means now.
    pub started_at: Option<OffsetDateTime>,
    /// This build's time rules; `None` uses the authority's default policy.
    pub policy: Option<Policy>,
    /// The password of the builder's own VNC server (see [`Builder::vnc_port`]), injected by
    /// the gateway; the user never sees it. Leave it `None`: for a builder with a VNC port the
    /// authority then generates one for this build, returned by
    /// [`Credentials::builder_vnc_password`](crate::Credentials::builder_vnc_password) for the
    /// platform to install. A supplied one is used as given, but one shared by several builders
    /// is unsafe: each build's user controls their builder's VNC port and can capture it
    /// (`docs/vnc.md`); reusing one for several builds logs a warning.
    pub builder_vnc_password: Option<Secret<String>>,
    /// For macOS builders: the account the gateway logs in as with Apple's type-30
    /// authentication (the password is then that account's, up to 63 bytes). Without
    /// `builder_vnc_password`, that account's password is generated for this build (20
    /// characters) and the platform sets it on the account.
    pub builder_vnc_username: Option<String>,
    /// Where the gateway reaches the builder. `None` until a route exists (users are refused
    /// with a clear reason meanwhile).
    pub builder: Option<Builder>,
}

impl BuildRequest {
    /// A request started now with the default policy. The trigger and the user's "enable
    /// remote access" choice have no defaults on purpose: a platform that forgets to pass them
    /// must not grant access by accident.
    pub fn new(build_id: BuildId, trigger: Trigger, remote_access_enabled: bool) -> Self {
        Self {
            build_id,
            trigger,
            remote_access_enabled,
            started_at: None,
            policy: None,
            builder_vnc_password: None,
            builder_vnc_username: None,
            builder: None,
        }
    }

    /// Refuses anything but a manual build with remote access enabled.
    pub(crate) fn check_eligible(&self) -> Result<()> {
        if self.trigger != Trigger::Manual {
            return Err(Error::NotManuallyTriggered { build_id: self.build_id.to_string() });
        }
        if !self.remote_access_enabled {
            return Err(Error::RemoteAccessDisabled { build_id: self.build_id.to_string() });
        }
        Ok(())
    }
}

impl Authority {
    /// Generates and issues fresh credentials for a manually triggered build with remote access
    /// enabled, and opens its session.
    pub async fn issue(&self, request: BuildRequest) -> Result<Credentials> {
        self.issue_with(request, credential::generate).await
    }

    pub(super) async fn issue_with(
        &self,
        request: BuildRequest,
        mut generate: impl FnMut() -> Result<Generated>,
    ) -> Result<Credentials> {
        request.check_eligible()?;
        let policy = request.policy.unwrap_or(self.inner.options.policy);
        let now = self.now();
        let started_at = request.started_at.unwrap_or(now);
        let builder = request.builder.map(Builder::validated).transpose()?;
        let builder_vnc_username = request.builder_vnc_username;
        if let Some(name) = &builder_vnc_username
            && (name.is_empty() || name.len() > 63 || name.chars().any(char::is_control))
        {
            return Err(Error::invalid("builder_vnc_username", "1 to 63 bytes, no control characters"));
        }
        let wants_vnc = builder.as_ref().is_some_and(|b| b.vnc_port.is_some());
        // Without gateway VNC ports, VNC is reached only inside the build's SSH tunnel
        // (`ssh -L` to the builder's VNC address), which the gateway serves all the same.
        let ports = &self.inner.options.vnc_ports;
        // The builder's own password is per build unless the platform supplies one: the build's
        // user controls the builder's VNC port, so can capture whatever the gateway logs in
        // with, and a per-build password opens no other builder. A supplied one is kept for
        // compatibility, with a warning when several builds share it.
        let supplied = request.builder_vnc_password.is_some();
        let builder_vnc_password = match request.builder_vnc_password {
            Some(password) => Some(check_builder_vnc_password(password)?),
            None if wants_vnc => Some(credential::generate_builder_password(builder_vnc_username.is_some())?),
            None if builder_vnc_username.is_some() => {
                return Err(Error::invalid(
                    "builder_vnc_username",
                    "needs builder.vnc_port (the account's password is then generated) or builder_vnc_password",
                ));
            }
            None => None,
        };
        let build_id = request.build_id;
        // VNC ports are tried from a random start, so sessions spread over the range.
        let first_port =
            if ports.is_empty() { 0 } else { russh::keys::key::safe_rng().next_u64() as usize % ports.len() };
        let mut port_tries = 0;
        let mut credential_draws = 0;
        let mut credentials: Option<Credentials> = None;
        loop {
            let creds = match credentials.take() {
                Some(creds) => creds,
                None if credential_draws < MAX_GENERATE_ATTEMPTS => {
                    credential_draws += 1;
                    let mut creds = Credentials::new(build_id.clone(), generate()?)?;
                    if builder.as_ref().is_some_and(|b| b.reverse_tunnel) {
                        creds.agent = Some(credential::generate_agent()?);
                    }
                    creds.builder_vnc_password = builder_vnc_password.clone();
                    creds.builder_vnc_account = builder_vnc_username.is_some();
                    creds
                }
                None => {
                    return Err(Error::KeyMaterial {
                        message: format!(
                            "{MAX_GENERATE_ATTEMPTS} fresh credential sets in a row clashed with earlier builds; the system RNG is suspect"
                        ),
                    });
                }
            };
            let vnc_port =
                (wants_vnc && !ports.is_empty()).then(|| ports[(first_port + port_tries) % ports.len()]);
            let session = Session::new(build_id.clone(), policy, started_at, now)?
                .with_builder(builder.clone())
                .with_vnc_port(vnc_port);
            // Signed before the insert: a build is never stored without what was asked.
            let mut creds = creds;
            self.certify(&mut creds, builder.as_ref(), now, session.max_end())?;
            let record = CredentialRecord {
                build_id: build_id.clone(),
                username: creds.username.clone(),
                key_fingerprint: creds.fingerprint.clone(),
                password_digest: credential::password_digest(creds.vnc_password.expose()),
                vnc_password: creds.vnc_password.clone(),
                agent_username: creds.agent.as_ref().map(|a| a.username.clone()),
                agent_key_fingerprint: creds.agent.as_ref().map(|a| a.fingerprint.clone()),
                builder_vnc_password: builder_vnc_password.clone(),
                builder_vnc_username: builder_vnc_username.clone(),
                revoked: None,
            };
            // Kept by the store until the session's latest possible end plus the retention.
            let keep_until = later(session.deadline(), self.inner.options.tombstone_retention);
            match self.inner.store.insert(session, record, keep_until).await? {
                Insert::Done => {
                    // Noted once issued, so that a refused request (a retry for the same
                    // build) does not count as another build using the password.
                    if supplied && let Some(password) = &builder_vnc_password {
                        credential::note_supplied(&build_id, password);
                    }
                    let mut reason =
                        format!("credentials issued: user {} key {}", creds.username, creds.fingerprint);
                    if let Some(port) = vnc_port {
                        reason.push_str(&format!(" vnc port {port}"));
                    }
                    self.inner.events.publish(vec![Event {
                        build_id,
                        at: now,
                        kind: EventKind::Issued,
                        reason,
                    }]);
                    return Ok(creds);
                }
                Insert::Conflict(Conflict::BuildId) => {
                    return Err(Error::BuildExists { build_id: build_id.to_string() });
                }
                Insert::Conflict(Conflict::VncPort) => {
                    port_tries += 1;
                    if port_tries >= ports.len() {
                        return Err(Error::NoCapacity {
                            message: format!(
                                "all {} VNC ports are in use by live sessions; add ports or wait",
                                ports.len()
                            ),
                        });
                    }
                    credentials = Some(creds); // the credentials were fine: try the next port
                }
                Insert::Conflict(clash) => {
                    tracing::warn!(build_id = %build_id, ?clash, "fresh credentials clashed with an earlier build's; drawing again");
                }
            }
        }
    }

    /// Reports that all of the build's steps have completed: the grace period starts, and the
    /// user's last logout from now on ends the session. Repeated reports change nothing.
    pub async fn steps_completed(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::StepsCompleted).await.map(drop)
    }

    /// Reports that the platform finished the build itself; access ends at once.
    pub async fn build_finished(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::BuildFinished).await.map(drop)
    }

    /// Reports that the build was cancelled; access ends at once.
    pub async fn cancel(&self, build_id: &BuildId) -> Result<()> {
        self.apply(build_id, Input::Cancelled).await.map(drop)
    }

    /// Revokes the build's access at once: credentials become tombstones and every live
    /// connection is cut. Revoking an ended session changes nothing.
    pub async fn revoke(&self, build_id: &BuildId, reason: &str) -> Result<()> {
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::invalid("revoke reason", format!("longer than {MAX_REASON_LEN} bytes")));
        }
        if reason.chars().any(char::is_control) {
            return Err(Error::invalid("revoke reason", "contains control characters"));
        }
        self.apply(build_id, Input::Revoke { reason: reason.to_owned() }).await?;
        // Revoked on the primary, connections cut: say so when the replicas have not confirmed
        // it, since a failover now could undo it (kept and written again while this authority
        // runs its housekeeping; logins are refused meanwhile).
        let unconfirmed = self.inner.store.unconfirmed_ends();
        if unconfirmed > 0 {
            return Err(Error::StoreUnavailable {
                message: format!(
                    "revoked, but the store's replicas have not confirmed it ({unconfirmed} ends pending): it is \
                     written again and confirmed while this authority runs its housekeeping, and logins are \
                     refused until then"
                ),
                source: None,
            });
        }
        Ok(())
    }
}

/// A builder's own VNC password: what its server expects, injected by the gateway. VNC ignores
/// bytes past 8 and libvncserver stops at NUL, so NUL is refused and non-ASCII too (clients
/// disagree on its encoding).
fn check_builder_vnc_password(password: Secret<String>) -> Result<Secret<String>> {
    let text = password.expose();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Error::invalid(
            "builder_vnc_password",
            "1 to 64 printable ASCII characters (only 8 count)",
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authority::AuthorityOptions;
    use crate::clock::ManualClock;

    /// A generator that replays an earlier build's key and password before drawing fresh ones:
    /// the store's uniqueness check must catch the replay and the authority must draw again.
    #[tokio::test]
    async fn a_clashing_key_or_password_is_never_issued_again() {
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        let authority = Authority::with_clock(AuthorityOptions::default(), Arc::new(clock)).unwrap();
        let first = credential::generate().unwrap();
        let (first_key, first_password) = (first.key.clone(), first.vnc_password.clone());
        let mut first = Some(first);
        let creds = authority
            .issue_with(BuildRequest::new(BuildId::new("one").unwrap(), Trigger::Manual, true), || {
                Ok(first.take().unwrap())
            })
            .await
            .unwrap();
        authority.revoke(creds.build_id(), "done").await.unwrap();

        for replay in ["key", "password", "username"] {
            let mut calls = 0;
            let build = BuildId::new(format!("two-{replay}")).unwrap();
            let second = authority
                .issue_with(BuildRequest::new(build, Trigger::Manual, true), || {
                    calls += 1;
                    let mut fresh = credential::generate()?;
                    if calls == 1 {
                        match replay {
                            "key" => {
                                fresh.key = first_key.clone();
                                fresh.fingerprint = creds.fingerprint().to_owned();
                            }
                            "password" => fresh.vnc_password = first_password.clone(),
                            _ => fresh.username = creds.username().to_owned(),
                        }
                    }
                    Ok(fresh)
                })
                .await
                .unwrap();
            assert_eq!(calls, 2, "the clash with a tombstone was caught and credentials drawn again");
            assert_ne!(second.fingerprint(), creds.fingerprint());
            assert_ne!(second.vnc_password().expose(), creds.vnc_password().expose());
            assert_ne!(second.username(), creds.username());
        }

        // A generator that only ever replays gives up with a clear error instead of looping.
        let replaying = || {
            let mut g = credential::generate()?;
            g.username = creds.username().to_owned();
            Ok(g)
        };
        let stuck = authority
            .issue_with(BuildRequest::new(BuildId::new("three").unwrap(), Trigger::Manual, true), replaying)
            .await;
        assert!(matches!(stuck, Err(Error::KeyMaterial { .. })));
    }
}
