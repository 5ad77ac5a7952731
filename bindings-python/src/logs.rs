//! The core's logs in Python's `logging`.
//!
//! The core logs with `tracing` and installs no subscriber; with tracing's `log` feature (on in
//! this crate) each event becomes a `log` record, and pyo3-log turns a `log` record into a
//! `logging` record. This module sits between the two for three reasons:
//!
//! - Names. pyo3-log names a Python logger after the record's target, the Rust module path
//!   (`remote_access_core::gateway::ssh::handler`), which is not under the package's logger.
//!   Records are renamed: the core's to `remote_access.<module path>`
//!   (`remote_access.gateway.ssh.handler`), other crates' (russh, tungstenite) to
//!   `remote_access.deps.<their target>`. Configuring the `remote_access` logger configures
//!   them all.
//! - The GIL. A record is handed to Python under the GIL. The thread that logs must not wait
//!   for it: a runtime thread may log while it holds a lock that a Python thread holding the
//!   GIL waits for (a deadlock), and a busy asyncio loop would slow the network threads. So a
//!   record that passes the level check is formatted where it is made and queued, and one
//!   thread of ours delivers the queue to `logging` in order.
//! - Interpreter exit. That thread must not reach for the GIL once Python finalizes (see
//!   `runtime`): `shutdown` delivers what is queued and stops it, from the `atexit` handler.
//!
//! The level check uses pyo3-log's cache of each logger's effective level, filled on a
//! logger's first record: it is what keeps records that nobody wants from costing anything,
//! and why a level changed after that needs `reset_log_cache()`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3_log::{Caching, ResetHandle};

/// Records queued for Python at most; past this (Python's handlers cannot keep up), records
/// are counted and dropped, and the count is logged once there is room again.
const QUEUE: usize = 10_000;

/// How long exit waits for Python's handlers to take what is queued.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The Python logger of everything this package logs.
const PACKAGE: &str = "remote_access";

/// pyo3-log's level cache, for `reset_log_cache()`.
static RESET: OnceLock<ResetHandle> = OnceLock::new();
/// Set by `shutdown`: records are dropped from then on.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The delivering thread, until `shutdown` stops it.
static DELIVERY: Mutex<Option<Delivery>> = Mutex::new(None);

struct Delivery {
    queue: SyncSender<Message>,
    /// Signalled once the thread is done.
    finished: Receiver<()>,
    /// The process the thread runs in (a forked child has no such thread).
    pid: u32,
}

/// A record made on some thread, for the delivering thread.
struct Owned {
    level: Level,
    /// Renamed, with `::` separators (pyo3-log turns them into dots).
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

impl Owned {
    fn new(level: Level, target: String, message: String) -> Self {
        Self { level, target, message, module_path: None, file: None, line: None }
    }
}

enum Message {
    Record(Owned),
    /// Deliver what came before, then end.
    Stop,
}

/// Installs the bridge as the `log` crate's logger (this extension module has its own copy
/// of `log`'s global state, so no other extension can hold it). Called when the module loads.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    // DEBUG and above: TRACE (packet-level detail) would cost a level check per packet.
    let python = pyo3_log::Logger::new(py, Caching::LoggersAndLevels)?.filter(LevelFilter::Debug);
    let _ = RESET.set(python.reset_handle());
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let (done, finished) = std::sync::mpsc::channel();
    let dropped = std::sync::Arc::new(AtomicU64::new(0));
    let bridge =
        Bridge { python: std::sync::Arc::new(python), sender: sender.clone(), dropped: dropped.clone() };
    let python = bridge.python.clone();
    std::thread::Builder::new()
        .name("remote-access-log".into())
        .spawn(move || deliver(&python, &receiver, &dropped, &done))
        .map_err(PyErr::from)?;
    *DELIVERY.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Delivery { queue: sender, finished, pid: std::process::id() });
    // Fails only if this module's `log` already has a logger, which nothing else installs.
    if log::set_boxed_logger(Box::new(bridge)).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
    Ok(())
}

/// The Python logger name (with `::`) of a record's target.
fn python_target(target: &str) -> String {
    match target.strip_prefix("remote_access_core") {
        Some("") => PACKAGE.to_owned(),
        Some(rest) if rest.starts_with("::") => format!("{PACKAGE}{rest}"),
        _ => format!("{PACKAGE}::deps::{target}"),
    }
}

/// The `log` logger: checks the level, then queues the record.
struct Bridge {
    python: std::sync::Arc<pyo3_log::Logger>,
    sender: SyncSender<Message>,
    /// Records dropped because the queue was full, not yet reported.
    dropped: std::sync::Arc<AtomicU64>,
}

impl Bridge {
    /// Whether a record of `level` for the Python logger `target` may be wanted: not once the
    /// interpreter exits, nor below the level cached for that logger.
    fn allows(&self, level: Level, target: &str) -> bool {
        !STOPPED.load(Ordering::Acquire)
            && self.python.enabled(&Metadata::builder().level(level).target(target).build())
    }
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.allows(metadata.level(), &python_target(metadata.target()))
    }

    fn log(&self, record: &Record<'_>) {
        let target = python_target(record.target());
        if !self.allows(record.level(), &target) {
            return;
        }
        let owned = Owned {
            level: record.level(),
            target,
            message: record.args().to_string(),
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
            line: record.line(),
        };
        if let Err(TrySendError::Full(_)) = self.sender.try_send(Message::Record(owned)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// The delivering thread: hands each queued record to Python, in order, holding the GIL for
/// as many as are ready at once, until `shutdown`'s stop message.
fn deliver(python: &pyo3_log::Logger, queue: &Receiver<Message>, dropped: &AtomicU64, done: &Sender<()>) {
    let mut stop = false;
    while !stop {
        let Ok(first) = queue.recv() else { break };
        Python::attach(|py| {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                let Message::Record(owned) = message else {
                    stop = true;
                    return;
                };
                let dropped = dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let note = format!("{dropped} log records dropped: Python's logging did not keep up");
                    let target = format!("{PACKAGE}::logs");
                    emit(py, python, &Owned::new(Level::Warn, target, note));
                }
                emit(py, python, &owned);
                next = queue.try_recv().ok();
            }
        });
    }
    let _ = done.send(());
}

/// One record to Python. A handler that raises is reported as Python reports an exception it
/// cannot raise anywhere (`sys.unraisablehook`), and delivery goes on.
fn emit(py: Python<'_>, python: &pyo3_log::Logger, record: &Owned) {
    python.log(
        &Record::builder()
            .level(record.level)
            .target(&record.target)
            .args(format_args!("{}", record.message))
            .module_path(record.module_path.as_deref())
            .file(record.file.as_deref())
            .line(record.line)
            .build(),
    );
    if let Some(err) = PyErr::take(py) {
        err.write_unraisable(py, None);
    }
}

/// Forgets the cached level of every logger, so that the next record of each asks `logging`
/// again. Called by `remote_access.reset_log_cache()`.
#[pyfunction]
pub(crate) fn reset_log_cache() {
    if let Some(reset) = RESET.get() {
        reset.reset();
    }
}

/// At interpreter exit, after the runtime stopped (its last records are queued): delivers
/// what is queued (up to `DRAIN_WAIT`) and stops the delivering thread, with the GIL released
/// so that it can deliver.
pub(crate) fn shutdown(py: Python<'_>) {
    let delivery = DELIVERY.lock().unwrap_or_else(PoisonError::into_inner).take();
    STOPPED.store(true, Ordering::Release);
    let Some(Delivery { queue, finished, pid }) = delivery else { return };
    if pid != std::process::id() {
        return;
    }
    py.detach(move || {
        let deadline = Instant::now() + DRAIN_WAIT;
        let mut stop = Message::Stop;
        // The queue may be full; delivery empties it, unless a Python handler hangs.
        while let Err(TrySendError::Full(again)) = queue.try_send(stop) {
            if Instant::now() >= deadline {
                return;
            }
            stop = again;
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    });
}
