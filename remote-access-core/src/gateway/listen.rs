//! Accepting and stopping, the same for every listener (SSH, each VNC port): connections are
//! served in tasks of their own, and when the gateway stops they get a grace period to close
//! before the rest are aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::workers::Workers;
use crate::tunnel;

/// How long a stopping gateway waits for its connections to close before aborting them.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After a failed accept (out of file descriptors and the like), wait this long instead of
/// spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The gateway's stop signal, as each connection sees it.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A signal and its trigger: sending `true` stops every holder.
    pub(super) fn new() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Self(receiver))
    }

    /// Resolves once the gateway is stopping (or its trigger is gone).
    pub(crate) async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Accepts on `listener` until `stop`, serving each connection with `serve` in a task of its
/// own; then waits up to [`SHUTDOWN_GRACE`] for those to end and aborts the rest. `what` names
/// the listener in logs.
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
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            () = stopping.stopped() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // No TCP_NODELAY here: russh writes every SSH packet on its own, and with
                    // Nagle off a bulk transfer through the gateway took 18 % more CPU and ran at
                    // two thirds the speed (`--cipher aes128-gcm@openssh.com`, 2026-11-29). The
                    // VNC proxy sets it on its users' sockets, whose writes are whole updates.
                    let _ = tunnel::keep_alive(&tcp);
                    match &workers {
                        None => {
                            connections.spawn(serve(tcp, peer, stop.clone()));
                        }
                        Some(workers) => {
                            // Registered again with the worker's own I/O driver, there.
                            let (serve, stop) = (serve.clone(), stop.clone());
                            let moved = tcp.into_std();
                            connections.spawn_on(
                                async move {
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
