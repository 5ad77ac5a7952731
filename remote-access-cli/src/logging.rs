//! Where the example programs' logs go: a `tracing` subscriber writing to stderr, filtered by
//! `RUST_LOG`.
//!
//! The library logs through `tracing` and never installs a subscriber, since only a program
//! knows where its logs belong; without one, its lines (refused logins, cut connections, lost
//! contact with the store) go nowhere. So each program installs one first thing.

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the subscriber for `program`: lines at the levels `RUST_LOG` asks for (`debug`,
/// `remote_access_core=debug,info`, ...), or at `default` and above when it is unset or
/// empty, on stderr (stdout is the programs' own output, read by scripts).
///
/// With `json`, each line is a JSON object (`timestamp`, `level`, `target`, `fields` with the
/// `message`), for log collectors.
///
/// `RUST_LOG` is read as `tracing_subscriber`'s `Targets` (level, or target=level, comma
/// separated), not `EnvFilter`, whose span and regex syntax would pull in a regex engine. A
/// value that does not parse is reported on stderr and `default` used: a typo must neither
/// stop a gateway from starting nor leave it silent.
pub fn init(program: &str, default: LevelFilter, json: bool) {
    let fallback = || Targets::new().with_default(default);
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if value.trim().is_empty() => fallback(),
        Ok(value) => Targets::from_str(value.trim()).unwrap_or_else(|err| {
            eprintln!(
                "{program}: ignoring RUST_LOG={value:?} ({err}); logging at {default} and above instead \
                 (write LEVEL or TARGET=LEVEL,..., e.g. RUST_LOG=remote_access_core=debug,info)"
            );
            fallback()
        }),
        Err(std::env::VarError::NotPresent) => fallback(),
        Err(std::env::VarError::NotUnicode(value)) => {
            eprintln!(
                "{program}: ignoring RUST_LOG={value:?} (not UTF-8); logging at {default} and above instead"
            );
            fallback()
        }
    };
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Fails only when a subscriber is already installed, which then goes on logging.
    let _ = if json {
        tracing_subscriber::registry().with(lines.json()).with(filter).try_init()
    } else {
        tracing_subscriber::registry().with(lines).with(filter).try_init()
    };
}
