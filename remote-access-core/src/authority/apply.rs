//! Driving a build's session: each input goes through the pure state machine and is saved by
//! compare-and-swap; what the transition decides (cut, events) is carried out once saved.

use super::Authority;
use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::session::{Action, Input, Session, Transition};
use crate::store::Revocation;

/// How often a session may be re-read after losing a compare-and-swap race before giving up.
const MAX_CAS_RETRIES: usize = 64;

impl Authority {
    /// The build's session as of now (a passed deadline is applied first).
    pub async fn session(&self, build_id: &BuildId) -> Result<Session> {
        self.apply(build_id, Input::Tick).await.map(|(session, _)| session)
    }

    /// Feeds one input to the build's session and saves it by compare-and-swap, together with
    /// the tombstone when the session ends. Once saved, the cut and the events happen without
    /// another await, so dropping this future can never lose them.
    pub(super) async fn apply(&self, build_id: &BuildId, input: Input) -> Result<(Session, Transition)> {
        self.apply_all(build_id, std::slice::from_ref(&input)).await
    }

    /// [`Authority::apply`] for several inputs in one write: each goes through the state
    /// machine in turn, and the transitions are merged.
    pub(super) async fn apply_all(
        &self,
        build_id: &BuildId,
        inputs: &[Input],
    ) -> Result<(Session, Transition)> {
        let store = &self.inner.store;
        for _ in 0..MAX_CAS_RETRIES {
            let current = store
                .session(build_id)
                .await?
                .ok_or_else(|| Error::UnknownBuild { build_id: build_id.to_string() })?;
            let mut session = current.value;
            if session.is_ended() {
                // Another authority on a shared store may have ended it: cut here too.
                self.inner.cut_signals.cut_if_known(build_id);
            }
            let now = self.now();
            let mut t = Transition::default();
            for input in inputs {
                t.absorb(session.handle(input.clone(), now));
            }
            if t.changed() {
                let revocation = t
                    .actions
                    .contains(&Action::RevokeCredentials)
                    .then(|| session.end().map(|(reason, at)| Revocation { at, reason: reason.to_string() }))
                    .flatten();
                match store.replace_session(session.clone(), current.version, revocation).await {
                    Ok(true) => {}
                    Ok(false) => continue, // another caller changed the session first: redo on its version
                    // The answer was lost: the write may have landed all the same, and then its
                    // events and cuts must not be lost with the answer.
                    Err(err) if !self.landed(build_id, &session, current.version).await => return Err(err),
                    Err(_) => {}
                }
                if t.actions.contains(&Action::CutConnections) {
                    self.inner.cut_signals.cut_if_known(build_id);
                }
                // FinishBuild is carried out by the platform when it reads the event.
                self.inner.events.publish(t.events.clone());
            }
            return Ok((session, t));
        }
        Err(Error::Contention {
            message: format!(
                "the session of build {build_id} kept changing under this write; gave up after {MAX_CAS_RETRIES} attempts"
            ),
        })
    }

    /// Whether a session update whose answer was lost landed after all: the store then holds
    /// exactly what was written, one version on.
    pub(super) async fn landed(&self, build_id: &BuildId, written: &Session, version: u64) -> bool {
        matches!(
            self.inner.store.session(build_id).await,
            Ok(Some(now)) if now.version == version.wrapping_add(1) && now.value == *written
        )
    }
}
