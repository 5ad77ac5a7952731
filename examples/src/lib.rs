//! Support code for the runnable examples in `src/bin/`.

/// Where the programs' logs go (shared with the `remote-access` command line).
pub use remote_access_cli::logging;
pub mod peers;
pub mod stand_in_builder;
pub mod stand_in_vnc;
