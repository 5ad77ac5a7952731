//! User connections: recording them in the session, the [`LiveConnection`] handle that reports
//! their end exactly once, and the queue of ends that wait for an absent store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use rand_core::Rng;
use tokio::sync::watch;

use super::Authority;
use super::verify::{Attempt, Role};
use crate::build::BuildId;
use crate::error::{DenialReason, Error, Result};
use crate::session::{ConnectionId, CutSignal, Input, Protocol, Session};

/// Disconnects that could not be recorded (the store was out of reach) wait for it to come
/// back, up to this many; beyond that the oldest are dropped and the session's grace period
/// ends it instead of the logout.
const MAX_UNREPORTED: usize = 100_000;

/// A build's connection ends waiting for the write in flight, each with its reporter.
pub(super) type Ending = Vec<(Input, tokio::sync::oneshot::Sender<Result<()>>)>;

/// How a user connection ended, as the gateway saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Its user closed it: a logout candidate.
    Left,
    /// The network lost it: a reconnect may follow.
    Lost,
    /// The gateway let go of it (stopping): neither.
    Detached,
}

/// An SSH login the gateway let in.
pub(crate) enum Admitted {
    /// A user connection, counted in the session.
    User(Session, LiveConnection),
    /// The build's agent, with the signal that ends it with the session.
    Agent(Session, CutSignal),
}

/// A user connection that the session has accepted, from [`Authority::connected`]. Its end
/// is reported once with [`LiveConnection::disconnect`] (the user left: after the steps
/// completed, the last one is a logout), [`LiveConnection::lost`] (the network lost it:
/// after the steps completed, the last one opens the reconnect window) or
/// [`LiveConnection::detach`] (the gateway let go of it: neither);
/// [`LiveConnection::closed`] resolves when access ends and the connection must be closed.
///
/// Cheap to clone, and usable from any thread: clones share the one connection, and a second
/// report changes nothing. It is also a guard: when the last clone is dropped without a
/// report (a panic, a cancelled task, a garbage-collected binding object), it is reported as
/// lost on the runtime the connection was recorded on, so a vanished connection can never
/// hold a session open, and is never taken for the user logging out.
#[derive(Clone)]
pub struct LiveConnection {
    shared: Arc<Connection>,
}

struct Connection {
    build_id: BuildId,
    id: ConnectionId,
    protocol: Protocol,
    cut: CutSignal,
    /// Set until the end has been recorded.
    reporter: tokio::sync::Mutex<Option<Authority>>,
    /// Where a drop reports the end (the runtime the connection was recorded on).
    runtime: Option<tokio::runtime::Handle>,
    /// Report a drop as a detach (gateway stopping), not as the user leaving.
    detach: AtomicBool,
    /// Turns true once the end has been recorded.
    ended: watch::Sender<bool>,
}

impl std::fmt::Debug for LiveConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConnection")
            .field("build_id", &self.shared.build_id)
            .field("id", &self.shared.id)
            .field("protocol", &self.shared.protocol)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(authority) = self.reporter.get_mut().take() else {
            return;
        };
        let (build_id, connection) = (self.build_id.clone(), self.id);
        let how = if *self.detach.get_mut() { End::Detached } else { End::Lost };
        let input = authority.end_of(connection, how);
        let report = async move {
            if let Err(err) = authority.record_end(&build_id, input).await {
                tracing::warn!(%build_id, %err, "recording a dropped connection's disconnect failed");
            }
        };
        // A runtime that has shut down drops the task instead of running it: nothing to do
        // then, as nothing else runs either.
        match self.runtime.clone().or_else(|| tokio::runtime::Handle::try_current().ok()) {
            Some(runtime) => drop(runtime.spawn(report)),
            None => {
                tracing::warn!(build_id = %self.build_id, %connection, "connection dropped outside a tokio runtime; its disconnect is not recorded");
            }
        }
    }
}

impl LiveConnection {
    fn new(
        authority: Authority,
        build_id: BuildId,
        id: ConnectionId,
        protocol: Protocol,
        cut: CutSignal,
    ) -> Self {
        let shared = Connection {
            build_id,
            id,
            protocol,
            cut,
            reporter: tokio::sync::Mutex::new(Some(authority)),
            runtime: tokio::runtime::Handle::try_current().ok(),
            detach: AtomicBool::new(false),
            ended: watch::channel(false).0,
        };
        Self { shared: Arc::new(shared) }
    }

    /// The build it belongs to.
    pub fn build_id(&self) -> &BuildId {
        &self.shared.build_id
    }

    /// Its id within the session.
    pub fn id(&self) -> ConnectionId {
        self.shared.id
    }

    /// SSH or VNC.
    pub fn protocol(&self) -> Protocol {
        self.shared.protocol
    }

    /// Whether access has ended for this connection: close it.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.is_cut()
    }

    /// The signal that fires when the connection must be cut.
    pub fn cut_signal(&self) -> CutSignal {
        self.shared.cut.clone()
    }

    /// Resolves when access ends for this connection (revoke, deadline, cancel: close it
    /// then, [`LiveConnection::is_cut`] is true), once its end has been recorded, or once
    /// every clone is gone. The future holds no clone itself, so a binding may keep it
    /// pending while its own object is collected.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mut cut, mut ended) = (self.shared.cut.clone(), self.shared.ended.subscribe());
        async move {
            tokio::select! {
                () = cut.cut() => {}
                // An error here: the connection is gone (its sender dropped with it).
                _ = ended.wait_for(|ended| *ended) => {}
            }
        }
    }

    /// Records that the connection closed because its user left. After the steps completed,
    /// the last one to close is a logout: the session ends and the build is finished. Only
    /// the first report counts; later ones return `Ok` and change nothing.
    pub async fn disconnect(&self) -> Result<()> {
        self.report(End::Left).await
    }

    /// Records that the connection was lost to the network (a reset, a keepalive timeout, a
    /// client killed with its channels open), not closed by its user. After the steps
    /// completed, the last one to go opens the reconnect window: the session ends as
    /// `connection_lost` only if nobody reconnects in time. Only the first report counts.
    pub async fn lost(&self) -> Result<()> {
        self.report(End::Lost).await
    }

    /// Records that the gateway let go of the connection (stopping, or moving the user
    /// elsewhere): neither a logout nor a loss. Only the first report counts.
    pub async fn detach(&self) -> Result<()> {
        self.report(End::Detached).await
    }

    /// From now on, a drop without a report counts as the gateway letting go of the connection
    /// (not a loss): for a gateway that is stopping. An explicit report says for itself.
    pub fn detach_on_drop(&self) {
        self.shared.detach.store(true, Ordering::SeqCst);
    }

    /// Records the end `how` (see [`End`]): the one entry for the three reports above.
    pub(crate) async fn end(&self, how: End) -> Result<()> {
        self.report(how).await
    }

    async fn report(&self, how: End) -> Result<()> {
        // Held across the store write, so that reports from several clones at once are one
        // report: the others wait, then find it done. Should this future be dropped before the
        // store answers, the reporter stays set for a later report, or for the last clone's drop.
        let mut reporter = self.shared.reporter.lock().await;
        let Some(authority) = reporter.as_ref() else { return Ok(()) };
        let input = authority.end_of(self.shared.id, how);
        let result = authority.record_end(&self.shared.build_id, input).await;
        reporter.take();
        self.shared.ended.send_replace(true);
        result
    }
}

impl Authority {
    /// Records a new user connection. Refused with [`Error::SessionEnded`] once access is over.
    pub async fn connected(&self, build_id: &BuildId, protocol: Protocol) -> Result<LiveConnection> {
        self.connect(build_id, protocol).await.map(|(_, live)| live)
    }

    /// [`Authority::connected`], also returning the session as it was when the connection was
    /// admitted (the gateway needs its route).
    pub(super) async fn connect(
        &self,
        build_id: &BuildId,
        protocol: Protocol,
    ) -> Result<(Session, LiveConnection)> {
        // The high half names this authority, so that if it dies others can tell its
        // connections apart in the shared sessions (see `detach_silent`).
        // The cut signal exists before the session counts the connection, so that an end
        // announced from elsewhere in between still reaches it; the id is read after it, so
        // that an outage cut in between (which draws a new id first) leaves this connection
        // either cut or under the new id.
        let cut = self.inner.cut_signals.signal(build_id);
        let connection = ConnectionId::new(self.instance(), russh::keys::key::safe_rng().next_u32());
        let (session, t) = match self.apply(build_id, Input::Connected { connection, protocol }).await {
            Ok(done) => done,
            Err(err @ Error::StoreUnavailable { .. }) => {
                // The store may have counted the connection with its answer lost: have it
                // uncounted once the store answers (a no-op if it never was).
                self.keep_unreported(build_id.clone(), Input::Detached { connection });
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        if let Some(reason) = t.refused {
            return Err(Error::SessionEnded { build_id: build_id.to_string(), reason });
        }
        Ok((session, LiveConnection::new(self.clone(), build_id.clone(), connection, protocol, cut)))
    }

    /// Verifies a signed SSH login and records it as a live connection in one step: the
    /// gateway's path from a presented key to a connection that is cut when access ends.
    pub(crate) async fn connect_ssh(&self, username: &str, fingerprint: &str) -> Result<Admitted> {
        let (build_id, role) = self.verify_ssh_key(username, fingerprint, Attempt::Signed).await?;
        match role {
            Role::User => {
                let (session, live) =
                    self.connect(&build_id, Protocol::Ssh).await.map_err(|err| match err {
                        Error::SessionEnded { .. } => Error::denied(DenialReason::Revoked),
                        other => other,
                    })?;
                Ok(Admitted::User(session, live))
            }
            // An agent is not a user connection: it never counts towards logout.
            Role::Agent => {
                let cut = self.inner.cut_signals.signal(&build_id);
                let session = self.session(&build_id).await?;
                if session.is_ended() {
                    return Err(Error::denied(DenialReason::Revoked));
                }
                Ok(Admitted::Agent(session, cut))
            }
        }
    }

    /// Records a connection's end. If the store is out of reach, the report waits for it to
    /// answer again, so that an outage never leaves a session counting a connection that is
    /// gone (which would keep the user's logout from ending it).
    ///
    /// Ends of one build are written together: while one write for the build is in flight,
    /// later ends queue, and the next write takes them all. A revocation ends every connection
    /// of a build at once; one compare-and-swap each would race one another for the session
    /// (a write per loser, over and over), and hold up the cuts of other builds meanwhile.
    pub(super) async fn record_end(&self, build_id: &BuildId, input: Input) -> Result<()> {
        let (done, recorded) = tokio::sync::oneshot::channel();
        let first = {
            let mut ending = self.inner.ending.lock().unwrap_or_else(PoisonError::into_inner);
            match ending.get_mut(build_id) {
                Some(queued) => {
                    queued.push((input, done));
                    false
                }
                None => {
                    ending.insert(build_id.clone(), vec![(input, done)]);
                    true
                }
            }
        };
        if first {
            let writer = EndWriter {
                authority: self.clone(),
                build_id: build_id.clone(),
                in_flight: Vec::new(),
                finished: false,
            };
            match tokio::runtime::Handle::try_current() {
                // A task of its own, so that a caller that stops waiting strands no one queued.
                Ok(runtime) => drop(runtime.spawn(writer.run())),
                // Polled outside tokio: written here (should this caller stop waiting, the
                // writer's drop leaves the ends to the housekeeping).
                Err(_) => writer.run().await,
            }
        }
        recorded.await.unwrap_or_else(|_| {
            let message = "the task writing connection ends stopped (its runtime shut down?); the housekeeping records this end";
            Err(Error::Internal { message: message.into() })
        })
    }

    /// Keeps a connection's end to be recorded once the store answers again.
    pub(super) fn keep_unreported(&self, build_id: BuildId, input: Input) {
        let mut unreported = self.inner.unreported.lock().unwrap_or_else(PoisonError::into_inner);
        if unreported.len() >= MAX_UNREPORTED {
            unreported.pop_front();
        }
        unreported.push_back((build_id, input));
    }

    /// Records the connection ends that waited for the store, in order; stops at the first
    /// that the store cannot take (it keeps its place, and the rest theirs).
    pub(super) async fn report_unreported(&self) {
        loop {
            let next = self.inner.unreported.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some((build_id, input)) = next else { return };
            match self.apply(&build_id, input.clone()).await {
                Ok(_) | Err(Error::UnknownBuild { .. }) => {}
                Err(Error::StoreUnavailable { .. } | Error::Contention { .. }) => {
                    self.inner
                        .unreported
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_front((build_id, input));
                    return;
                }
                Err(err) => tracing::warn!(%build_id, %err, "recording a connection's end failed"),
            }
        }
    }

    /// How a connection's end is recorded. A connection admitted under an earlier instance id
    /// was cut by a store outage (the only thing that draws a new id), so the gateway let it go.
    pub(super) fn end_of(&self, connection: ConnectionId, how: End) -> Input {
        match how {
            _ if connection.instance() != self.instance() => Input::Detached { connection },
            End::Detached => Input::Detached { connection },
            End::Left => Input::Disconnected { connection },
            End::Lost => Input::Lost { connection },
        }
    }

    /// This authority's current id in a shared store.
    pub(super) fn instance(&self) -> u32 {
        self.inner.instance.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes one build's queued connection ends, a batch at a time, until none are left.
///
/// Should it stop early (a panic, or a runtime shutting down, even before it first ran), the
/// ends it held go to the queue the housekeeping records (a repeat of an end that landed
/// changes nothing), its reporters get an error instead of waiting for good, and the next end
/// starts a writer of its own.
struct EndWriter {
    authority: Authority,
    build_id: BuildId,
    in_flight: Vec<Input>,
    finished: bool,
}

impl EndWriter {
    async fn run(mut self) {
        loop {
            let batch = {
                let mut ending = self.authority.inner.ending.lock().unwrap_or_else(PoisonError::into_inner);
                match ending.get_mut(&self.build_id) {
                    Some(queued) if !queued.is_empty() => std::mem::take(queued),
                    // Removed under the lock that queues: an end from now on starts a writer.
                    _ => {
                        ending.remove(&self.build_id);
                        self.finished = true;
                        return;
                    }
                }
            };
            let mut waiting = Vec::with_capacity(batch.len());
            for (input, done) in batch {
                self.in_flight.push(input);
                waiting.push(done);
            }
            let result = self.authority.apply_all(&self.build_id, &self.in_flight).await.map(drop);
            let inputs = std::mem::take(&mut self.in_flight);
            // Unanswered, or lost every compare-and-swap race: recorded later all the same.
            if let Err(Error::StoreUnavailable { .. } | Error::Contention { .. }) = &result {
                for input in inputs {
                    self.authority.keep_unreported(self.build_id.clone(), input);
                }
            }
            for done in waiting {
                let _ = done.send(result.as_ref().map_err(Error::duplicate).copied());
            }
        }
    }
}

impl Drop for EndWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let queued = {
            let mut ending = self.authority.inner.ending.lock().unwrap_or_else(PoisonError::into_inner);
            ending.remove(&self.build_id).unwrap_or_default()
        };
        let inputs = self.in_flight.drain(..).chain(queued.into_iter().map(|(input, _)| input));
        for input in inputs {
            self.authority.keep_unreported(self.build_id.clone(), input);
        }
    }
}
