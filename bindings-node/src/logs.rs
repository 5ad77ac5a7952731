//! The core's logs (`tracing` events) for JavaScript: `onLog(callback, { level })`.
//!
//! The first `onLog` installs this addon's `tracing` subscriber as the process-wide default
//! (the addon links its own copy of `tracing`, so no other library's logging is affected). It
//! forwards each event at or above a listener's level to that listener's callback through a
//! weak threadsafe function: a listener never keeps Node running. Each listener has a bounded
//! queue for the JS thread; what does not fit is dropped and counted in the next record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Result, Status};
use napi_derive::napi;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};

use crate::convert::rfc3339;
use crate::errors::invalid;

/// Records a listener may have waiting for the JS thread before new ones are dropped.
const QUEUE: usize = 4096;

/// One log record of the library.
#[napi(object)]
pub struct LogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[napi(ts_type = "LogLevel")]
    pub level: String,
    /// Where it comes from: a Rust module path, such as `remote_access_core::gateway::ssh::handler`.
    pub target: String,
    /// What happened, e.g. `authentication refused`.
    pub message: String,
    /// The record's other fields as text, their names in camelCase, e.g. `{ peer:
    /// '127.0.0.1:50412', user: 'ra-...', err: 'access denied: key does not belong to this user' }`.
    /// Never a secret.
    pub fields: BTreeMap<String, String>,
    /// When it was logged (RFC 3339, UTC).
    pub at: String,
    /// How many records this listener missed just before this one, because the JS thread did
    /// not take them as fast as they came (absent when none).
    pub dropped: Option<f64>,
}

/// Options of `onLog`.
#[napi(object)]
pub struct LogOptions {
    /// The least severe level passed on (default `info`): `error`, `warn`, `info`, `debug` or
    /// `trace`.
    #[napi(ts_type = "LogLevel")]
    pub level: Option<String>,
}

/// `callback(record)` on the JS thread; weak (`Weak = true`), bounded.
type LogCallback = ThreadsafeFunction<LogRecord, (), LogRecord, Status, false, true, QUEUE>;

struct Sink {
    level: LevelFilter,
    /// Taken by `close()`.
    callback: Mutex<Option<LogCallback>>,
    dropped: AtomicU64,
}

/// The listeners; read on every enabled event, written by `onLog` and `close()`.
static SINKS: RwLock<Vec<Arc<Sink>>> = RwLock::new(Vec::new());

/// The most verbose level any listener wants: what the subscriber lets through.
fn max_level() -> LevelFilter {
    let sinks = SINKS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    sinks.iter().map(|sink| sink.level).max().unwrap_or(LevelFilter::OFF)
}

/// The process-wide subscriber: passes each enabled event to the listeners that want it.
struct Forwarder;

impl tracing::Subscriber for Forwarder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Re-asked after every change of the listeners (`rebuild_interest_cache`).
        if self.enabled(metadata) { Interest::always() } else { Interest::never() }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(max_level())
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= max_level()
    }

    // The library opens no spans; these exist for the trait.
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        let sinks: Vec<Arc<Sink>> = {
            let sinks = SINKS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            sinks.iter().filter(|sink| *metadata.level() <= sink.level).cloned().collect()
        };
        if sinks.is_empty() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let at = rfc3339(time::OffsetDateTime::now_utc());
        for sink in sinks {
            let dropped = sink.dropped.swap(0, Ordering::Relaxed);
            let record = LogRecord {
                level: level_name(metadata.level()).to_owned(),
                target: metadata.target().to_owned(),
                message: fields.message.clone(),
                fields: fields.others.clone(),
                at: at.clone(),
                // Exact up to 2^53.
                dropped: (dropped > 0).then_some(dropped as f64),
            };
            let callback = sink.callback.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(callback) = callback.as_ref() else { continue };
            if callback.call(record, ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
                // The queue is full (or the JS environment is closing): count it for the next.
                sink.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            }
        }
    }
}

/// An event's message and other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: BTreeMap<String, String>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &tracing::field::Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.insert(camel_case(field.name()), value);
        }
    }
}

/// `build_id` → `buildId`: the one casing of this package's keys.
fn camel_case(name: &str) -> String {
    let mut words = name.split('_').filter(|word| !word.is_empty());
    let mut camel = words.next().unwrap_or_default().to_owned();
    for word in words {
        let mut chars = word.chars();
        camel.extend(chars.next().map(|first| first.to_ascii_uppercase()));
        camel.push_str(chars.as_str());
    }
    camel
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        _ => "trace",
    }
}

fn parse_level(env: &Env, level: Option<&str>) -> Result<LevelFilter> {
    Ok(match level.unwrap_or("info") {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        other => {
            let problem = format!("{other:?}; expected error, warn, info, debug or trace");
            return Err(invalid(env, "level", problem));
        }
    })
}

/// Calls `callback(record)` for each log record of the library at `level` or more severe
/// (default `info`), until `close()`. A refused login's reason, for one, is logged only here
/// (at `info`). The first call makes this library's log handler the process-wide `tracing`
/// subscriber of the addon. Listeners do not keep Node running; never log from the callback
/// through this library.
#[napi(ts_args_type = "callback: (record: LogRecord) => void, options?: LogOptions")]
pub fn on_log(env: Env, callback: LogCallback, options: Option<LogOptions>) -> Result<LogListener> {
    let level = parse_level(&env, options.as_ref().and_then(|options| options.level.as_deref()))?;
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if a subscriber is set already, which only this module does.
        let _ = tracing::subscriber::set_global_default(Forwarder);
    });
    let sink = Arc::new(Sink { level, callback: Mutex::new(Some(callback)), dropped: AtomicU64::new(0) });
    SINKS.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(sink.clone());
    tracing::callsite::rebuild_interest_cache();
    Ok(LogListener { sink: Mutex::new(Some(sink)), level: level_name_of(level) })
}

fn level_name_of(filter: LevelFilter) -> &'static str {
    filter.into_level().as_ref().map_or("off", level_name)
}

/// A log listener (`onLog`); `close()` stops it.
#[napi]
pub struct LogListener {
    /// Taken by `close()`.
    sink: Mutex<Option<Arc<Sink>>>,
    level: &'static str,
}

#[napi]
impl LogListener {
    /// Stops the callbacks, including those for records already queued for the JS thread.
    #[napi]
    pub fn close(&self) {
        let Some(sink) = self.sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() else {
            return;
        };
        SINKS
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|other| !Arc::ptr_eq(other, &sink));
        tracing::callsite::rebuild_interest_cache();
        let callback = sink.callback.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
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
        self.sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_none()
    }

    /// The least severe level passed on.
    #[napi(getter, ts_return_type = "LogLevel")]
    pub fn level(&self) -> &'static str {
        self.level
    }
}
