//! The one place that owns the tokio runtime the bindings run on, and turns Rust futures into
//! awaitables on the caller's asyncio loop.
//!
//! Two process events need care:
//!
//! - Interpreter exit. A runtime thread that reaches for the GIL once Python has begun to
//!   finalize is ended by Python with `pthread_exit`, which cannot unwind through Rust frames
//!   and aborts the process (a late awaitable result is enough). So an `atexit` handler, which
//!   runs before finalization, shuts the runtime down with the GIL released: threads that are
//!   in Python finish, the rest is dropped, and no runtime thread is left when Python
//!   finalizes. After it, the bindings refuse new work. The same handler then stops the
//!   thread that delivers log records (`logs`), the other thread of ours that takes the GIL.
//! - `fork()`. The runtime's worker threads do not survive it: a child that inherited a
//!   started runtime would wait forever on threads that do not exist. Every awaitable
//!   therefore checks that it is created in the process that started the runtime, and raises
//!   otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use tokio::runtime::{Handle, Runtime};

use crate::errors::RemoteAccessError;

/// How long exit waits for runtime threads that are busy (in Python, or in a blocking call).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A handle to the runtime and the process that started it (or why it could not start).
static STARTED: OnceLock<Result<(Handle, u32), String>> = OnceLock::new();
/// The runtime itself, until `shutdown` takes it.
static OWNED: Mutex<Option<Runtime>> = Mutex::new(None);
/// Set by `shutdown`: the interpreter is exiting.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

/// The bindings' runtime, started on first use.
pub(crate) fn get() -> PyResult<&'static Handle> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(with_code(
            "shut_down",
            "remote_access has shut down because the interpreter is exiting".into(),
        ));
    }
    let started = STARTED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("remote-access")
            .build()
            .map_err(|err| format!("cannot start the remote_access runtime: {err}"))?;
        let handle = runtime.handle().clone();
        *OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(runtime);
        Ok((handle, std::process::id()))
    });
    let (handle, pid) = started.as_ref().map_err(|err| with_code("internal", err.clone()))?;
    if *pid != std::process::id() {
        return Err(with_code(
            "forked",
            format!(
                "remote_access was started in process {pid} and this process ({}) is a fork of it: its \
             network threads did not survive the fork. Use remote_access in the parent, or start \
             child processes with multiprocessing's 'spawn' or 'forkserver' method",
                std::process::id()
            ),
        ));
    }
    Ok(handle)
}

/// Registered with `atexit` when the module loads; see the module comment.
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    SHUT_DOWN.store(true, Ordering::Release);
    let runtime = OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let Some(runtime) = runtime {
        match STARTED.get() {
            Some(Ok((_, pid))) if *pid == std::process::id() => {
                py.detach(|| runtime.shutdown_timeout(SHUTDOWN_WAIT));
            }
            // A forked child's copy has no threads to stop or wait for.
            _ => std::mem::forget(runtime),
        }
    }
    // Last: the runtime's threads may have logged on their way out.
    crate::logs::shutdown(py);
}

/// A `RemoteAccessError` of the bindings' own (`forked`, `shut_down`), with a `code` like
/// every error from the core.
fn with_code(code: &'static str, message: String) -> PyErr {
    let err = RemoteAccessError::new_err(message);
    Python::attach(|py| {
        let _ = err.value(py).setattr("code", code);
    });
    err
}

/// `fut` as an awaitable on the running asyncio loop. Cancelling the awaitable drops `fut`,
/// which releases whatever it holds (connections, listeners, locks).
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    get()?;
    pyo3_async_runtimes::generic::future_into_py::<Bindings, F, T>(py, fut)
}

/// The bindings' runtime as pyo3-async-runtimes sees it. Its own tokio integration wants a
/// runtime that lives forever, which exit could not shut down.
struct Bindings;

tokio::task_local! {
    /// The asyncio loop and context an awaitable was created in.
    static TASK_LOCALS: TaskLocals;
}

impl pyo3_async_runtimes::generic::Runtime for Bindings {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        started().spawn(async move {
            fut.await;
            release_deferred_references();
        })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        started().spawn_blocking(f)
    }
}

/// Set while a `release_deferred_references` is on its way.
static RELEASE_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Applies the reference counts that pyo3 deferred, soon, off the runtime's workers.
///
/// pyo3-async-runtimes drops its last reference to an awaitable's asyncio future when its
/// task ends, on a runtime thread that is not attached to Python; pyo3 then defers that
/// decrement until some thread next attaches. Meanwhile the future keeps its result alive: a
/// `LiveConnection` the caller has dropped would go unreported until the program next calls
/// the package. So after each task a blocking thread attaches once (one at a time: tasks
/// ending meanwhile share it), which applies every deferred decrement.
fn release_deferred_references() {
    if SHUT_DOWN.load(Ordering::Acquire) || RELEASE_SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    drop(started().spawn_blocking(|| {
        // Cleared first: a decrement deferred while this runs schedules the next release.
        RELEASE_SCHEDULED.store(false, Ordering::Release);
        Python::attach(|_| {});
    }));
}

/// The runtime's handle for pyo3-async-runtimes, which spawns only inside `awaitable`, after
/// `get` started the runtime. Once exit has shut it down, spawned work is dropped at once.
fn started() -> &'static Handle {
    match STARTED.get() {
        Some(Ok((handle, _))) => handle,
        _ => unreachable!("awaitable() starts the runtime before anything is spawned"),
    }
}

impl pyo3_async_runtimes::generic::ContextExt for Bindings {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        Box::pin(TASK_LOCALS.scope(locals, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|locals| locals.clone()).ok()
    }
}
