//! JavaScript errors: every core error becomes a `RemoteAccessError` (the class `index.js`
//! defines and registers here) whose `code` is the core's stable code (`invalid_input`,
//! `session_ended`, ...), whose message carries the cause chain and whose `cause` holds it.

use std::future::Future;

use napi::bindgen_prelude::{FnArgs, Function, FunctionRef, JsObjectValue, PromiseRaw, ToNapiValue};
use napi::{Env, JsValue, Status};
use remote_access_core::Error;

/// The arguments of `new RemoteAccessError(code, message, details)`.
type ErrorArgs = FnArgs<(&'static str, String, serde_json::Value)>;

/// What this addon keeps per JavaScript environment (the main thread and each worker).
struct Instance {
    error_class: FunctionRef<ErrorArgs, ()>,
}

/// Registers the class core errors are made with (`index.js` calls it once, at load).
#[napi_derive::napi(js_name = "_setErrorClass", skip_typescript)]
pub fn set_error_class(env: Env, class: Function<'_, ErrorArgs, ()>) -> napi::Result<()> {
    let error_class = class.create_ref()?;
    env.set_instance_data(Instance { error_class }, (), |_| {})
}

/// The message with the causes that led to it: "outer: inner: innermost".
fn message(err: &Error) -> String {
    let mut message = err.to_string();
    for text in causes(err) {
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// The messages of the error's sources, outermost first.
fn causes(err: &Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes
}

/// A JavaScript error for a core error: a `RemoteAccessError` with `code` and the details set,
/// once `index.js` registered the class; an `Error` with the same properties before that.
/// Needs the JS thread (an `Env`).
pub(crate) fn to_js(env: &Env, err: &Error) -> napi::Error {
    let mut details = serde_json::Map::new();
    for (name, value) in fields(err) {
        details.insert(name.to_owned(), value.into());
    }
    let causes = causes(err);
    if !causes.is_empty() {
        details.insert("causes".to_owned(), causes.into());
    }
    let registered = || -> napi::Result<Option<napi::bindgen_prelude::Unknown<'_>>> {
        let Some(instance) = env.get_instance_data::<Instance>()? else { return Ok(None) };
        let class = instance.error_class.borrow_back(env)?;
        class.new_instance(FnArgs::from((err.code(), message(err), details.clone().into()))).map(Some)
    };
    let error = match registered() {
        Ok(Some(error)) => error,
        _ => {
            let fallback = || napi::Error::new(Status::GenericFailure, message(err));
            let Ok(mut object) = env.create_error(fallback()) else { return fallback() };
            let mut set = || -> napi::Result<()> {
                object.set_named_property("code", err.code())?;
                for (name, value) in fields(err) {
                    object.set_named_property(name, value)?;
                }
                Ok(())
            };
            if set().is_err() {
                return fallback();
            }
            object.to_unknown()
        }
    };
    // An error that wraps a JS value rejects or throws with that very object.
    napi::Error::from(error)
}

/// The error's details as properties: the Python exceptions' attributes, in camelCase.
fn fields(err: &Error) -> Vec<(&'static str, String)> {
    match err {
        Error::NotManuallyTriggered { build_id }
        | Error::RemoteAccessDisabled { build_id }
        | Error::BuildExists { build_id }
        | Error::UnknownBuild { build_id } => vec![("buildId", build_id.clone())],
        Error::InvalidInput { what, problem } => {
            vec![("what", (*what).to_owned()), ("problem", problem.clone())]
        }
        Error::SessionEnded { build_id, reason } => vec![
            ("buildId", build_id.clone()),
            ("reason", reason.to_string()),
            ("endReasonCode", reason.code().to_owned()),
        ],
        Error::AccessDenied { reason } => vec![("reason", reason.as_str().to_owned())],
        Error::HostKeyMismatch { host } => vec![("host", host.clone())],
        _ => vec![],
    }
}

/// `Result<T, core::Error>` → `napi::Result<T>` on the JS thread.
pub(crate) trait OrThrow<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T>;
}

impl<T> OrThrow<T> for remote_access_core::Result<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T> {
        self.map_err(|err| to_js(env, &err))
    }
}

/// A Promise for `fut`, run on napi's tokio runtime; a core error rejects it with a coded
/// `Error`. `convert` turns the value into what JavaScript gets, on the JS thread.
pub(crate) fn promise<'env, T, V, E, F>(
    env: &'env Env,
    fut: F,
    convert: impl FnOnce(T) -> napi::Result<V> + 'static,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    E: std::borrow::Borrow<Error> + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, move |env, result| match result {
        Ok(value) => convert(value),
        Err(err) => Err(to_js(env, err.borrow())),
    })
}

/// A stop request for background work (gateway, agent, housekeeping). Only `stop()` stops the work:
/// the work holds a clone, so the JS object being garbage-collected does not.
pub(crate) type Stop = std::sync::Arc<tokio::sync::watch::Sender<bool>>;

pub(crate) fn stop_signal() -> Stop {
    std::sync::Arc::new(tokio::sync::watch::channel(false).0)
}

/// Resolves when `stop` is requested (never because the JS handle went away).
pub(crate) async fn stopped(stop: Stop) {
    let mut requested = stop.subscribe();
    let _ = requested.wait_for(|requested| *requested).await;
}

/// How background work ended, shared by every `done()`/`stop()` caller.
pub(crate) type Outcome<T> = tokio::sync::watch::Sender<Option<Result<T, std::sync::Arc<Error>>>>;

/// Waits for the work's outcome.
pub(crate) async fn outcome<T: Clone>(
    outcome: std::sync::Arc<Outcome<T>>,
) -> Result<T, std::sync::Arc<Error>> {
    let mut watch = outcome.subscribe();
    match watch.wait_for(Option::is_some).await {
        Ok(value) => {
            value.clone().unwrap_or_else(|| Err(std::sync::Arc::new(internal("the outcome was lost"))))
        }
        Err(_) => Err(std::sync::Arc::new(internal("the task ended without an outcome"))),
    }
}

/// A bug on our side, not the network's.
fn internal(message: &str) -> Error {
    Error::Internal { message: message.to_owned() }
}

/// An "invalid input" error for an argument refused while converting it.
pub(crate) fn invalid(env: &Env, what: &'static str, problem: String) -> napi::Error {
    to_js(env, &Error::InvalidInput { what, problem })
}

/// The error thrown for a core error of kind `code` (`store_unavailable`, `contention`,
/// `internal` or `key_material`), for tests of the mapping: the in-memory store cannot fail,
/// compare-and-swap gives up only under heavy contention, no task panics and key generation
/// does not fail on a working machine, so these cannot be caused otherwise.
#[napi_derive::napi(js_name = "_errorForTest", skip_typescript)]
pub fn error_for_test(env: Env, code: String) -> napi::Result<napi::bindgen_prelude::Unknown<'static>> {
    let err = match code.as_str() {
        "store_unavailable" => Error::StoreUnavailable {
            message: "unreachable (test)".into(),
            source: Some(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))),
        },
        "contention" => Error::Contention { message: "test".into() },
        "internal" => Error::Internal { message: "test".into() },
        "key_material" => Error::KeyMaterial { message: "test".into() },
        other => return Err(invalid(&env, "code", format!("{other:?} is not a test error code"))),
    };
    Ok(napi::JsError::from(to_js(&env, &err)).into_unknown(env))
}
