//! Events as Python objects, and the subscription as an async iterator.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use remote_access_core as core;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::errors::IntoPyResult;
use crate::runtime::awaitable;

/// Something that happened to a build's remote access. `kind` is one of `issued`,
/// `steps_completed`, `deadline_changed`, `connected`, `disconnected`, `dropped`, `revoked`,
/// `expired`, `logged_out`, `connection_lost`, `finish_build`, `tunnel_registered`, `refused`,
/// `guessing`, `store_unreachable`, `lagged` (this subscription fell behind and missed
/// `dropped` events; see `Authority(event_queue=)`).
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
    /// The connection, for `connected`, `disconnected` and `dropped` events.
    #[getter]
    fn connection_id(&self) -> Option<String> {
        self.connection().map(|(id, _)| id.to_string())
    }
    /// `ssh` or `vnc`, for `connected`, `disconnected` and `dropped` events.
    #[getter]
    fn protocol(&self) -> Option<&'static str> {
        self.connection().map(|(_, protocol)| protocol.as_str())
    }
    /// The new deadline, for `deadline_changed` events.
    #[getter]
    fn deadline(&self) -> Option<OffsetDateTime> {
        match self.0.kind {
            core::EventKind::DeadlineChanged { deadline } => Some(deadline),
            _ => None,
        }
    }
    /// How many events this subscription missed, for `lagged` events.
    #[getter]
    fn dropped(&self) -> Option<u64> {
        match self.0.kind {
            core::EventKind::Lagged { dropped } => Some(dropped),
            _ => None,
        }
    }

    /// The event as a dict of JSON-safe values (`at` in RFC 3339).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rfc3339 = |at: OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
        };
        let dict = PyDict::new(py);
        dict.set_item("build_id", self.build_id())?;
        dict.set_item("at", rfc3339(self.0.at))?;
        dict.set_item("kind", self.kind())?;
        dict.set_item("reason", self.reason())?;
        dict.set_item("connection_id", self.connection_id())?;
        dict.set_item("protocol", self.protocol())?;
        dict.set_item("dropped", self.dropped())?;
        dict.set_item("deadline", self.deadline().map(rfc3339))?;
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
            | core::EventKind::Disconnected { connection, protocol }
            | core::EventKind::Dropped { connection, protocol } => Some((connection, protocol)),
            _ => None,
        }
    }
}

/// The queue behind `remote_access.Subscription` (whose `__anext__` is a Python coroutine:
/// `while (event := try_next()) is None: await wait()`).
///
/// `wait()` moves the next event from the core's queue into a buffer that only `try_next()`
/// empties, and `try_next()` runs on the asyncio loop's thread. So an event never sits in a
/// value that a cancelled await could drop: cancelling loses nothing and keeps the order.
#[pyclass(module = "remote_access._native", frozen, name = "Subscription")]
pub(crate) struct NativeSubscription {
    queue: Arc<Mutex<Option<core::Subscription>>>,
    buffer: Arc<std::sync::Mutex<std::collections::VecDeque<core::Event>>>,
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl NativeSubscription {
    pub(crate) fn new(subscription: core::Subscription) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Some(subscription))),
            buffer: Arc::default(),
            closed: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

#[pymethods]
impl NativeSubscription {
    /// Resolves once an event is ready for `try_next()`; raises `StopAsyncIteration` once
    /// closed (or the authority is gone) and nothing is left.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (queue, buffer, mut closed) = (self.queue.clone(), self.buffer.clone(), self.closed.subscribe());
        awaitable(py, async move {
            let mut queue = queue.lock().await;
            if !buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty() {
                return Ok(());
            }
            let next = match queue.as_mut() {
                Some(subscription) if !*closed.borrow_and_update() => tokio::select! {
                    next = subscription.next() => next,
                    _ = closed.changed() => None,
                },
                _ => None,
            };
            match next {
                Some(event) => {
                    buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(event);
                    Ok(())
                }
                None => {
                    *queue = None; // unsubscribes
                    Err(PyStopAsyncIteration::new_err(()))
                }
            }
        })
    }

    /// The next event if one is ready, else None.
    fn try_next(&self) -> Option<Event> {
        let buffered = self.buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
        if let Some(event) = buffered {
            return Some(Event(event));
        }
        // While a `wait()` holds the queue, its event will arrive through the buffer.
        self.queue.try_lock().ok()?.as_mut()?.try_next().map(Event)
    }

    /// Unsubscribes: a waiting or later `wait()` raises `StopAsyncIteration`; events already
    /// buffered are still returned by `try_next()`.
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

/// The fleet's events, oldest first, from every authority on the store (`async for id, event
/// in await authority.fleet_events(after)`): each with the id to resume after.
#[pyclass(module = "remote_access", frozen)]
pub(crate) struct FleetEvents(Arc<Mutex<core::FleetEvents>>);

impl FleetEvents {
    pub(crate) fn new(events: core::FleetEvents) -> Self {
        Self(Arc::new(Mutex::new(events)))
    }
}

#[pymethods]
impl FleetEvents {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next event of the log (awaitable → `(id, Event)`), waiting for one; raises
    /// `StoreUnavailableError` when the store cannot be read (iterate again: the place is kept).
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.0.clone();
        awaitable(py, async move {
            let next = events.lock().await.next().await.py()?;
            Ok((next.id, Event(next.event)))
        })
    }

    fn __repr__(&self) -> String {
        "FleetEvents(...)".to_owned()
    }
}
