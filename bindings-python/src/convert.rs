//! Conversions of arguments that Python spells differently from Rust.

use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDelta;
use remote_access_core::Error;

use crate::errors::{IntoPyResult, to_py};

/// The core's "invalid input" error, for an argument refused while converting it.
pub(crate) fn invalid(what: &'static str, problem: String) -> PyErr {
    to_py(Error::InvalidInput { what, problem })
}

/// A duration argument: a `datetime.timedelta` or a number of seconds.
#[derive(Clone, Copy)]
pub(crate) struct Seconds(pub(crate) Duration);

impl<'a, 'py> FromPyObject<'a, 'py> for Seconds {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyDelta>() {
            return obj
                .extract::<Duration>()
                .map(Self)
                .map_err(|_| invalid("duration", "a negative timedelta".into()));
        }
        let seconds: f64 = obj
            .extract()
            .map_err(|_| PyTypeError::new_err("expected a datetime.timedelta or a number of seconds"))?;
        Duration::try_from_secs_f64(seconds)
            .map(Self)
            .map_err(|_| invalid("duration", format!("{seconds} s (must be finite and not negative)")))
    }
}

/// A build id, checked by the core.
pub(crate) fn build_id(id: &str) -> PyResult<remote_access_core::BuildId> {
    remote_access_core::BuildId::new(id).py()
}

/// An IP address argument.
pub(crate) fn ip(what: &'static str, text: &str) -> PyResult<std::net::IpAddr> {
    text.parse().map_err(|_| invalid(what, format!("{text:?} is not an IP address")))
}
