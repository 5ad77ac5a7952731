//! Threads of the gateway's own, each a single-threaded runtime that serves whole connections
//! (`GatewayOptions::worker_threads`).
//!
//! Why: on a multi-threaded runtime, a connection's tasks (russh's session, the splice to the
//! builder) wake each other across threads for every few packets, and those hand-offs cost
//! about a fifth of the gateway's CPU in a bulk transfer (`docs/benchmarks.md`, "Per cipher").
//! Here every task of a connection runs on the thread that accepted it, and the threads share
//! only the gateway's state (the authority, the admission counters), as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The running threads; dropping this stops them (each drops its runtime, and with it the
/// tasks still on it, on its own thread).
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with the pool: each thread's `block_on` then returns.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` threads (at least one).
    pub(crate) fn start(count: usize) -> Result<Self> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .map_err(|err| Error::Internal {
                    message: format!("cannot start a gateway thread: {err}"),
                })?;
        }
        Ok(Self { handles, next: AtomicUsize::new(0), _stops: stops })
    }

    /// The runtime for the next connection, in turn.
    pub(crate) fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}
