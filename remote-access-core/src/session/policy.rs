//! The time rules a session follows; every duration is configurable.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How long remote access lasts. Defaults: 20 minutes of grace after the steps complete, a
/// 120-minute maximum build duration, no early finish for unused access, and 2 minutes to
/// reconnect after a dropped network.
///
/// ```
/// use remote_access_core::Policy;
/// use std::time::Duration;
/// let mut policy = Policy::default();
/// policy.grace = Duration::from_secs(10 * 60);
/// assert_eq!(policy.max_build_duration, Duration::from_secs(120 * 60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// Access lasts this long after all build steps have completed.
    pub grace: Duration,
    /// Access never outlasts the build's start plus this.
    pub max_build_duration: Duration,
    /// If set, finish early when nobody has connected this long after the steps completed.
    pub finish_if_unused_after: Option<Duration>,
    /// After the steps completed, how long the session waits for the user to come back when
    /// their last connection was lost to the network (not logged out): the same credentials
    /// work again meanwhile, and only if nobody reconnects does the session end as
    /// `connection_lost`. Never past the deadline; zero ends it at the drop.
    #[serde(default = "default_reconnect_window")]
    pub reconnect_window: Duration,
}

/// Sessions saved before the reconnect window existed get the default.
fn default_reconnect_window() -> Duration {
    Policy::default().reconnect_window
}

impl Policy {
    /// The longest duration any rule accepts (one year); beyond it a value is surely a mistake.
    pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

    /// Checks that every duration is in range.
    pub fn validate(&self) -> Result<()> {
        let check = |what: &'static str, d: Duration, may_be_zero: bool| {
            if d.is_zero() && !may_be_zero {
                Err(Error::invalid(what, "must be longer than zero"))
            } else if d > Self::MAX_DURATION {
                Err(Error::invalid(what, format!("{d:?} is longer than the limit of 366 days")))
            } else {
                Ok(())
            }
        };
        check("policy.grace", self.grace, true)?;
        check("policy.max_build_duration", self.max_build_duration, false)?;
        if let Some(unused) = self.finish_if_unused_after {
            check("policy.finish_if_unused_after", unused, true)?;
        }
        check("policy.reconnect_window", self.reconnect_window, true)?;
        Ok(())
    }
}

impl Policy {
    /// The rules in words, for any build under this policy: "until 20 minutes after the build
    /// steps complete, and never more than 2 hours after the build started".
    pub fn describe(&self) -> String {
        format!(
            "until {} after the build steps complete, and never more than {} after the build started",
            human(self.grace),
            human(self.max_build_duration)
        )
    }
}

/// A duration in words, to the second: "20 minutes", "1 hour 30 minutes", "90 seconds" (a
/// whole minute count reads better than seconds, so seconds show only when there are some).
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0 seconds".into();
    }
    let units = [
        (secs / 86_400, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
    ];
    let words: Vec<String> = units
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    words.join(" ")
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(20 * 60),
            max_build_duration: Duration::from_secs(120 * 60),
            finish_if_unused_after: None,
            reconnect_window: Duration::from_secs(2 * 60),
        }
    }
}
