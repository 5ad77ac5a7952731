//! Sessions: the time rules ([`Policy`]), the pure state machine ([`Session`]) and the
//! per-build cut signals that tell live connections to close.

mod cut_signals;
mod event;
mod machine;
mod policy;

pub use cut_signals::CutSignal;
pub(crate) use cut_signals::CutSignals;
pub use event::{Event, EventKind};
pub use machine::{Action, ConnectionId, Input, Phase, Protocol, Session, Transition};
pub use policy::Policy;
pub(crate) use policy::human;
