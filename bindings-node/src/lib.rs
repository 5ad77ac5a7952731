//! Node bindings for `remote-access-core`, built with napi-rs: the package `remote-access`.
//!
//! Thin by design: each function converts its arguments, calls the core and converts the
//! result or error. Decisions belong in the core, so Rust, Python and Node behave the same.
//! napi's tokio runtime runs the futures; every Promise settles on the JS thread.
//!
//! # Layout
//!
//! - `errors`: core errors as JS `Error`s with a `code`; futures as Promises.
//! - `convert`: milliseconds, RFC 3339 times, addresses and ports from JS values.
//! - `authority`: `Authority`, `Policy`, `Builder`, `ManualClock`, `Credentials`, `Session`,
//!   `LiveConnection`.
//! - `events`: `Event`, the `Subscription` async iterator, the `EventListener` callback.
//! - `gateway`: `HostKey`, `TlsIdentity`, `Gateway`, `RunningGateway`.
//! - `script`: `ScriptOptions`, `ConnectionInfo`.
//! - `agent`: `runAgent`, `vncPasswordFile`, `vncAuthResponse`.

mod agent;
mod authority;
mod convert;
mod errors;
mod events;
mod gateway;
mod script;
