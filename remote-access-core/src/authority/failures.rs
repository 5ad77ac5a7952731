//! Runs of failed logins kept in the store, so that every gateway sharing it counts the same
//! run: a fleet of gateways allows a network no more guesses than one gateway does, and the
//! platform hears of guesses against a build once, whichever gateways they reached.

use std::time::Duration;

use super::Authority;
use crate::error::Result;
use crate::store::Failures;

impl Authority {
    /// Adds a failed login to the run under `key` (what the caller counts by: a network),
    /// against `tag` (what it tried); returns the run's count, this one included.
    pub(crate) async fn count_failure(&self, key: &str, tag: Option<&str>) -> Result<u32> {
        self.in_contact()?;
        self.inner.store.add_failure(key, tag).await
    }

    /// The run under `key` as (count, time since its last failure), if there is one.
    pub(crate) async fn failures(&self, key: &str) -> Result<Option<(u32, Duration)>> {
        self.in_contact()?;
        Ok(self.inner.store.failures(key).await?.map(run))
    }

    /// Takes back the failures of the run under `key` against `tag` (which has just logged in
    /// from there); returns what is left of the run.
    pub(crate) async fn take_back_failures(&self, key: &str, tag: &str) -> Result<Option<(u32, Duration)>> {
        self.in_contact()?;
        Ok(self.inner.store.take_back_failures(key, Some(tag)).await?.map(run))
    }
}

fn run(failures: Failures) -> (u32, Duration) {
    (failures.count, failures.ago)
}
