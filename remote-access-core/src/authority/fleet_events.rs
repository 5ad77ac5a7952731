//! The fleet's event log: every authority appends the events it publishes to the store's log
//! (a Redis stream, or the in-memory store's own), and a platform reads them from any process
//! with [`Authority::fleet_events`], resuming after the last id it handled, so that a restart
//! loses nothing the log still holds (about 100,000 events in Redis, 10,000 in memory).

use std::collections::VecDeque;
use std::time::Duration;

use super::Authority;
use crate::error::{Error, Result};
use crate::session::{Event, EventKind};

/// Events sent to the log in one call, at most.
const BATCH: usize = 256;
/// How long a failed append waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long one read of the log waits for new events before it asks again.
const READ_WAIT: Duration = Duration::from_secs(5);

/// One event of the fleet's log, with the id to resume after.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetEvent {
    /// Its place in the log (`"1732950000000-0"` in Redis): give it to
    /// [`Authority::fleet_events`] to read on from here after a restart.
    pub id: String,
    /// What happened, as the authority that published it saw it.
    pub event: Event,
}

/// The fleet's events, oldest first, from every authority on the store; see
/// [`Authority::fleet_events`].
pub struct FleetEvents {
    authority: Authority,
    /// The last id read.
    after: String,
    read: VecDeque<FleetEvent>,
}

impl std::fmt::Debug for FleetEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetEvents").field("after", &self.after).finish_non_exhaustive()
    }
}

impl FleetEvents {
    /// The next event of the log, waiting for one. An error when the store cannot be read
    /// (call again: the place is kept) or `after` was not an id of the log.
    pub async fn next(&mut self) -> Result<FleetEvent> {
        loop {
            if let Some(event) = self.read.pop_front() {
                return Ok(event);
            }
            let store = &self.authority.inner.store;
            for (id, json) in store.read_events(self.after.clone(), BATCH, READ_WAIT).await? {
                self.after.clone_from(&id);
                match serde_json::from_str::<Event>(&json) {
                    Ok(event) => self.read.push_back(FleetEvent { id, event }),
                    // Another version's event, or a foreign entry: skipped, not fatal.
                    Err(err) => {
                        tracing::warn!(%id, %err, "skipped an entry of the fleet's event log this version cannot read")
                    }
                }
            }
        }
    }
}

impl Authority {
    /// The events of every authority on this store (the whole fleet with Redis; this process
    /// with the in-memory store), oldest first: after the event `after` (an id from an earlier
    /// [`FleetEvent`], to resume after a restart), or with `None` those appended from now on.
    /// Authorities append their events as their housekeeping runs
    /// ([`Authority::run_housekeeping`]; a [`crate::Gateway`] runs its own), within about a
    /// second; `lagged` events are each subscriber's own and are not in the log.
    pub async fn fleet_events(&self, after: Option<&str>) -> Result<FleetEvents> {
        if let Some(id) = after
            && (id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        {
            return Err(Error::invalid("event id", "an id from a FleetEvent (digits and '-')"));
        }
        let after = match after {
            Some(after) => after.to_owned(),
            None => self.inner.store.last_event_id().await?,
        };
        Ok(FleetEvents { authority: self.clone(), after, read: VecDeque::new() })
    }

    /// Sends this authority's events to the fleet's log until the housekeeping stops: in
    /// batches, each tried again until the store takes it (meanwhile the outbox queues, and
    /// past its bound counts what it drops as a `lagged` event, which is not sent).
    pub(super) async fn append_to_fleet_log(&self) {
        // Another housekeeping running sends them: this one waits its turn.
        let mut outbox = self.inner.outbox.lock().await;
        loop {
            let Some(first) = outbox.next().await else { return std::future::pending().await };
            let mut batch = Vec::new();
            for event in std::iter::once(first).chain(std::iter::from_fn(|| outbox.try_next())).take(BATCH) {
                if matches!(event.kind, EventKind::Lagged { .. }) {
                    tracing::warn!(reason = %event.reason, "events were lost on their way to the fleet's log");
                    continue;
                }
                match serde_json::to_string(&event) {
                    Ok(json) => batch.push(json),
                    Err(err) => tracing::warn!(%err, "an event could not be encoded for the fleet's log"),
                }
            }
            while let Err(err) = self.inner.store.append_events(&batch).await {
                tracing::warn!(%err, events = batch.len(), "could not append events to the fleet's log; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
