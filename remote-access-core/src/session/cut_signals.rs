//! Per-build cut signals: how an ended session reaches the connections that are still open.
//!
//! One `watch` channel per build rather than one per connection. A connection takes its
//! signal before the session admits it, so an end recorded in between (here, or announced from
//! another gateway) still reaches it; one admitted after the end is refused by the session.
//! A signal carries when it fired, so that the gateway can tell how long its cut took (its
//! `remote_access_cut_seconds`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::build::BuildId;

#[derive(Default)]
pub(crate) struct CutSignals {
    builds: Mutex<HashMap<BuildId, Sender>>,
}

impl CutSignals {
    /// A signal that fires when `build_id`'s access ends (at once if it already has).
    pub(crate) fn signal(&self, build_id: &BuildId) -> CutSignal {
        self.with_sender(build_id, |sender| CutSignal(sender.subscribe()))
    }

    /// Cuts the build's connections if this process has any (a notice about a build it never
    /// saw creates nothing: a later login consults the store, which knows it ended).
    pub(crate) fn cut_if_known(&self, build_id: &BuildId) {
        let builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = builds.get(build_id) {
            fire(sender);
        }
    }

    /// Builds with connections here that have not been cut.
    pub(crate) fn live(&self) -> Vec<BuildId> {
        live(&self.builds.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Cuts every connection here and forgets the signals, so that connections admitted after
    /// this get fresh ones: for a cut that does not end the sessions (the store is out of
    /// reach). Returns the builds that had live connections.
    pub(crate) fn cut_all(&self) -> Vec<BuildId> {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        let live = live(&builds);
        for sender in builds.values() {
            fire(sender);
        }
        builds.clear();
        live
    }

    /// Forgets the signals nobody holds any more. A later connection gets a fresh one, which
    /// is sound because it is only taken before the session admits the connection.
    pub(crate) fn sweep(&self) {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        builds.retain(|_, sender| sender.receiver_count() > 0);
    }

    /// Runs `f` on the build's sender, creating it (not cut) on first use.
    fn with_sender<T>(&self, build_id: &BuildId, f: impl FnOnce(&Sender) -> T) -> T {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        f(builds.entry(build_id.clone()).or_insert_with(|| watch::channel(None).0))
    }
}

/// A build's signal: when it was cut, once it was.
type Sender = watch::Sender<Option<Instant>>;

/// Cuts, keeping the first time if it was cut already.
fn fire(sender: &Sender) {
    sender.send_if_modified(|cut| {
        let first = cut.is_none();
        if first {
            *cut = Some(Instant::now());
        }
        first
    });
}

/// Builds whose signal someone holds and that have not been cut.
fn live(builds: &HashMap<BuildId, Sender>) -> Vec<BuildId> {
    builds
        .iter()
        .filter(|(_, sender)| sender.receiver_count() > 0 && sender.borrow().is_none())
        .map(|(id, _)| id.clone())
        .collect()
}

/// Fires when the build's remote access ends and every connection must close.
#[derive(Debug, Clone)]
pub struct CutSignal(watch::Receiver<Option<Instant>>);

impl CutSignal {
    /// Whether access has ended.
    pub fn is_cut(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves once access has ended. Cancel-safe.
    pub async fn cut(&mut self) {
        // An error means the authority is gone: nothing can be authorised any more, so cut.
        let _ = self.0.wait_for(Option::is_some).await;
    }

    /// When this process learned that access ended, if it has.
    pub(crate) fn cut_at(&self) -> Option<Instant> {
        *self.0.borrow()
    }
}
