//! Contact with the store: pinged every second with this authority's heartbeat; while it
//! does not answer, logins are refused (fail closed), and past `max_store_outage` every
//! connection here is cut.

use std::sync::PoisonError;
use std::time::Duration;

use rand_core::Rng;

use super::Authority;
use crate::error::{Error, Result};
use crate::session::{Event, EventKind};

/// How often the store is pinged (and the heartbeat written), and how long a ping may take
/// before it counts as no answer: a slow store is an absent one.
pub(super) const CONTACT_INTERVAL: Duration = Duration::from_secs(1);

/// What the authority knows of its contact with the store.
pub(super) struct Contact {
    /// When the store last answered a ping.
    last_answer: tokio::time::Instant,
    /// Whether the last ping failed: logins are refused until one succeeds.
    lost: bool,
    /// Whether this outage has already cut the connections.
    cut: bool,
}

impl Default for Contact {
    fn default() -> Self {
        Self { last_answer: tokio::time::Instant::now(), lost: false, cut: false }
    }
}

impl Authority {
    /// Refuses at once while the store is out of reach: nothing is authorised without it.
    pub(super) fn in_contact(&self) -> Result<()> {
        let contact = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
        if !contact.lost {
            return Ok(());
        }
        Err(Error::StoreUnavailable {
            message: format!(
                "no answer from the session store for {} s; logins are refused until it answers (fail closed)",
                contact.last_answer.elapsed().as_secs()
            ),
            source: None,
        })
    }

    /// Whether the store answered the last ping: logins can be decided. For the gateway's
    /// health check.
    pub(crate) fn store_answers(&self) -> bool {
        self.in_contact().is_ok()
    }

    /// The store's ping round trips, for the gateway's metrics.
    pub(crate) fn store_round_trip(&self) -> &crate::metrics::Histogram {
        &self.inner.store_round_trip
    }

    /// Pings the store (within a second) and writes the heartbeat. Once an outage passes
    /// `max_store_outage`, cuts every connection; when the store answers again, has the
    /// housekeeping resynchronise.
    pub(super) async fn check_contact(&self) {
        let sent = tokio::time::Instant::now();
        // The heartbeat is part of the answer: a store that cannot take it (read-only, out of
        // memory) is as absent as a silent one, and others would take this gateway for dead.
        let exchange = async {
            self.inner.store.ping().await?;
            self.inner.store.heartbeat(self.instance(), self.now()).await
        };
        let answer = match tokio::time::timeout(CONTACT_INTERVAL, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::StoreUnavailable {
                message: format!("no answer to a ping within {CONTACT_INTERVAL:?}"),
                source: None,
            }),
        };
        let (regained, cut_now) = {
            let mut contact = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
            match &answer {
                Ok(()) => {
                    self.inner.store_round_trip.observe(sent.elapsed());
                    let regained = contact.lost;
                    *contact = Contact { last_answer: sent, lost: false, cut: false };
                    (regained, false)
                }
                Err(err) => {
                    if !contact.lost {
                        tracing::warn!(%err, "lost contact with the session store; refusing logins (fail closed)");
                    }
                    contact.lost = true;
                    let over = contact.last_answer.elapsed() >= self.inner.options.max_store_outage;
                    let cut_now = over && !contact.cut;
                    contact.cut |= cut_now;
                    (false, cut_now)
                }
            }
        };
        if cut_now {
            self.cut_for_outage();
        }
        if regained {
            tracing::info!("the session store answers again; logins resume");
            // The housekeeping loop records what waited and rechecks every build: slow work
            // that must not hold up the next ping.
            self.inner.resync.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Cuts every connection here because the store has been out of reach too long, and
    /// draws a new instance id: others will detach the old id's connections from the
    /// sessions once its heartbeat is old, and must not take new connections with them.
    pub(super) fn cut_for_outage(&self) {
        // The new id first: a connection racing this cut is then either cut or under it.
        let fresh = russh::keys::key::safe_rng().next_u32();
        self.inner.instance.store(fresh, std::sync::atomic::Ordering::SeqCst);
        let builds = self.inner.cut_signals.cut_all();
        let secs = self.inner.options.max_store_outage.as_secs();
        tracing::warn!(
            builds = builds.len(),
            "no answer from the session store for {secs} s; cut every connection (fail closed)"
        );
        let at = self.now();
        let events = builds
            .into_iter()
            .map(|build_id| Event {
                build_id,
                at,
                kind: EventKind::StoreUnreachable,
                reason: format!(
                    "no answer from the session store for {secs} s: this build's connections were cut (fail closed); the session goes on, and users can reconnect once the store answers"
                ),
            })
            .collect();
        self.inner.events.publish(events);
    }
}
