//! Node bindings for `remote-access-core`, built with napi-rs: the package `remote-access`.
//!
//! Thin by design: each function converts its arguments, calls the core and converts the
//! result or error. Decisions belong in the core, so Rust, Python and Node behave the same.
//! napi's tokio runtime runs the futures; every Promise settles on the JS thread. `index.js`
//! (hand-written) loads this addon, registers the error class and adds what is JavaScript
//! only: `Symbol.asyncDispose`, `util.inspect`, napi's argument errors as `invalid_input`.
//!
//! # Layout
//!
//! - `errors`: core errors as `RemoteAccessError`s with a `code`; futures as Promises.
//! - `keepalive`: the handle that keeps Node running while a gateway, agent or housekeeping
//!   loop runs (`ref()`/`unref()`).
//! - `logs`: the core's `tracing` events for `onLog` listeners.
//! - `convert`: milliseconds, RFC 3339 times, addresses and ports from JS values.
//! - `authority`: `Authority`, `Policy`, `Builder`, `ManualClock`, `Credentials`, `Session`,
//!   `LiveConnection`.
//! - `events`: the `Event` union, the `Subscription` async iterator, the `EventListener`
//!   callback.
//! - `gateway`: `HostKey`, `TlsIdentity`, `Gateway`, `RunningGateway`.
//! - `script`: `ScriptOptions`, `ConnectionInfo`.
//! - `agent`: `runAgent`, `vncPasswordFile`, `vncAuthResponse`.
//! - `cli`: `cliMain`, the `remote-access` command line behind `npx remote-access`.

mod agent;
mod authority;
mod cli;
mod convert;
mod errors;
mod events;
mod gateway;
mod keepalive;
mod logs;
mod script;
