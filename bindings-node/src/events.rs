//! Events as plain objects: an async iterator (`for await`) and a callback listener.

use std::sync::Arc;

use napi::bindgen_prelude::AsyncGenerator;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use remote_access_core as core;
use tokio::sync::Mutex;

use crate::convert::rfc3339;

/// Something that happened to a build's remote access. `kind` is one of `issued`,
/// `steps_completed`, `connected`, `disconnected`, `revoked`, `expired`, `logged_out`,
/// `finish_build`, `tunnel_registered`, `refused`, `guessing`, `store_unreachable`, `lagged`;
/// `at` is RFC 3339; `connectionId` and `protocol` are set for `connected` and `disconnected`.
#[napi(object)]
pub struct Event {
    pub build_id: String,
    pub at: String,
    pub kind: String,
    pub reason: String,
    pub connection_id: Option<String>,
    pub protocol: Option<String>,
    /// For `lagged`: how many events this subscriber missed because it fell `eventQueue`
    /// events behind.
    pub dropped: Option<f64>,
}

impl From<core::Event> for Event {
    fn from(event: core::Event) -> Self {
        let connection = match event.kind {
            core::EventKind::Connected { connection, protocol }
            | core::EventKind::Disconnected { connection, protocol } => Some((connection, protocol)),
            _ => None,
        };
        Self {
            build_id: event.build_id.to_string(),
            at: rfc3339(event.at),
            kind: event.kind.as_str().to_owned(),
            reason: event.reason,
            connection_id: connection.map(|(id, _)| id.to_string()),
            protocol: connection.map(|(_, protocol)| protocol.as_str().to_owned()),
            // Exact up to 2^53, far beyond any count a process reaches.
            dropped: match event.kind {
                core::EventKind::Lagged { dropped } => Some(dropped as f64),
                _ => None,
            },
        }
    }
}

/// The authority's events from the moment of subscribing, each subscription with its own
/// queue: `for await (const event of subscription)`. `close()` (or leaving the loop) ends it.
#[napi(async_iterator)]
pub struct Subscription {
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

#[napi]
impl AsyncGenerator for Subscription {
    type Yield = Event;
    type Next = ();
    type Return = ();

    fn next(&mut self, _: Option<()>) -> impl Future<Output = napi::Result<Option<Event>>> + Send + 'static {
        let (queue, mut closed) = (self.queue.clone(), self.closed.subscribe());
        async move {
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
            Ok(next.map(Event::from))
        }
    }

    fn complete(
        &mut self,
        _: Option<()>,
    ) -> impl Future<Output = napi::Result<Option<Event>>> + Send + 'static {
        self.close();
        async { Ok(None) }
    }

    /// `throw()` ends the iteration like `return()` and rejects with what was thrown, as a
    /// generator does.
    fn catch(
        &mut self,
        _: napi::Env,
        value: napi::bindgen_prelude::Unknown,
    ) -> impl Future<Output = napi::Result<Option<Event>>> + Send + 'static {
        self.close();
        let err = napi::Error::from_unknown_without_coercion(value);
        async move { Err(err) }
    }
}

#[napi]
impl Subscription {
    /// Unsubscribes: a waiting or later `next()` ends the iteration.
    #[napi]
    pub fn close(&self) {
        self.closed.send_replace(true);
        if let Ok(mut queue) = self.queue.try_lock() {
            *queue = None;
        }
    }

    /// The next event if one is waiting, without waiting; null if none is, while a `next()`
    /// is waiting, or once closed.
    #[napi]
    pub fn try_next(&self) -> Option<Event> {
        if *self.closed.borrow() {
            return None;
        }
        let mut queue = self.queue.try_lock().ok()?;
        queue.as_mut()?.try_next().map(Event::from)
    }

    /// Whether `close()` was called (or the iteration ended).
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        *self.closed.borrow() || self.queue.try_lock().is_ok_and(|queue| queue.is_none())
    }
}

/// `callback(event)`, called on the JS thread; weak, so that it does not keep Node running.
pub type EventCallback = ThreadsafeFunction<Event, (), Event, napi::Status, false, true>;

/// A callback subscription (`authority.onEvent`); `close()` stops it. Dropping the object
/// does not: the callbacks run until `close()` or until the authority is gone.
#[napi]
pub struct EventListener {
    task: tokio::task::AbortHandle,
    /// Taken by `close()`.
    callback: Arc<std::sync::Mutex<Option<EventCallback>>>,
}

impl EventListener {
    pub(crate) fn start(mut subscription: core::Subscription, callback: EventCallback) -> Self {
        let callback = Arc::new(std::sync::Mutex::new(Some(callback)));
        let calls = callback.clone();
        let task = napi::bindgen_prelude::spawn(async move {
            while let Some(event) = subscription.next().await {
                let (done, called) = tokio::sync::oneshot::channel();
                {
                    let calls = calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let Some(call) = calls.as_ref() else { break };
                    // The callback's result is passed on, so that a throw is still an
                    // uncaught exception.
                    let status = call.call_with_return_value(
                        Event::from(event),
                        ThreadsafeFunctionCallMode::NonBlocking,
                        move |result, _| {
                            let _ = done.send(());
                            result
                        },
                    );
                    if status != napi::Status::Ok {
                        break;
                    }
                }
                // The next event is taken only once the callback has run: napi's queue for the
                // JS thread is unbounded, so handing events on as they come would let a busy
                // JS thread pile them up there, past the subscription's bound (`eventQueue`)
                // and its `lagged` event. Dropped unrun (closed, or Node exiting): stop.
                if called.await.is_err() {
                    break;
                }
            }
        });
        Self { task: task.abort_handle(), callback }
    }
}

#[napi]
impl EventListener {
    /// Stops the callbacks, including those for events already queued for the JS thread.
    #[napi]
    pub fn close(&self) {
        self.task.abort();
        let callback = self.callback.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(callback) = callback {
            // Aborting (rather than releasing on drop, which napi-rs prefers and deprecates
            // this for) drops the calls already queued for the JS thread.
            #[allow(deprecated)]
            let _ = callback.abort();
        }
    }
}
