//! The time rules a session follows; every duration is configurable.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How long remote access lasts. Defaults: 20 minutes of grace after the steps complete, a
/// 120-minute maximum build duration, and no early finish for unused access.
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
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(20 * 60),
            max_build_duration: Duration::from_secs(120 * 60),
            finish_if_unused_after: None,
        }
    }
}
