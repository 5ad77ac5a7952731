//! Sessions: the time rules ([`Policy`]), the pure state machine ([`Session`]) and the
//! per-build cut signals that tell live connections to close.

mod machine;
mod policy;
mod registry;

pub use machine::{Action, ConnectionId, EndReason, Input, Phase, Protocol, Session, Transition};
pub use policy::Policy;
pub use registry::CutSignal;
pub(crate) use registry::Registry;
