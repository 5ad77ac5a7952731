//! Connection info and the scripts users run.

use pyo3::prelude::*;
use pyo3::types::PyString;
use remote_access_core as core;

use crate::authority::{Credentials, Session};
use crate::errors::IntoPyResult;
use crate::gateway::HostKey;

/// Where users reach the gateway, and how the scripts behave.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct ScriptOptions(core::ScriptOptions);

#[pymethods]
impl ScriptOptions {
    #[new]
    #[pyo3(signature = (gateway_host, gateway_port = 22, *, build_dir = None, vnc_tls_fingerprint = None, vnc_require_encryption = None, vnc_websocket = None))]
    fn new(
        gateway_host: String,
        gateway_port: u16,
        build_dir: Option<String>,
        vnc_tls_fingerprint: Option<String>,
        vnc_require_encryption: Option<bool>,
        vnc_websocket: Option<bool>,
    ) -> Self {
        let mut options = core::ScriptOptions::new(gateway_host, gateway_port);
        if let Some(build_dir) = build_dir {
            options.build_dir = build_dir;
        }
        options.vnc_tls_fingerprint = vnc_tls_fingerprint;
        options.vnc_require_encryption = vnc_require_encryption.unwrap_or(options.vnc_require_encryption);
        options.vnc_websocket = vnc_websocket.unwrap_or(options.vnc_websocket);
        Self(options)
    }

    #[getter]
    fn gateway_host(&self) -> String {
        self.0.gateway_host.clone()
    }
    #[getter]
    fn gateway_port(&self) -> u16 {
        self.0.gateway_port
    }
    #[getter]
    fn build_dir(&self) -> String {
        self.0.build_dir.clone()
    }
    #[getter]
    fn vnc_tls_fingerprint(&self) -> Option<String> {
        self.0.vnc_tls_fingerprint.clone()
    }
    #[getter]
    fn vnc_require_encryption(&self) -> bool {
        self.0.vnc_require_encryption
    }
    #[getter]
    fn vnc_websocket(&self) -> bool {
        self.0.vnc_websocket
    }

    fn __repr__(&self) -> String {
        let options = &self.0;
        let fingerprint =
            options.vnc_tls_fingerprint.as_deref().map_or("None".to_owned(), |f| format!("{f:?}"));
        let bool_repr = |b: bool| if b { "True" } else { "False" };
        format!(
            "ScriptOptions({:?}, {}, build_dir={:?}, vnc_tls_fingerprint={fingerprint}, vnc_require_encryption={}, vnc_websocket={})",
            options.gateway_host,
            options.gateway_port,
            options.build_dir,
            bool_repr(options.vnc_require_encryption),
            bool_repr(options.vnc_websocket),
        )
    }
}

/// Everything a client needs to connect, without secrets. `remote_access.ConnectionInfo`
/// wraps this in a `dict` built from `to_json()` (so that `json.dumps` takes it and the keys
/// are the core's); the scripts come from its methods.
#[pyclass(module = "remote_access._native", frozen, name = "ConnectionInfo")]
pub(crate) struct NativeConnectionInfo(core::ConnectionInfo);

#[pymethods]
impl NativeConnectionInfo {
    #[new]
    fn new(
        py: Python<'_>,
        credentials: PyRef<'_, Credentials>,
        session: PyRef<'_, Session>,
        host_key: PyRef<'_, HostKey>,
        options: PyRef<'_, ScriptOptions>,
    ) -> PyResult<Self> {
        let (credentials, session, host_key, options) = (&credentials.0, &session.0, &host_key.0, &options.0);
        py.detach(|| core::ConnectionInfo::new(credentials, session, host_key, options)).py().map(Self)
    }

    /// The info as pretty JSON.
    fn to_json(&self) -> String {
        self.0.to_json()
    }

    /// The `known_hosts` lines that pin the gateway (and the builder, when its key is known).
    fn known_hosts(&self) -> PyResult<String> {
        self.0.known_hosts().py()
    }

    /// An `ssh_config` block for users who keep the key in `identity_file` and the
    /// `known_hosts()` lines in `known_hosts_file`.
    fn ssh_config(&self, identity_file: &str, known_hosts_file: &str) -> PyResult<String> {
        self.0.ssh_config(identity_file, known_hosts_file).py()
    }

    /// A POSIX `sh` script that opens a shell in the build directory (or runs its arguments
    /// there). It contains the private key: a secret for the user only.
    fn posix_script<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Bound<'py, PyString>> {
        let credentials = &credentials.0;
        Ok(PyString::new(py, py.detach(|| self.0.posix_script(credentials)).py()?.expose()))
    }

    /// The same for PowerShell on Windows. A secret too.
    fn powershell_script<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Bound<'py, PyString>> {
        let credentials = &credentials.0;
        Ok(PyString::new(py, py.detach(|| self.0.powershell_script(credentials)).py()?.expose()))
    }

    /// What to enter in a VNC client, password included (a secret); None without VNC.
    fn vnc_instructions<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        Ok(self.0.vnc_instructions(&credentials.0).py()?.map(|text| PyString::new(py, text.expose())))
    }
}
