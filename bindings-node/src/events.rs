//! Events as plain objects: an async iterator (`for await`) and a callback listener.

use std::sync::Arc;

use napi::bindgen_prelude::{AsyncGenerator, Either4};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use remote_access_core as core;
use tokio::sync::Mutex;

use crate::convert::rfc3339;

/// Something that happened to a build's remote access: a `SessionEvent`, a `ConnectionEvent`,
/// a `DeadlineEvent` or a `LaggedEvent`, told apart by `kind` (a discriminated union in
/// TypeScript).
pub type Event = Either4<SessionEvent, ConnectionEvent, DeadlineEvent, LaggedEvent>;

/// An event about a build's session: credentials issued, steps completed, access revoked or
/// expired, the user logged out, the user's lost connection not resumed in time
/// (`connection_lost`), the build to be finished, a reverse tunnel registered, a request
/// refused, a key being guessed, the store out of reach.
#[napi(object)]
pub struct SessionEvent {
    #[napi(
        ts_type = "Exclude<EventKind, 'connected' | 'disconnected' | 'dropped' | 'deadline_changed' | 'lagged'>"
    )]
    pub kind: String,
    pub build_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, in words for people and logs (never a secret).
    pub reason: String,
}

/// A user connection opened (`connected`), closed by its user (`disconnected`) or lost to the
/// network (`dropped`: after the steps completed, the last one lost opens the reconnect
/// window, `Session.reconnectBy`).
#[napi(object)]
pub struct ConnectionEvent {
    #[napi(ts_type = "'connected' | 'disconnected' | 'dropped'")]
    pub kind: String,
    pub build_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, in words for people and logs (never a secret).
    pub reason: String,
    /// The connection's id, as in `Session.liveConnections`.
    pub connection_id: String,
    #[napi(ts_type = "Protocol")]
    pub protocol: String,
}

/// The deadline moved (the steps completed): access now ends at `deadline` at the latest.
#[napi(object)]
pub struct DeadlineEvent {
    #[napi(ts_type = "'deadline_changed'")]
    pub kind: String,
    pub build_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, in words for people and logs (never a secret).
    pub reason: String,
    /// The new deadline (RFC 3339).
    pub deadline: String,
}

/// This subscriber fell `eventQueue` events behind: `dropped` events were not delivered to it
/// (others got them), and this one stands in their place. `buildId` and `at` are those of the
/// first one missed, but the missed ones may concern any build: re-read the sessions you follow.
#[napi(object)]
pub struct LaggedEvent {
    #[napi(ts_type = "'lagged'")]
    pub kind: String,
    pub build_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, in words for people and logs (never a secret).
    pub reason: String,
    /// How many events this subscriber missed.
    pub dropped: f64,
}

/// The JavaScript event for a core event.
fn to_js(event: core::Event) -> Event {
    let (build_id, at, reason) = (event.build_id.to_string(), rfc3339(event.at), event.reason);
    let kind = event.kind.as_str().to_owned();
    match event.kind {
        core::EventKind::Connected { connection, protocol }
        | core::EventKind::Disconnected { connection, protocol }
        | core::EventKind::Dropped { connection, protocol } => Either4::B(ConnectionEvent {
            kind,
            build_id,
            at,
            reason,
            connection_id: connection.to_string(),
            protocol: protocol.as_str().to_owned(),
        }),
        // Exact up to 2^53, far beyond any count a process reaches.
        core::EventKind::DeadlineChanged { deadline } => {
            Either4::C(DeadlineEvent { kind, build_id, at, reason, deadline: rfc3339(deadline) })
        }
        core::EventKind::Lagged { dropped } => {
            Either4::D(LaggedEvent { kind, build_id, at, reason, dropped: dropped as f64 })
        }
        _ => Either4::A(SessionEvent { kind, build_id, at, reason }),
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
            Ok(next.map(to_js))
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
        queue.as_mut()?.try_next().map(to_js)
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
                        to_js(event),
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

    /// Whether `close()` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.callback.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_none()
    }
}

/// One event of the fleet's log, with the id to resume after.
#[napi(object)]
pub struct FleetEvent {
    /// Its place in the log: give it to `authority.fleetEvents(id)` to read on from here.
    pub id: String,
    pub event: Event,
}

/// The fleet's events, oldest first, from every authority on the store: `for await (const {
/// id, event } of await authority.fleetEvents(after))`. A store that cannot be read rejects
/// the iteration's promise (iterate again: the place is kept).
#[napi(async_iterator)]
pub struct FleetEvents(Arc<Mutex<core::FleetEvents>>);

impl FleetEvents {
    pub(crate) fn new(events: core::FleetEvents) -> Self {
        Self(Arc::new(Mutex::new(events)))
    }
}

#[napi]
impl AsyncGenerator for FleetEvents {
    type Yield = FleetEvent;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _: Option<()>,
    ) -> impl Future<Output = napi::Result<Option<FleetEvent>>> + Send + 'static {
        let events = self.0.clone();
        async move {
            let next = events.lock().await.next().await;
            match next {
                Ok(next) => Ok(Some(FleetEvent { id: next.id, event: to_js(next.event) })),
                Err(err) => Err(napi::Error::from_reason(err.to_string())),
            }
        }
    }
}
