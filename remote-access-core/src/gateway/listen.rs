//! Binding, accepting, draining and stopping, the same for every listener (SSH, each VNC
//! port): connections are served in tasks of their own; a draining gateway closes its
//! listeners and serves the connections it has until they end; when the gateway stops they get
//! a grace period to close before the rest are aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::workers::Workers;
use crate::tunnel;

/// How long a stopping gateway waits for its connections to close before aborting them.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After a failed accept (out of file descriptors and the like), wait this long instead of
/// spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How many connections the kernel may hold finished but not yet accepted (capped by
/// `net.core.somaxconn`, 4096 on current Linux). Rust's and tokio's `bind` ask for 128: under a
/// flood of reconnecting idle connections (tests/attacks.rs) that queue stayed full, the kernel
/// dropped the handshakes of whoever came next, and a user's client waited through the SYN-ACK
/// retransmissions (1, 3, 7, 15, 31 s) before the gateway ever saw it.
const BACKLOG: u32 = 4096;
/// How many accepted connections may wait for their task's first run, where each is admitted
/// (or evicts another): past this the loop leaves connections in the kernel's queue. Without
/// it, a flood that keeps the queue full had the loop accept thousands ahead of the tasks
/// serving them, each holding its socket and task, past any pool's bound.
const STARTING: usize = 256;

/// Binds a listening socket on `addr` with [`BACKLOG`] (and `SO_REUSEADDR`, as tokio's `bind`
/// sets it, so that a restarted gateway binds while old connections are in `TIME_WAIT`); with
/// `reuse_port`, `SO_REUSEPORT` too, so that another gateway process can listen on it as well
/// (`GatewayOptions::reuse_port`).
pub(super) fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// With `SO_REUSEPORT`, Linux resets the connections waiting in a closing listener's queue
/// unless `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14 and later), which hands them to another
/// listener on the port: says so once, where the operator looks, when it is not.
pub(super) fn warn_unless_requests_migrate() {
    if !cfg!(target_os = "linux") {
        return;
    }
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req") {
        Ok(value) if value.trim() == "1" => {}
        Ok(_) => tracing::warn!(
            "reuse_port is on but net.ipv4.tcp_migrate_req is 0: connections waiting in this gateway's queue \
             when it drains are reset instead of handed to the next gateway; set it to 1 \
             (sysctl -w net.ipv4.tcp_migrate_req=1)"
        ),
        Err(err) => tracing::warn!(
            %err,
            "reuse_port is on but net.ipv4.tcp_migrate_req cannot be read (Linux before 5.14?): \
             connections waiting in this gateway's queue when it drains are reset"
        ),
    }
}

/// [`bind`] on the first of `addr`'s resolutions (`"0.0.0.0:2222"`, `"localhost:2222"`) that
/// binds, as [`TcpListener::bind`] resolves and tries them.
pub(super) async fn bind_resolved(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        match bind(resolved, reuse_port) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to no address"))
    }))
}

/// Accepts a connection once fewer than [`STARTING`] accepted ones wait for their first run;
/// the permit goes with the connection until then. Never resolves without a listener (it was
/// closed to drain).
async fn accept(
    listener: Option<&TcpListener>,
    starting: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let Some(listener) = listener else { return std::future::pending().await };
    // Never closed, so this waits for a permit and never fails.
    let permit = starting.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (tcp, peer) = listener.accept().await?;
    Ok((tcp, peer, permit))
}

/// Where a gateway is in its life, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Serving,
    /// No new connections: the listeners are closed, live connections are served on.
    Draining,
    /// Every connection is let go.
    Stopping,
}

/// The gateway's phase, as each listener and connection sees it.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<Phase>);

impl Stop {
    /// A signal and its trigger, which moves every holder to the phase it sends.
    pub(super) fn new() -> (watch::Sender<Phase>, Self) {
        let (sender, receiver) = watch::channel(Phase::Serving);
        (sender, Self(receiver))
    }

    /// Resolves once the gateway is stopping (or its trigger is gone).
    pub(crate) async fn stopped(&mut self) {
        let _ = self.0.wait_for(|phase| *phase == Phase::Stopping).await;
    }

    /// Resolves once the gateway takes no new connections (or its trigger is gone).
    pub(super) async fn draining(&mut self) {
        let _ = self.0.wait_for(|phase| *phase >= Phase::Draining).await;
    }
}

/// Accepts on `listener` until `stop`, serving each connection with `serve` in a task of its
/// own; then waits up to [`SHUTDOWN_GRACE`] for those to end and aborts the rest. `what` names
/// the listener in logs. When the gateway drains, the listener is closed at once (with
/// `SO_REUSEPORT` and `net.ipv4.tcp_migrate_req`, the kernel hands what waited in its queue to
/// another gateway on the port) and this returns once its connections have ended.
/// With `workers`, each connection is served wholly on one of their threads, in turn.
pub(super) async fn accept_until_stopped<F, Fut>(
    listener: TcpListener,
    stop: Stop,
    what: &'static str,
    workers: Option<Arc<Workers>>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Stop) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let (mut stopping, mut draining) = (stop.clone(), stop.clone());
    let starting = Arc::new(Semaphore::new(STARTING));
    let mut listener = Some(listener);
    loop {
        if listener.is_none() && connections.is_empty() {
            break; // drained
        }
        tokio::select! {
            () = stopping.stopped() => break,
            () = draining.draining(), if listener.is_some() => {
                listener = None;
                tracing::info!(listener = what, live = connections.len(), "closed to new connections; draining");
            }
            accepted = accept(listener.as_ref(), &starting) => match accepted {
                Ok((tcp, peer, started)) => {
                    // A finished task's memory is freed only when it is joined: reap here too,
                    // or a flood that keeps this branch ready outpaces the branch below.
                    while connections.try_join_next().is_some() {}
                    // No TCP_NODELAY here: russh writes every SSH packet on its own, and with
                    // Nagle off a bulk transfer through the gateway took 18 % more CPU and ran at
                    // two thirds the speed (`--cipher aes128-gcm@openssh.com`, 2026-11-29). The
                    // VNC proxy sets it on its users' sockets, whose writes are whole updates.
                    let _ = tunnel::keep_alive(&tcp);
                    match &workers {
                        None => {
                            // `serve` is called inside: an `async` block that awaits a future
                            // it captured holds that future twice (rust-lang/rust#62958), which
                            // doubled what an idle VNC connection costs.
                            let (serve, stop) = (serve.clone(), stop.clone());
                            connections.spawn(async move {
                                drop(started);
                                serve(tcp, peer, stop).await;
                            });
                        }
                        Some(workers) => {
                            // Registered again with the worker's own I/O driver, there.
                            let (serve, stop) = (serve.clone(), stop.clone());
                            let moved = tcp.into_std();
                            connections.spawn_on(
                                async move {
                                    drop(started);
                                    match moved.and_then(TcpStream::from_std) {
                                        Ok(tcp) => serve(tcp, peer, stop).await,
                                        Err(err) => tracing::warn!(%err, listener = what, "handing a connection to a worker thread failed"),
                                    }
                                },
                                workers.next(),
                            );
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, listener = what, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(
            left = connections.len(),
            listener = what,
            "connections did not close in time; aborting them"
        );
        connections.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections the kernel finishes while the gateway is busy wait in its queue. With the
    /// default backlog of 128, the connects past it would not finish (their SYNs dropped, then
    /// retried until they time out); with [`BACKLOG`] all of them do.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_queue_instead_of_being_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        // Below a fresh machine's 1024 open files, with the accepted ends.
        for _ in 0..450 {
            clients.push(TcpStream::connect(addr).await.expect("the kernel finishes the handshake"));
        }
        for _ in 0..clients.len() {
            listener.accept().await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_address_that_resolves_to_nothing_bindable_is_an_error() {
        let taken = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let err = bind_resolved(&taken.local_addr().unwrap().to_string(), false).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        assert!(bind_resolved("no-such-host.invalid:22", false).await.is_err());
    }
}
