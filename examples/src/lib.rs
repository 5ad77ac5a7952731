//! Support code for the runnable examples in `src/bin/`.

pub mod logging;
pub mod peers;
pub mod stand_in_builder;
pub mod stand_in_vnc;
