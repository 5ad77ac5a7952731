//! The default store: everything in this process's memory, lost on restart.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Conflict, CredentialRecord, Failures, Insert, Revocation, Store, StoreFuture, Versioned};
use crate::build::BuildId;
use crate::session::Session;
use crate::throttle::Throttle;

/// A [`Store`] in memory. Fine for one gateway; use a networked store for several.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// The event log: this process is the whole fleet.
    events: Mutex<EventLog>,
    /// Woken when events are appended.
    appended: tokio::sync::Notify,
    /// Runs of failed logins, for every gateway of this process.
    failures: FailureRuns,
}

/// [`Store::add_failure`]'s runs: a throttle that only counts (it never blocks by itself).
struct FailureRuns(Throttle<String, String>);

impl Default for FailureRuns {
    fn default() -> Self {
        Self(Throttle::new(u32::MAX, Duration::ZERO, Duration::ZERO, super::FAILURE_MEMORY))
    }
}

impl FailureRuns {
    fn run(&self, key: &str) -> Option<Failures> {
        self.0.strikes(&key.to_owned()).map(|(count, ago)| Failures::new(count, ago))
    }
}

/// The in-process event log keeps a tenth of a shared store's [`super::EVENT_LOG_LEN`]: it
/// lives in the gateway's own memory (a few hundred bytes an event).
const MEMORY_EVENT_LOG_LEN: usize = super::EVENT_LOG_LEN / 10;

/// The in-process event log: numbered from 1, the oldest dropped past
/// [`MEMORY_EVENT_LOG_LEN`].
#[derive(Default)]
struct EventLog {
    entries: std::collections::VecDeque<(u64, String)>,
    last: u64,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<BuildId, Versioned<Session>>,
    credentials: HashMap<BuildId, CredentialRecord>,
    by_username: HashMap<String, BuildId>,
    by_fingerprint: HashMap<String, BuildId>,
    by_password: HashMap<[u8; 32], BuildId>,
    /// VNC ports of live sessions only: a port is free again once its session ends.
    by_vnc_port: HashMap<u16, BuildId>,
    /// Key fingerprints of ended builds, until their latest possible end (the KRL's list;
    /// purging leaves it alone).
    revoked: HashMap<String, OffsetDateTime>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: the records hold passwords and digests of them.
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("sessions", &inner.sessions.len())
            .field("credentials", &inner.credentials.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn add_failure<'a>(&'a self, key: &'a str, tag: Option<&'a str>) -> StoreFuture<'a, u32> {
        let (count, _) = self.failures.0.failed(&key.to_owned(), tag.map(str::to_owned).as_ref());
        Box::pin(async move { Ok(count) })
    }

    fn failures<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Failures>> {
        let run = self.failures.run(key);
        Box::pin(async move { Ok(run) })
    }

    fn take_back_failures<'a>(
        &'a self,
        key: &'a str,
        tag: Option<&'a str>,
    ) -> StoreFuture<'a, Option<Failures>> {
        match tag {
            Some(tag) => self.failures.0.succeeded(&key.to_owned(), &tag.to_owned()),
            None => self.failures.0.forget(&key.to_owned()),
        }
        let run = self.failures.run(key);
        Box::pin(async move { Ok(run) })
    }

    fn append_events<'a>(&'a self, events: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut log = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            for event in events {
                log.last += 1;
                let id = log.last;
                log.entries.push_back((id, event.clone()));
                if log.entries.len() > MEMORY_EVENT_LOG_LEN {
                    log.entries.pop_front();
                }
            }
            drop(log);
            self.appended.notify_waiters();
            Ok(())
        })
    }

    fn last_event_id(&self) -> StoreFuture<'_, String> {
        Box::pin(async move {
            Ok(format!("{}-0", self.events.lock().unwrap_or_else(PoisonError::into_inner).last))
        })
    }

    fn read_events(
        &self,
        after: String,
        count: usize,
        wait: std::time::Duration,
    ) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let after: u64 =
                after.split_once('-').map_or(after.as_str(), |(n, _)| n).parse().map_err(|_| {
                    crate::error::Error::invalid("event id", "not an id this log gave out (N-0)")
                })?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Registered before looking, so that an append in between is not missed.
                let appended = self.appended.notified();
                let found: Vec<(String, String)> = {
                    let log = self.events.lock().unwrap_or_else(PoisonError::into_inner);
                    log.entries
                        .iter()
                        .filter(|(id, _)| *id > after)
                        .take(count)
                        .map(|(id, event)| (format!("{id}-0"), event.clone()))
                        .collect()
                };
                if !found.is_empty() || tokio::time::timeout_at(deadline, appended).await.is_err() {
                    return Ok(found);
                }
            }
        })
    }

    fn insert(
        &self,
        session: Session,
        credential: CredentialRecord,
        _keep_until: OffsetDateTime, // purge() forgets records here
    ) -> StoreFuture<'_, Insert> {
        let mut inner = self.lock();
        let conflict = if inner.sessions.contains_key(session.build_id()) {
            Some(Conflict::BuildId)
        } else if inner.by_username.contains_key(&credential.username)
            || credential.agent_username.as_ref().is_some_and(|u| inner.by_username.contains_key(u))
        {
            Some(Conflict::Username)
        } else if inner.by_fingerprint.contains_key(&credential.key_fingerprint)
            || credential.agent_key_fingerprint.as_ref().is_some_and(|f| inner.by_fingerprint.contains_key(f))
        {
            Some(Conflict::Key)
        } else if inner.by_password.contains_key(&credential.password_digest) {
            Some(Conflict::Password)
        } else if session.vnc_port().is_some_and(|port| inner.by_vnc_port.contains_key(&port)) {
            Some(Conflict::VncPort)
        } else {
            None
        };
        let outcome = match conflict {
            Some(conflict) => Insert::Conflict(conflict),
            None => {
                let id = session.build_id().clone();
                inner.by_username.insert(credential.username.clone(), id.clone());
                inner.by_fingerprint.insert(credential.key_fingerprint.clone(), id.clone());
                inner.by_password.insert(credential.password_digest, id.clone());
                if let Some(port) = session.vnc_port() {
                    inner.by_vnc_port.insert(port, id.clone());
                }
                if let Some(agent) = &credential.agent_username {
                    inner.by_username.insert(agent.clone(), id.clone());
                }
                if let Some(agent) = &credential.agent_key_fingerprint {
                    inner.by_fingerprint.insert(agent.clone(), id.clone());
                }
                inner.credentials.insert(id.clone(), credential);
                inner.sessions.insert(id, Versioned { value: session, version: 0 });
                Insert::Done
            }
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn session<'a>(&'a self, build_id: &'a BuildId) -> StoreFuture<'a, Option<Versioned<Session>>> {
        let found = self.lock().sessions.get(build_id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn replace_session(
        &self,
        session: Session,
        version: u64,
        revocation: Option<Revocation>,
    ) -> StoreFuture<'_, bool> {
        let mut inner = self.lock();
        let id = session.build_id().clone();
        let replaced = match inner.sessions.get_mut(&id) {
            Some(current) if current.version == version => {
                *current = Versioned { value: session, version: version.wrapping_add(1) };
                true
            }
            _ => false,
        };
        if replaced
            && let Some(port) =
                inner.sessions.get(&id).filter(|s| s.value.is_ended()).and_then(|s| s.value.vnc_port())
            && inner.by_vnc_port.get(&port) == Some(&id)
        {
            inner.by_vnc_port.remove(&port);
        }
        if replaced
            && let Some(revocation) = revocation
            && let Some(record) = inner.credentials.get_mut(&id)
        {
            record.revoked.get_or_insert(revocation);
        }
        if replaced
            && let Some(max_end) =
                inner.sessions.get(&id).filter(|s| s.value.is_ended()).map(|s| s.value.max_end())
            && let Some(fingerprint) = inner.credentials.get(&id).map(|r| r.key_fingerprint.clone())
        {
            inner.revoked.insert(fingerprint, max_end);
        }
        Box::pin(async move { Ok(replaced) })
    }

    fn credential_for_user<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<CredentialRecord>> {
        let inner = self.lock();
        let found = inner.by_username.get(username).and_then(|id| inner.credentials.get(id)).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn credential_for_build<'a>(
        &'a self,
        build_id: &'a BuildId,
    ) -> StoreFuture<'a, Option<CredentialRecord>> {
        let found = self.lock().credentials.get(build_id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn session_for_vnc_port(&self, port: u16) -> StoreFuture<'_, Option<BuildId>> {
        let found = self.lock().by_vnc_port.get(&port).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn due_sessions(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>> {
        let due = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.value.next_deadline().is_some_and(|at| at <= now))
            .map(|s| s.value.build_id().clone())
            .collect();
        Box::pin(async move { Ok(due) })
    }

    fn live_sessions(&self) -> StoreFuture<'_, Vec<BuildId>> {
        let live = self
            .lock()
            .sessions
            .values()
            .filter(|s| !s.value.is_ended())
            .map(|s| s.value.build_id().clone())
            .collect();
        Box::pin(async move { Ok(live) })
    }

    fn revoked_fingerprints(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<String>> {
        let mut inner = self.lock();
        inner.revoked.retain(|_, until| *until > now);
        let fingerprints = inner.revoked.keys().cloned().collect();
        Box::pin(async move { Ok(fingerprints) })
    }

    fn next_deadline(&self) -> StoreFuture<'_, Option<OffsetDateTime>> {
        let next = self.lock().sessions.values().filter_map(|s| s.value.next_deadline()).min();
        Box::pin(async move { Ok(next) })
    }

    fn purge(&self, ended_before: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>> {
        let mut inner = self.lock();
        let old: Vec<BuildId> = inner
            .sessions
            .values()
            .filter(|s| s.value.end().is_some_and(|(_, at)| at < ended_before))
            .map(|s| s.value.build_id().clone())
            .collect();
        for id in &old {
            inner.sessions.remove(id);
            if let Some(record) = inner.credentials.remove(id) {
                inner.by_username.remove(&record.username);
                inner.by_fingerprint.remove(&record.key_fingerprint);
                inner.by_password.remove(&record.password_digest);
                for agent in [&record.agent_username, &record.agent_key_fingerprint].into_iter().flatten() {
                    inner.by_username.remove(agent);
                    inner.by_fingerprint.remove(agent);
                }
            }
        }
        // The KRL's list keeps a key until its build's latest end, whatever is purged.
        inner.revoked.retain(|_, until| *until >= ended_before);
        Box::pin(async move { Ok(old) })
    }
}
