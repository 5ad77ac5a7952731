//! A network's failed logins, counted with the whole fleet.
//!
//! Every refused key or password goes to the store as well as to this gateway's [`Admission`]
//! count, and the store's count (every gateway's failures from that network) replaces this
//! gateway's whenever the store answers. Before each credential is checked the gateway asks the
//! store again: a network backed off on one gateway gets no guess checked on another, so a fleet
//! allows a network no more guesses than one gateway does. New connections are admitted or
//! closed on this gateway's count alone, at no round trip, and connections cut for silence or
//! slowness count here only: what reaches the store costs the sender a key exchange and a login
//! attempt each, which bounds the store's writes (and its memory: a run lives 15 minutes) by the
//! rate the gateways can check logins. While the store is out of reach this gateway's own count
//! stands in.
//!
//! [`Admission`]: super::admission::Admission

use std::net::IpAddr;
use std::time::Duration;

use super::Shared;
use super::admission::{Prefix, Target};

impl Shared {
    /// Whether `ip`'s network is backed off, by this gateway's count or the fleet's.
    pub(super) async fn backing_off(&self, ip: IpAddr) -> bool {
        if self.admission.backing_off(ip) {
            return true;
        }
        // Boxed, here and below: the store's futures (Redis) are large, and inline they would
        // size the futures of the connections that wait on them.
        match Box::pin(self.authority.failures(&Prefix::of(ip).run())).await {
            Ok(run) => self.admission.set_failures(ip, run),
            Err(err) => {
                tracing::debug!(%ip, %err, "the fleet's failed logins from this network were not read")
            }
        }
        self.admission.backing_off(ip)
    }

    /// Counts a refused key or password from `ip`, against `target` when known: here at once
    /// (so that this gateway holds back the next guess while the store is asked), then for the
    /// fleet, whose count then stands.
    pub(super) async fn failed(&self, ip: IpAddr, target: Option<Target>) {
        self.admission.failed(ip, target.as_ref());
        let tag = target.as_ref().map(Target::tag);
        match Box::pin(self.authority.count_failure(&Prefix::of(ip).run(), tag.as_deref())).await {
            Ok(count) => self.admission.set_failures(ip, Some((count, Duration::ZERO))),
            Err(err) => tracing::debug!(%ip, %err, "a failed login was counted on this gateway only"),
        }
    }

    /// Counts a failure on this gateway only: a connection cut for silence or slowness before
    /// its login, or a guess refused unchecked because the network is backed off.
    pub(super) fn failed_here(&self, ip: IpAddr) {
        self.admission.failed(ip, None);
    }

    /// A login from `ip` to `target` succeeded: the failures from its network against that
    /// target are taken back, here and for the fleet, and only those.
    pub(super) async fn succeeded(&self, ip: IpAddr, target: Target) {
        self.admission.succeeded(ip, &target);
        match Box::pin(self.authority.take_back_failures(&Prefix::of(ip).run(), &target.tag())).await {
            Ok(run) => self.admission.set_failures(ip, run),
            Err(err) => tracing::debug!(%ip, %err, "failed logins were taken back on this gateway only"),
        }
    }
}
