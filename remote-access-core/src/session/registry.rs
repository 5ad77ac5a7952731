//! Per-build cut signals: how an ended session reaches the connections that are still open.
//!
//! One `watch` channel per build rather than one per connection: a connection that registers
//! after the session was cut still sees the cut, so there is no window in which a connection
//! accepted just before the end survives it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::build::BuildId;

#[derive(Default)]
pub(crate) struct Registry {
    builds: Mutex<HashMap<BuildId, watch::Sender<bool>>>,
}

impl Registry {
    /// A signal that fires when `build_id`'s access ends (at once if it already has).
    pub(crate) fn signal(&self, build_id: &BuildId) -> CutSignal {
        self.with_sender(build_id, |sender| CutSignal(sender.subscribe()))
    }

    /// Cuts every connection of the build, present and future.
    pub(crate) fn cut(&self, build_id: &BuildId) {
        self.with_sender(build_id, |sender| sender.send_replace(true));
    }

    /// Runs `f` on the build's sender, creating it (not cut) on first use.
    fn with_sender<T>(&self, build_id: &BuildId, f: impl FnOnce(&watch::Sender<bool>) -> T) -> T {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        f(builds.entry(build_id.clone()).or_insert_with(|| watch::channel(false).0))
    }

    /// Drops the signals of purged builds.
    pub(crate) fn forget(&self, build_ids: &[BuildId]) {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        for id in build_ids {
            builds.remove(id);
        }
    }
}

/// Fires when the build's remote access ends and every connection must close.
#[derive(Debug, Clone)]
pub struct CutSignal(watch::Receiver<bool>);

impl CutSignal {
    /// Whether access has ended.
    pub fn is_cut(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once access has ended. Cancel-safe.
    pub async fn cut(&mut self) {
        // An error means the authority is gone: nothing can be authorised any more, so cut.
        let _ = self.0.wait_for(|cut| *cut).await;
    }
}
