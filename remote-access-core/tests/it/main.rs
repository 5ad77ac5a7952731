//! The integration tests, in one binary (as rustls does): one link of the library and of the
//! test peers instead of one per file, and one place for what the modules share. Each module
//! is a file of this directory; `cargo test --test it gateway` runs one of them.
//!
//! Tests share this process: none installs a global `tracing` subscriber (each captures logs on
//! its own thread with `set_default`), sets environment variables or process limits.
//! `tests/attacks.rs` and `tests/adversarial.rs` stay binaries of their own: each installs a
//! counting `#[global_allocator]`, and a global allocator is per binary. `tests/secrets.rs`
//! too: it must see every line the library logs, which tracing's process-wide callsite cache
//! does not promise a thread-local capture while other tests log on other threads.
//!
//! Real peers (sshd, X and VNC servers, Redis, vncdo) come from `remote-access-test-peers`; what
//! needs the library's types is in `builds` and `vnc_viewer`.
//!
//! proptest keeps the failures it found in `tests/proptest-regressions/<module>.txt` (its
//! default once this directory has a `main.rs`), and runs them again first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test

mod builds;
mod vnc_viewer;

mod agent;
mod authority;
mod builder_kit;
mod builder_secrets;
mod certificates;
mod clients;
mod drops;
#[cfg(feature = "redis")]
mod failover;
#[cfg(feature = "redis")]
mod fleet_backoff;
mod fleet_events;
mod gateway;
mod layers;
mod metrics;
mod properties;
#[cfg(feature = "redis")]
mod redis;
mod restart;
mod scripts;
mod session_rules;
mod ssh_audit;
mod vnc;
mod vnc_encrypted;
