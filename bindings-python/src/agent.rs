//! The builder agent (reverse tunnels) and the VNC helpers.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use remote_access_core as core;

use crate::convert::{Seconds, invalid, ip};
use crate::errors::IntoPyResult;
use crate::runtime::awaitable;

/// Runs a builder's agent: dials out to the gateway with the build's agent credential and
/// carries the build's reverse tunnel to `local_host` on `ports`, reconnecting with backoff.
/// Awaitable → why it returned: `session_ended`, `refused` or `replaced`. Cancel the
/// awaitable (e.g. `task.cancel()`) to stop it.
#[pyfunction]
#[pyo3(signature = (gateway, gateway_host_key, username, private_key, *, local_host = "127.0.0.1", ports = vec![22], min_backoff = None, max_backoff = None, dial_timeout = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_agent<'py>(
    py: Python<'py>,
    gateway: String,
    gateway_host_key: String,
    username: String,
    private_key: &str,
    local_host: &str,
    ports: Vec<u16>,
    min_backoff: Option<Seconds>,
    max_backoff: Option<Seconds>,
    dial_timeout: Option<Seconds>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut options = core::AgentOptions::new(
        gateway,
        gateway_host_key,
        username,
        core::Secret::new(private_key.to_owned()),
    );
    options.local_host = ip("local_host", local_host)?;
    options.ports = ports;
    for (given, field) in [
        (min_backoff, &mut options.min_backoff),
        (max_backoff, &mut options.max_backoff),
        (dial_timeout, &mut options.dial_timeout),
    ] {
        if let Some(Seconds(given)) = given {
            *field = given;
        }
    }
    awaitable(py, async move {
        let exit = core::run_agent(options, std::future::pending()).await.py()?;
        Ok(match exit {
            core::AgentExit::SessionEnded => "session_ended",
            core::AgentExit::Refused => "refused",
            core::AgentExit::Replaced => "replaced",
            _ => "stopped",
        })
    })
}

/// The 8-byte VNC password file (`vncpasswd` format) for a builder's VNC server.
#[pyfunction]
pub(crate) fn vnc_password_file<'py>(py: Python<'py>, password: &str) -> Bound<'py, PyBytes> {
    let password = core::Secret::new(password.to_owned());
    PyBytes::new(py, &core::vnc_password_file(password.expose()))
}

/// The 16-byte answer to a VNC Authentication challenge (for clients and tests).
#[pyfunction]
pub(crate) fn vnc_auth_response<'py>(
    py: Python<'py>,
    password: &str,
    challenge: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let password = core::Secret::new(password.to_owned());
    let challenge: &[u8; 16] = challenge
        .try_into()
        .map_err(|_| invalid("challenge", format!("{} bytes; a VNC challenge has 16", challenge.len())))?;
    Ok(PyBytes::new(py, &core::vnc_auth_response(password.expose(), challenge)))
}
