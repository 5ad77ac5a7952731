//! Connection info and the scripts users run.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyString;
use remote_access_core as core;

use crate::authority::{Credentials, Session};
use crate::errors::IntoPyResult;
use crate::gateway::HostKey;

/// Where users reach the gateway, and how the scripts behave.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct ScriptOptions(pub(crate) core::ScriptOptions);

#[pymethods]
impl ScriptOptions {
    #[new]
    #[pyo3(signature = (gateway_host, gateway_port = 22, *, build_dir = None, vnc_tls_fingerprint = None, vnc_require_encryption = None, vnc_websocket = None, builder_host_ca = None))]
    fn new(
        gateway_host: String,
        gateway_port: u16,
        build_dir: Option<String>,
        vnc_tls_fingerprint: Option<String>,
        vnc_require_encryption: Option<bool>,
        vnc_websocket: Option<bool>,
        builder_host_ca: Option<String>,
    ) -> Self {
        let mut options = core::ScriptOptions::new(gateway_host, gateway_port);
        if let Some(build_dir) = build_dir {
            options.build_dir = build_dir;
        }
        options.vnc_tls_fingerprint = vnc_tls_fingerprint;
        options.vnc_require_encryption = vnc_require_encryption.unwrap_or(options.vnc_require_encryption);
        options.vnc_websocket = vnc_websocket.unwrap_or(options.vnc_websocket);
        options.builder_host_ca = builder_host_ca;
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
    #[getter]
    fn builder_host_ca(&self) -> Option<String> {
        self.0.builder_host_ca.clone()
    }

    fn __repr__(&self) -> String {
        let options = &self.0;
        let fingerprint =
            options.vnc_tls_fingerprint.as_deref().map_or("None".to_owned(), |f| format!("{f:?}"));
        let bool_repr = |b: bool| if b { "True" } else { "False" };
        format!(
            "ScriptOptions({:?}, {}, build_dir={:?}, vnc_tls_fingerprint={fingerprint}, vnc_require_encryption={}, vnc_websocket={}, builder_host_ca={})",
            options.gateway_host,
            options.gateway_port,
            options.build_dir,
            bool_repr(options.vnc_require_encryption),
            bool_repr(options.vnc_websocket),
            options.builder_host_ca.as_deref().map_or("None".to_owned(), |ca| format!("{ca:?}")),
        )
    }
}

/// Everything a client needs to connect, without secrets. `remote_access.ConnectionInfo`
/// wraps this in a `dict` built from `to_json()` (so that `json.dumps` takes it and the keys
/// are the core's); the scripts come from its methods. Behind a lock (the class stays
/// frozen, as every class here) because `refresh` replaces it.
#[pyclass(module = "remote_access._native", frozen, name = "ConnectionInfo")]
pub(crate) struct NativeConnectionInfo(Mutex<core::ConnectionInfo>);

impl NativeConnectionInfo {
    fn info(&self) -> MutexGuard<'_, core::ConnectionInfo> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A core connection info as the public `remote_access.ConnectionInfo` (the `dict`), for
/// awaitables that resolve to one (`Authority.connection_info`).
pub(crate) struct PublicConnectionInfo(pub(crate) core::ConnectionInfo);

impl<'py> IntoPyObject<'py> for PublicConnectionInfo {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let native = Bound::new(py, NativeConnectionInfo(Mutex::new(self.0)))?;
        py.import("remote_access")?.getattr("ConnectionInfo")?.call_method1("_from_native", (native,))
    }
}

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
        py.detach(|| core::ConnectionInfo::new(credentials, session, host_key, options))
            .py()
            .map(|info| Self(Mutex::new(info)))
    }

    /// Brings the time fields up to date with `session` (the same build's, read later): the
    /// phase, the deadline, a reconnect window, the end. Unchanged if it raises.
    fn refresh(&self, session: PyRef<'_, Session>) -> PyResult<()> {
        // On a copy, so that a refused session leaves the info as it was.
        let mut info = self.info().clone();
        info.refresh(&session.0).py()?;
        *self.info() = info;
        Ok(())
    }

    /// The info as pretty JSON.
    fn to_json(&self) -> String {
        self.info().to_json()
    }

    /// The `known_hosts` lines that pin the gateway (and the builder, when its key is known).
    fn known_hosts(&self) -> PyResult<String> {
        self.info().known_hosts().py()
    }

    /// An `ssh_config` block for users who keep the key in `identity_file` and the
    /// `known_hosts()` lines in `known_hosts_file`.
    fn ssh_config(&self, identity_file: &str, known_hosts_file: &str) -> PyResult<String> {
        self.info().ssh_config(identity_file, known_hosts_file).py()
    }

    /// The same for a key with a certificate (`Credentials.certificate`) in `certificate_file`,
    /// which `ssh` presents to the builder only.
    fn ssh_config_with_certificate(
        &self,
        identity_file: &str,
        certificate_file: &str,
        known_hosts_file: &str,
    ) -> PyResult<String> {
        self.info().ssh_config_with_certificate(identity_file, certificate_file, known_hosts_file).py()
    }

    /// A POSIX `sh` script that opens a shell in the build directory (or runs its arguments
    /// there). It contains the private key: a secret for the user only.
    fn posix_script<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Bound<'py, PyString>> {
        let credentials = &credentials.0;
        Ok(PyString::new(py, py.detach(|| self.info().posix_script(credentials)).py()?.expose()))
    }

    /// The same for PowerShell on Windows. A secret too.
    fn powershell_script<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Bound<'py, PyString>> {
        let credentials = &credentials.0;
        Ok(PyString::new(py, py.detach(|| self.info().powershell_script(credentials)).py()?.expose()))
    }

    /// What to enter in a VNC client, password included (a secret); None without VNC.
    fn vnc_instructions<'py>(
        &self,
        py: Python<'py>,
        credentials: PyRef<'_, Credentials>,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        Ok(self.info().vnc_instructions(&credentials.0).py()?.map(|text| PyString::new(py, text.expose())))
    }
}
