//! The background work ([`Authority::run_housekeeping`]) and the deadline and purge steps it
//! takes, which a platform may also call itself.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use super::Authority;
use super::contact::CONTACT_INTERVAL;
use crate::error::{Error, Result};
use crate::session::{Action, Input};

/// The expiry task looks at the clock at least this often, so new sessions and clock jumps
/// are noticed without a wake-up channel.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The expiry task never spins: a deadline it could not act on is retried after this.
const EXPIRY_MIN_WAIT: Duration = Duration::from_millis(20);
/// How often every build with connections here is checked against the store: the safety net
/// under a shared store's notices, which can be lost.
const RECHECK_EVERY_ROUNDS: u32 = 5;

impl Authority {
    /// Everything an authority does in the background, until `shutdown` resolves: enforces
    /// deadlines; follows a shared store's notices of sessions ended elsewhere (and rechecks
    /// every build with connections here, the safety net under lost notices); pings the store
    /// with this authority's heartbeat and fails closed while it does not answer; records the
    /// connection ends that waited for it; detaches the connections of gateways that went
    /// silent; and purges old tombstones. Spawn it on your runtime; a
    /// [`Gateway`](crate::Gateway) runs its own. Store errors are logged and retried.
    pub async fn run_housekeeping(&self, shutdown: impl Future<Output = ()>) {
        // Five loops in one task (the fifth sends the events to the fleet's log), each
        // waiting on its own: a slow store call in one never
        // holds up the others, above all the contact check that enforces `max_store_outage`.
        let (sender, mut notices) = tokio::sync::mpsc::channel(1024);
        let watch = async {
            self.inner.store.watch(sender).await;
            std::future::pending::<()>().await;
        };
        let follow = async {
            while let Some(notice) = notices.recv().await {
                self.noticed(notice).await;
            }
            std::future::pending::<()>().await;
        };
        let contact = async {
            loop {
                self.check_contact().await;
                tokio::time::sleep(CONTACT_INTERVAL).await;
            }
        };
        let housekeeping = async {
            let mut rounds: u32 = 0;
            loop {
                let wait = self.round(rounds).await;
                rounds = rounds.wrapping_add(1);
                tokio::time::sleep(wait).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = watch => {}
            () = follow => {}
            () = contact => {}
            () = housekeeping => {}
            () = self.append_to_fleet_log() => {}
        }
    }

    /// One round of [`Authority::run_housekeeping`]; returns how long to wait for the next.
    pub(super) async fn round(&self, rounds: u32) -> Duration {
        if self.in_contact().is_err() {
            return EXPIRY_CHECK_INTERVAL; // nothing to do without the store
        }
        self.report_unreported().await;
        if self.inner.resync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.recheck().await;
        }
        if let Err(err) = self.expire_due().await {
            tracing::warn!(%err, "expiring sessions failed; retrying");
        }
        if rounds % 60 == 59
            && let Err(err) = self.purge().await
        {
            tracing::warn!(%err, "purging tombstones failed; retrying");
        }
        if rounds.is_multiple_of(RECHECK_EVERY_ROUNDS) {
            self.recheck().await;
            if let Err(err) = self.detach_silent().await {
                tracing::warn!(%err, "detaching the connections of silent gateways failed; retrying");
            }
        }
        match self.next_deadline().await {
            Ok(Some(at)) => Duration::try_from(at - self.now())
                .unwrap_or(Duration::ZERO)
                .clamp(EXPIRY_MIN_WAIT, EXPIRY_CHECK_INTERVAL),
            _ => EXPIRY_CHECK_INTERVAL,
        }
    }

    /// Ends every session whose deadline has passed on the clock; returns how many ended.
    pub async fn expire_due(&self) -> Result<usize> {
        let due = self.inner.store.due_sessions(self.now()).await?;
        let mut ended = 0;
        let mut failure = None;
        for build_id in due {
            // One failing build must not hold back the others' deadlines.
            match self.apply(&build_id, Input::Tick).await {
                Ok((_, t)) if t.actions.contains(&Action::RevokeCredentials) => ended += 1,
                Ok(_) | Err(Error::UnknownBuild { .. }) => {}
                Err(err) => {
                    tracing::warn!(%build_id, %err, "could not expire session");
                    failure = Some(err);
                }
            }
        }
        match failure {
            Some(err) if ended == 0 => Err(err),
            _ => Ok(ended),
        }
    }

    /// The earliest time at which a live session's deadline falls.
    pub async fn next_deadline(&self) -> Result<Option<OffsetDateTime>> {
        self.inner.store.next_deadline().await
    }

    /// Forgets sessions, and their tombstones, that ended longer ago than the retention.
    /// Returns how many builds were forgotten.
    pub async fn purge(&self) -> Result<usize> {
        let retention = time::Duration::try_from(self.inner.options.tombstone_retention)
            .map_err(|_| Error::invalid("tombstone_retention", "out of range"))?;
        let cutoff = self.now().checked_sub(retention).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let purged = self.inner.store.purge(cutoff).await?;
        // Signals nobody holds go too (the purged builds' among them).
        self.inner.cut_signals.sweep();
        Ok(purged.len())
    }
}
