//! Sharing a store with other gateways: following their notices of sessions ended elsewhere,
//! rechecking the builds with connections here, and detaching the connections of gateways
//! that died or went silent.

use time::OffsetDateTime;

use std::time::Duration;

use super::Authority;
use crate::clock::later;
use crate::error::{Error, Result};
use crate::session::Input;
use crate::store::Notice;

/// An authority whose heartbeat is older than its `max_store_outage` plus this has cut its
/// connections (or died with them): others may detach them from the sessions.
const SILENCE_SLACK: Duration = Duration::from_secs(5);
/// How long a claim on a silent authority lasts; a claimer that fails or dies leaves it to be
/// claimed again after this.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

impl Authority {
    /// Checks every build with connections here against the store and cuts those whose
    /// session ended elsewhere (or is gone from the store).
    pub(super) async fn recheck(&self) {
        for build_id in self.inner.cut_signals.live() {
            // `apply` cuts the build's connections when it finds the session ended.
            match self.apply(&build_id, Input::Tick).await {
                Ok(_) => {}
                Err(Error::UnknownBuild { .. }) => self.inner.cut_signals.cut_if_known(&build_id),
                Err(err) => tracing::warn!(%build_id, %err, "could not check a session against the store"),
            }
        }
    }

    /// Detaches, from the shared sessions, the connections of authorities that stopped
    /// heart-beating: killed or crashed (their connections died with them), or out of contact
    /// for longer than `max_store_outage` (they cut theirs). Without this a dead gateway's
    /// connections would count as live until the deadline, and the user's logout would not
    /// end the session. Every gateway of a fleet must share `max_store_outage`.
    pub(super) async fn detach_silent(&self) -> Result<()> {
        let silence = self.inner.options.max_store_outage + SILENCE_SLACK;
        let now = self.now();
        let before = now.checked_sub(time::Duration::try_from(silence).unwrap_or(time::Duration::MAX));
        let until = later(now, CLAIM_LEASE);
        let mut instances = self
            .inner
            .store
            .claim_silent_instances(before.unwrap_or(OffsetDateTime::UNIX_EPOCH), until)
            .await?;
        // Never this authority's own current id (its heartbeat was late, it is not dead): the
        // next heartbeat takes the claim back.
        instances.retain(|&instance| instance != self.instance());
        if instances.is_empty() {
            return Ok(());
        }
        let mut detached = 0;
        let mut failed = false;
        for build_id in self.inner.store.live_sessions().await? {
            // One unreadable session must not hold back the others; a failure anywhere leaves
            // the claims to lapse, so that a later round finishes the job.
            let session = match self.session(&build_id).await {
                Ok(session) => session,
                Err(Error::UnknownBuild { .. }) => continue,
                Err(err) => {
                    tracing::warn!(%build_id, %err, "could not check a session for a silent gateway's connections");
                    failed = true;
                    continue;
                }
            };
            for (connection, _) in session.live_connections() {
                if instances.contains(&connection.instance()) {
                    match self.apply(&build_id, Input::Detached { connection }).await {
                        Ok(_) => detached += 1,
                        Err(err) => {
                            tracing::warn!(%build_id, %err, "could not detach a silent gateway's connection");
                            failed = true;
                        }
                    }
                }
            }
        }
        if !failed {
            for &instance in &instances {
                self.inner.store.forget_instance(instance, until).await?;
            }
        }
        tracing::warn!(
            gateways = instances.len(),
            connections = detached,
            "detached the connections of gateways that stopped answering"
        );
        Ok(())
    }

    /// Acts on what a shared store reports another process changed.
    pub(super) async fn noticed(&self, notice: Notice) {
        match notice {
            Notice::Ended(build_id) => self.inner.cut_signals.cut_if_known(&build_id),
            Notice::Missed => self.recheck().await,
        }
    }
}
