//! Log lines about refused connections and logins, rate-limited: a flood of hostile
//! connections must not flood the logs (or fill the disk) with them, yet an operator must see
//! that it happens and why each refusal was made while it is rare.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines allowed per second; past them, lines are counted and the count logged once the next
/// second starts.
const PER_SECOND: u32 = 20;

#[derive(Debug)]
pub(crate) struct LogLimit {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window: Instant,
    lines: u32,
    suppressed: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self { state: Mutex::new(State { window: Instant::now(), lines: 0, suppressed: 0 }) }
    }
}

impl LogLimit {
    /// Runs `log` (a `tracing` call) unless this second's lines are used up.
    pub(crate) fn log(&self, log: impl FnOnce()) {
        let now = Instant::now();
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let mut suppressed = 0;
            if now.duration_since(state.window) >= Duration::from_secs(1) {
                suppressed = std::mem::take(&mut state.suppressed);
                state.window = now;
                state.lines = 0;
            }
            if state.lines >= PER_SECOND {
                state.suppressed += 1;
                return;
            }
            state.lines += 1;
            suppressed
        };
        if suppressed > 0 {
            tracing::info!(
                suppressed,
                "refusals not logged in the last second(s): more than {PER_SECOND} a second"
            );
        }
        log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_budget_per_second() {
        let limit = LogLimit::default();
        let mut logged = 0;
        for _ in 0..1000 {
            limit.log(|| logged += 1);
        }
        assert_eq!(logged, PER_SECOND);
    }
}
