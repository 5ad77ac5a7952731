//! Who may start a connection (SSH or VNC), and what the gateway holds right now.
//!
//! A connection that has not authenticated yet holds a slot: at most `max_unauthenticated` in
//! all and `max_unauthenticated_per_ip` per source address. Failed logins (and connections cut
//! at the pre-auth deadline) are counted per source address, not connections that just close,
//! such as port scans and load balancers' health checks; past `failures_before_backoff` in a row, that address's new connections are
//! closed at once for a backoff that doubles with each further failure (1 s up to 5 min). The
//! counts are what [`crate::GatewayStats`] reports, so tests and operators can see that
//! nothing is left behind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::GatewayOptions;
use crate::throttle::Throttle;

const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// A run of failures from an address is forgotten after this long without one.
const MEMORY: Duration = Duration::from_secs(15 * 60);

/// What a running gateway holds right now; every count returns to zero when its connections
/// are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GatewayStats {
    /// SSH connections being served (authenticated or not).
    pub ssh_connections: usize,
    /// VNC connections being served (in the handshake or spliced).
    pub vnc_connections: usize,
    /// Connections of either kind that have not authenticated yet.
    pub unauthenticated: usize,
    /// Connections to builders that SSH users opened (`direct-tcpip`).
    pub builder_channels: usize,
    /// Source addresses with recent failed logins being remembered.
    pub addresses_with_failures: usize,
}

pub(crate) struct Admission {
    max_unauthenticated: usize,
    max_per_ip: usize,
    unauthenticated: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    failures: Throttle<IpAddr>,
    ssh: AtomicUsize,
    vnc: AtomicUsize,
    channels: AtomicUsize,
}

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManyWaiting,
    TooManyWaitingFromAddress,
    BackingOff,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooManyWaiting => "too many connections waiting to authenticate",
            Self::TooManyWaitingFromAddress => {
                "too many connections from this address waiting to authenticate"
            }
            Self::BackingOff => "too many failed logins from this address; backing off",
        })
    }
}

/// What a connection counts as while it is served.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Ssh,
    Vnc,
    Channel,
}

/// A connection waiting to authenticate: its slots are freed when this drops.
pub(crate) struct Waiting {
    admission: Arc<Admission>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut counts = self.admission.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Counts one connection of a kind while it lives.
pub(crate) struct Counted {
    admission: Arc<Admission>,
    kind: Kind,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.admission.counter(self.kind).fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub(crate) fn new(options: &GatewayOptions) -> Self {
        let free = u32::try_from(options.failures_before_backoff).unwrap_or(u32::MAX);
        Self {
            max_unauthenticated: options.max_unauthenticated,
            max_per_ip: options.max_unauthenticated_per_ip,
            unauthenticated: Arc::new(Semaphore::new(options.max_unauthenticated)),
            per_ip: Mutex::new(HashMap::new()),
            failures: Throttle::new(free, BACKOFF.0, BACKOFF.1, MEMORY),
            ssh: AtomicUsize::new(0),
            vnc: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
        }
    }

    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Ssh => &self.ssh,
            Kind::Vnc => &self.vnc,
            Kind::Channel => &self.channels,
        }
    }

    /// Counts a connection of `kind` until the guard drops.
    pub(crate) fn count(self: &Arc<Self>, kind: Kind) -> Counted {
        self.counter(kind).fetch_add(1, Ordering::SeqCst);
        Counted { admission: self.clone(), kind }
    }

    /// Lets a new connection from `ip` start authenticating, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Waiting, Refusal> {
        if self.failures.blocked(&ip).is_some() {
            return Err(Refusal::BackingOff);
        }
        let permit = self.unauthenticated.clone().try_acquire_owned().map_err(|_| Refusal::TooManyWaiting)?;
        let mut counts = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(Refusal::TooManyWaitingFromAddress);
        }
        *count += 1;
        Ok(Waiting { admission: self.clone(), ip, _permit: permit })
    }

    /// Counts a failed login from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let (count, blocked) = self.failures.failed(&ip);
        if let Some(backoff) = blocked {
            tracing::info!(%ip, count, ?backoff, "failed logins in a row from this address; backing off");
        }
    }

    /// A login from `ip` succeeded: its run of failures ends.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        self.failures.succeeded(&ip);
    }

    pub(crate) fn stats(&self) -> GatewayStats {
        GatewayStats {
            ssh_connections: self.ssh.load(Ordering::SeqCst),
            vnc_connections: self.vnc.load(Ordering::SeqCst),
            unauthenticated: self.max_unauthenticated - self.unauthenticated.available_permits(),
            builder_channels: self.channels.load(Ordering::SeqCst),
            addresses_with_failures: self.failures.tracked(),
        }
    }
}
