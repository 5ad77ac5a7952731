//! Python exceptions: one base, `RemoteAccessError`, and a subclass per kind of core error.
//! Network and file errors become the matching `OSError` subclass.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use remote_access_core::Error;

pyo3::create_exception!(
    remote_access,
    RemoteAccessError,
    PyException,
    "Base class of every error remote_access raises (besides OSError for network failures)."
);
pyo3::create_exception!(
    remote_access,
    NotManuallyTriggeredError,
    RemoteAccessError,
    "The build was not started by hand; remote access is only offered for manual builds."
);
pyo3::create_exception!(
    remote_access,
    RemoteAccessDisabledError,
    RemoteAccessError,
    "Remote access is not enabled for the build."
);
pyo3::create_exception!(
    remote_access,
    InvalidInputError,
    RemoteAccessError,
    "An argument was refused; `what` names it and `problem` says why."
);
pyo3::create_exception!(
    remote_access,
    BuildExistsError,
    RemoteAccessError,
    "The build already has credentials; each build gets one set."
);
pyo3::create_exception!(
    remote_access,
    UnknownBuildError,
    RemoteAccessError,
    "No remote access session exists for the build."
);
pyo3::create_exception!(
    remote_access,
    SessionEndedError,
    RemoteAccessError,
    "The build's remote access has ended (revoked, expired, logged out); `reason` says how."
);
pyo3::create_exception!(
    remote_access,
    AccessDeniedError,
    RemoteAccessError,
    "A credential was refused; `reason` is one of unknown_user, wrong_key, wrong_password, revoked."
);
pyo3::create_exception!(
    remote_access,
    StoreUnavailableError,
    RemoteAccessError,
    "The credential store could not be reached; retry later."
);
pyo3::create_exception!(
    remote_access,
    NoCapacityError,
    RemoteAccessError,
    "Out of a bounded resource (e.g. every VNC port is in use)."
);
pyo3::create_exception!(
    remote_access,
    HostKeyMismatchError,
    RemoteAccessError,
    "A peer's host key is not the pinned one."
);
pyo3::create_exception!(
    remote_access,
    ContentionError,
    RemoteAccessError,
    "Too many writers changed the same session at once and this call gave up; retry it (it changed nothing)."
);
pyo3::create_exception!(
    remote_access,
    InternalError,
    RemoteAccessError,
    "A task of the library failed unexpectedly: a bug in remote_access; please report it with the logs."
);
pyo3::create_exception!(
    remote_access,
    KeyMaterialError,
    RemoteAccessError,
    "Key material could not be generated, parsed or encoded."
);

/// The Python exception for a core error: its subclass, its message (the core's `Display`,
/// which never contains a secret) and the fields a caller can act on as attributes.
pub(crate) fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    let code = err.code();
    Python::attach(|py| {
        let (py_err, attributes): (PyErr, Vec<(&str, String)>) = match err {
            Error::NotManuallyTriggered { build_id } => {
                (NotManuallyTriggeredError::new_err(message), vec![("build_id", build_id)])
            }
            Error::RemoteAccessDisabled { build_id } => {
                (RemoteAccessDisabledError::new_err(message), vec![("build_id", build_id)])
            }
            Error::InvalidInput { what, problem } => {
                (InvalidInputError::new_err(message), vec![("what", what.to_string()), ("problem", problem)])
            }
            Error::BuildExists { build_id } => {
                (BuildExistsError::new_err(message), vec![("build_id", build_id)])
            }
            Error::UnknownBuild { build_id } => {
                (UnknownBuildError::new_err(message), vec![("build_id", build_id)])
            }
            Error::SessionEnded { build_id, reason } => (
                SessionEndedError::new_err(message),
                vec![
                    ("build_id", build_id),
                    ("reason", reason.to_string()),
                    ("end_reason_code", reason.code().to_owned()),
                ],
            ),
            Error::AccessDenied { reason } => {
                (AccessDeniedError::new_err(message), vec![("reason", reason.as_str().to_owned())])
            }
            Error::StoreUnavailable { .. } => (StoreUnavailableError::new_err(message), vec![]),
            Error::NoCapacity { .. } => (NoCapacityError::new_err(message), vec![]),
            Error::HostKeyMismatch { host } => (HostKeyMismatchError::new_err(message), vec![("host", host)]),
            Error::Io(io) => (os_error(io), vec![]),
            Error::Contention { .. } => (ContentionError::new_err(message), vec![]),
            Error::Internal { .. } => (InternalError::new_err(message), vec![]),
            Error::KeyMaterial { .. } => (KeyMaterialError::new_err(message), vec![]),
            _ => (RemoteAccessError::new_err(message), vec![]),
        };
        let value = py_err.value(py);
        for (name, attribute) in [("code", code.to_owned())].into_iter().chain(attributes) {
            if let Err(err) = value.setattr(name, attribute) {
                return err;
            }
        }
        py_err
    })
}

/// An `OSError` (or the subclass its errno or kind selects), with `errno` when the system gave
/// one; never `MemoryError` or another non-`OSError`.
fn os_error(io: std::io::Error) -> PyErr {
    use pyo3::exceptions::PyOSError;
    match io.raw_os_error() {
        // OSError(errno, strerror) picks the subclass (ConnectionRefusedError, ...) itself.
        Some(errno) => PyOSError::new_err((errno, io.to_string())),
        None if io.kind() == std::io::ErrorKind::OutOfMemory => PyOSError::new_err(io.to_string()),
        None => PyErr::from(io),
    }
}

/// `Result<T, core::Error>` → `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for remote_access_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Registers the exception classes on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RemoteAccessError", py.get_type::<RemoteAccessError>())?;
    m.add("NotManuallyTriggeredError", py.get_type::<NotManuallyTriggeredError>())?;
    m.add("RemoteAccessDisabledError", py.get_type::<RemoteAccessDisabledError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("BuildExistsError", py.get_type::<BuildExistsError>())?;
    m.add("UnknownBuildError", py.get_type::<UnknownBuildError>())?;
    m.add("SessionEndedError", py.get_type::<SessionEndedError>())?;
    m.add("AccessDeniedError", py.get_type::<AccessDeniedError>())?;
    m.add("StoreUnavailableError", py.get_type::<StoreUnavailableError>())?;
    m.add("NoCapacityError", py.get_type::<NoCapacityError>())?;
    m.add("HostKeyMismatchError", py.get_type::<HostKeyMismatchError>())?;
    m.add("ContentionError", py.get_type::<ContentionError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("KeyMaterialError", py.get_type::<KeyMaterialError>())?;
    Ok(())
}

/// The exception raised for a core error of kind `code` (`store_unavailable`, `contention`,
/// `internal`, `key_material` or `io`), for tests of the mapping: the in-memory store cannot
/// fail, compare-and-swap gives up only under heavy contention, no task panics and key
/// generation does not fail on a working machine, so these cannot be caused otherwise.
#[pyfunction]
pub(crate) fn _error_for_test<'py>(py: Python<'py>, code: &str) -> PyResult<Bound<'py, PyAny>> {
    let err = match code {
        "store_unavailable" => Error::StoreUnavailable { message: "unreachable (test)".into(), source: None },
        "contention" => Error::Contention { message: "test".into() },
        "internal" => Error::Internal { message: "test".into() },
        "key_material" => Error::KeyMaterial { message: "test".into() },
        "io" => Error::Io(std::io::Error::other("test")),
        other => return Err(crate::convert::invalid("code", format!("{other:?} is not a test error code"))),
    };
    Ok(to_py(err).into_value(py).into_bound(py).into_any())
}
