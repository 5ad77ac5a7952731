//! Keeping Node's event loop alive while background work runs, as a listening `net.Server`
//! or a `setInterval` timer does: a running gateway, agent or housekeeping loop holds the
//! process until it stops, and `ref()`/`unref()` change that as they do for Node's handles.
//!
//! The handle is a threadsafe function that is never called: referenced, it keeps the loop
//! alive; released (when the work ends, on any thread), it no longer does. The work's task owns
//! a clone, so the JavaScript object being garbage-collected releases nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Result, Status};

/// A never-called function; `Weak = false`: referenced from the start.
type Handle = ThreadsafeFunction<(), (), (), Status, false, false>;

#[derive(Clone)]
pub(crate) struct KeepAlive(Arc<Mutex<State>>);

struct State {
    /// `None` once released.
    handle: Option<Handle>,
    referenced: bool,
}

impl KeepAlive {
    /// A referenced handle: the process stays alive until `release()` or `unref()`.
    pub(crate) fn new(env: &Env) -> Result<Self> {
        let noop = env.create_function_from_closure::<(), (), _>("keepAlive", |_| Ok(()))?;
        let handle = noop.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
        Ok(Self(Arc::new(Mutex::new(State { handle: Some(handle), referenced: true }))))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The work ended: the handle no longer holds the process. Any thread; idempotent.
    pub(crate) fn release(&self) {
        let handle = self.lock().handle.take();
        drop(handle);
    }

    /// `ref()` (`true`) or `unref()` (`false`); nothing once released. On the JS thread.
    // `refer`/`unref` are deprecated in favour of cloning and dropping, which cannot take a
    // reference back once dropped; `ref()` after `unref()` needs them.
    #[allow(deprecated)]
    pub(crate) fn set_ref(&self, env: &Env, referenced: bool) -> Result<()> {
        let mut state = self.lock();
        let Some(handle) = state.handle.as_mut() else { return Ok(()) };
        if referenced {
            handle.refer(env)?
        } else {
            handle.unref(env)?
        }
        state.referenced = referenced;
        Ok(())
    }

    /// Whether the handle holds the process now (as `timeout.hasRef()`).
    pub(crate) fn has_ref(&self) -> bool {
        let state = self.lock();
        state.referenced && state.handle.as_ref().is_some_and(|handle| !handle.aborted())
    }
}
