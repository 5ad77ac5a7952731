//! Python bindings for `remote-access-core`: the `remote_access._native` extension module,
//! re-exported by the `remote_access` package (`python/remote_access/__init__.py`).
//!
//! Thin by design: each function converts its arguments, calls the core and converts the
//! result or error. Decisions belong in the core, so Rust, Python and Node behave the same.
//!
//! # Layout
//!
//! - `runtime`: the one tokio runtime, and Rust futures as asyncio awaitables.
//! - `errors`: `RemoteAccessError` and a subclass per core error.
//! - `convert`: durations, build ids and addresses from Python values.
//! - `authority`: `Authority`, `Policy`, `Builder`, `ManualClock`, `Credentials`, `Session`.
//! - `events`: `Event` and the queue behind the `Subscription` async iterator.
//! - `gateway`: `HostKey`, `SshCa`, `TlsIdentity`, `Gateway`, `GatewayStart`, `RunningGateway`.
//! - `logs`: the core's `tracing` events into Python's `logging`, under `remote_access`.
//! - `script`: `ScriptOptions` and the connection info behind `remote_access.ConnectionInfo`.
//! - `agent`: `run_agent`, `vnc_password_file`, `vnc_auth_response`.
//! - `cli`: `cli_main`, the `remote-access` command line behind `python -m remote_access`.

mod agent;
mod authority;
mod cli;
mod convert;
mod errors;
mod events;
mod gateway;
mod logs;
mod runtime;
mod script;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logs::install(m.py())?;
    errors::register(m)?;
    m.add_class::<authority::Policy>()?;
    m.add_class::<authority::Builder>()?;
    m.add_class::<authority::ManualClock>()?;
    m.add_class::<authority::Credentials>()?;
    m.add_class::<authority::Session>()?;
    m.add_class::<authority::Authority>()?;
    m.add_class::<authority::LiveConnection>()?;
    m.add_class::<events::Event>()?;
    m.add_class::<events::NativeSubscription>()?;
    m.add_class::<events::FleetEvents>()?;
    m.add_class::<gateway::HostKey>()?;
    m.add_class::<gateway::SshCa>()?;
    m.add_class::<gateway::TlsIdentity>()?;
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<gateway::GatewayStart>()?;
    m.add_class::<gateway::RunningGateway>()?;
    m.add_class::<script::ScriptOptions>()?;
    m.add_class::<script::NativeConnectionInfo>()?;
    m.add_function(wrap_pyfunction!(agent::run_agent, m)?)?;
    m.add_function(wrap_pyfunction!(agent::vnc_password_file, m)?)?;
    m.add_function(wrap_pyfunction!(agent::vnc_auth_response, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_error_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(logs::reset_log_cache, m)?)?;
    m.add_function(wrap_pyfunction!(cli::cli_main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Stops the runtime's threads before Python finalizes (see `runtime`).
    let shutdown = wrap_pyfunction!(runtime::_shutdown, m)?;
    m.add_function(shutdown.clone())?;
    m.py().import("atexit")?.call_method1("register", (shutdown,))?;
    Ok(())
}
