//! The one place that owns the tokio runtime the bindings run on, and turns Rust futures into
//! awaitables on the caller's asyncio loop.
//!
//! The runtime's worker threads do not survive `fork()`: a child that inherited a started
//! runtime would wait forever on threads that do not exist. Every awaitable therefore checks
//! that it is created in the process that started the runtime, and raises otherwise.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::prelude::*;

use crate::errors::RemoteAccessError;

/// The runtime and the process that started it (or why it could not start).
static RUNTIME: OnceLock<Result<(tokio::runtime::Runtime, u32), String>> = OnceLock::new();

/// The bindings' runtime, started on first use.
pub(crate) fn get() -> PyResult<&'static tokio::runtime::Runtime> {
    let started = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("remote-access")
            .build()
            .map(|runtime| (runtime, std::process::id()))
            .map_err(|err| format!("cannot start the remote_access runtime: {err}"))
    });
    let (runtime, pid) = started.as_ref().map_err(|err| RemoteAccessError::new_err(err.clone()))?;
    if *pid != std::process::id() {
        return Err(forked(format!(
            "remote_access was started in process {pid} and this process ({}) is a fork of it: its \
             network threads did not survive the fork. Use remote_access in the parent, or start \
             child processes with multiprocessing's 'spawn' or 'forkserver' method",
            std::process::id()
        )));
    }
    Ok(runtime)
}

/// The error for a forked child, with `code` `forked` like every other error's code.
fn forked(message: String) -> PyErr {
    let err = RemoteAccessError::new_err(message);
    Python::attach(|py| {
        let _ = err.value(py).setattr("code", "forked");
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
    let runtime = get()?;
    // Tells pyo3-async-runtimes to use this runtime; it refuses a second time, which is fine.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime);
    pyo3_async_runtimes::tokio::future_into_py(py, fut)
}
