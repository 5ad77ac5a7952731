//! Events as Python objects, and the subscription as an async iterator.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use remote_access_core as core;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::runtime::awaitable;

/// Something that happened to a build's remote access. `kind` is one of `issued`,
/// `steps_completed`, `connected`, `disconnected`, `revoked`, `expired`, `logged_out`,
/// `finish_build`, `tunnel_registered`, `refused`.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Event(core::Event);

#[pymethods]
impl Event {
    #[getter]
    fn build_id(&self) -> String {
        self.0.build_id.to_string()
    }
    #[getter]
    fn at(&self) -> OffsetDateTime {
        self.0.at
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    #[getter]
    fn reason(&self) -> String {
        self.0.reason.clone()
    }
    /// The connection, for `connected` and `disconnected` events.
    #[getter]
    fn connection_id(&self) -> Option<String> {
        self.connection().map(|(id, _)| id.to_string())
    }
    /// `ssh` or `vnc`, for `connected` and `disconnected` events.
    #[getter]
    fn protocol(&self) -> Option<&'static str> {
        self.connection().map(|(_, protocol)| protocol.as_str())
    }

    /// The event as a dict of JSON-safe values (`at` in RFC 3339).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("build_id", self.build_id())?;
        dict.set_item(
            "at",
            self.0.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        )?;
        dict.set_item("kind", self.kind())?;
        dict.set_item("reason", self.reason())?;
        dict.set_item("connection_id", self.connection_id())?;
        dict.set_item("protocol", self.protocol())?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!("Event(kind={:?}, build_id={:?}, reason={:?})", self.kind(), self.build_id(), self.0.reason)
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }
}

impl Event {
    fn connection(&self) -> Option<(core::ConnectionId, core::Protocol)> {
        match self.0.kind {
            core::EventKind::Connected { connection, protocol }
            | core::EventKind::Disconnected { connection, protocol } => Some((connection, protocol)),
            _ => None,
        }
    }
}

/// The authority's events from the moment of subscribing: `async for event in subscription`.
/// Each subscription has its own queue, so a slow reader loses nothing; `close()` ends the
/// iteration (also one that is waiting).
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct Subscription {
    queue: Arc<Mutex<Option<core::Subscription>>>,
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Subscription {
    pub(crate) fn new(subscription: core::Subscription) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Some(subscription))),
            closed: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

#[pymethods]
impl Subscription {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next event (awaitable); `StopAsyncIteration` once closed. Cancelling the await
    /// loses no event.
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (queue, mut closed) = (self.queue.clone(), self.closed.subscribe());
        awaitable(py, async move {
            let mut queue = queue.lock().await;
            let next = match queue.as_mut() {
                Some(subscription) if !*closed.borrow_and_update() => tokio::select! {
                    next = subscription.next() => next,
                    _ = closed.changed() => None,
                },
                _ => None,
            };
            if next.is_none() {
                *queue = None; // unsubscribes
            }
            next.map(Event).ok_or_else(|| PyStopAsyncIteration::new_err(()))
        })
    }

    /// The next event if one is already waiting, else None.
    fn try_next(&self) -> Option<Event> {
        self.queue.try_lock().ok()?.as_mut()?.try_next().map(Event)
    }

    /// Unsubscribes: a waiting or later `__anext__` raises `StopAsyncIteration`.
    fn close(&self) {
        self.closed.send_replace(true);
        if let Ok(mut queue) = self.queue.try_lock() {
            *queue = None;
        }
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        *self.closed.borrow()
    }
}
