//! A store in Redis, shared by every gateway of a deployment (cargo feature `redis`).
//!
//! Keys, under a prefix `{p}` (default `remote-access`), one set per build:
//!
//! | key | holds |
//! | --- | --- |
//! | `{p}:session:{build}` | hash: `v` version, `s` session (JSON) |
//! | `{p}:credential:{build}` | hash: `record` (JSON), `revoked` (JSON, written once) |
//! | `{p}:user:{name}`, `{p}:key:{fingerprint}`, `{p}:password:{sha256 hex}` | the build id: uniqueness, live or tombstone |
//! | `{p}:vnc-port:{port}` | the build id, while its session is live |
//! | `{p}:deadlines` | sorted set: live builds by next deadline (ms) |
//! | `{p}:ended` | sorted set: ended builds by end time (ms), for purging |
//! | `{p}:revoked-keys` | sorted set: key fingerprints of ended builds by their latest possible end (ms), until it passes (the KRL) |
//! | `{p}:instances` | sorted set: authorities by last heartbeat (ms) |
//! | `{p}:events` | stream: the fleet's event log, trimmed to about `EVENT_LOG_LEN` |
//! | `{p}:failures:network:{prefix}`, `{p}:failures:build:{build}:{credential}` | hash: a run of failed logins (`n`, `at` in Redis's ms, `t:{tag}` per target), expiring 15 minutes after its last |
//!
//! Every write is one Lua script, so it is atomic: a session's compare-and-swap, its tombstone
//! and its announcement on the channel `{p}:ended` happen together or not at all. Every key of
//! a build expires by itself at `keep_until` (the latest the session can end plus the tombstone
//! retention), so nothing outlives its retention even if every gateway is gone; a live session's
//! VNC port key expires at its deadline. Times are absolute, from the authority's clock, which
//! must therefore be the real time (the system clock).
//!
//! The scripts name some keys they build from the prefix (purging reads a record to find its
//! indexes), so the store needs one Redis (or a primary with replicas), not Redis Cluster.
//!
//! **Replicas.** A write that ends a session (and writes its tombstone) goes on a connection of
//! its own and is followed by `WAIT min_replicas`: a failover to a replica that missed it
//! would undo the revocation, the one failure this product must not have. An end the replicas
//! do not confirm in time is kept here and written again (the primary may have changed) until
//! they do; meanwhile [`Store::ping`] fails, so the authority refuses every login (fail
//! closed). With Sentinel (`redis+sentinel://`), connections follow the primary the Sentinels
//! name after a failover.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::PoisonError;
use std::time::Duration;

use rand_core::Rng;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use zeroize::{Zeroize, Zeroizing};

use super::redis_nodes::Nodes;
use super::{
    Conflict, CredentialRecord, EVENT_LOG_LEN, FAILURE_MEMORY, Failures, Insert, Notice, Revocation, Store,
    StoreFuture, Versioned,
};
use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::session::Session;

/// Records bigger than this are refused as corrupt rather than parsed.
const MAX_RECORD_LEN: usize = 64 * 1024;
/// Builds handled per call of the due and purge scripts; the rest wait for the next round.
const BATCH: usize = 1000;
/// How long the change feed waits before it reconnects after losing Redis.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// A replica last heard from longer ago than this (seconds, as Redis counts `lag`) is not in
/// sync.
const MAX_REPLICA_LAG: u64 = 2;
/// The longest `WAIT` for replicas: well inside the one-second contact check.
const MAX_WAIT: Duration = Duration::from_millis(400);
/// How often the change feed's connection is proved alive with a ping.
const WATCH_PROBE: Duration = Duration::from_secs(5);

/// Options for a [`RedisStore`]; every field but the URL has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Where Redis is: `redis://[user:password@]host:port/db`, `rediss://...` for TLS, or
    /// `redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]` for the
    /// primary the Sentinels at those addresses name `master` (the credentials are the data
    /// nodes'). Kept out of `Debug`.
    pub url: Secret<String>,
    /// For `rediss://`: the CA certificates (PEM) to trust for the server's certificate instead
    /// of the system's roots (a private CA, or a managed service's own). `None`: the system's.
    pub tls_ca_pem: Option<String>,
    /// For `rediss://` to a Redis that asks for client certificates (`tls-auth-clients yes`):
    /// this client's certificate chain (PEM) and its private key (PEM).
    pub tls_client: Option<(String, Secret<String>)>,
    /// The prefix of every key and channel, so that deployments can share a Redis
    /// (default `remote-access`).
    pub key_prefix: String,
    /// The deadline of every call to Redis, connecting included (default 2 s). A call that
    /// misses it fails as [`Error::StoreUnavailable`].
    pub timeout: Duration,
    /// How many replicas must confirm each write that ends a session (Redis `WAIT`, at most
    /// 400 ms) and be in sync with the primary for logins to go on (fail closed). `None` (the
    /// default): 1 once this store has seen the primary with a replica, 0 for a Redis that
    /// never had one. An end that the replicas miss would be undone by a failover to one of
    /// them; run two replicas so that a failover leaves one (`docs/scaling.md`).
    pub min_replicas: Option<u32>,
}

impl RedisOptions {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url.into()),
            tls_ca_pem: None,
            tls_client: None,
            key_prefix: "remote-access".to_owned(),
            timeout: Duration::from_secs(2),
            min_replicas: None,
        }
    }
}

/// A [`Store`] in Redis: several gateways (and the platform's own processes) share it, so a
/// revocation through any of them reaches all, and a restarted gateway finds its sessions.
///
/// Platforms choose it with [`crate::StoreOptions::Redis`]:
///
/// ```no_run
/// use remote_access_core::{Authority, AuthorityOptions, RedisOptions, StoreOptions};
/// let mut options = AuthorityOptions::default();
/// options.store = StoreOptions::Redis(RedisOptions::new("redis://127.0.0.1:6379/0"));
/// let authority = Authority::new(options)?;
/// # Ok::<(), remote_access_core::Error>(())
/// ```
pub struct RedisStore {
    nodes: Nodes,
    options: RedisOptions,
    /// The most replicas this store has seen the primary have (`u32::MAX` before the first
    /// look), for the default of `min_replicas`: once a replica has been seen, one is
    /// required, even when it disconnects (it may be the one a failover promotes).
    replicas_seen: std::sync::atomic::AtomicU32,
    /// The connection of every call but session ends: made on first use, on the caller's
    /// runtime, and reconnecting by itself; with Sentinel, made again (to the primary they
    /// name) after a failure.
    connection: Slot,
    /// Session ends and their `WAIT`, on a connection of their own: `WAIT` holds up whatever
    /// follows it on its connection, and counts that connection's writes only.
    ends: Slot,
    /// Readers of the event log, whose `XREAD BLOCK` would hold up everything else.
    event_reader: Slot,
    /// Session ends the replicas have not confirmed: written again and waited for on each
    /// ping, which fails until they are confirmed.
    unconfirmed: std::sync::Mutex<HashMap<BuildId, (Session, Option<Revocation>)>>,
    keys: Keys,
}

/// A connection made when first needed, and dropped to be made again.
type Slot = tokio::sync::Mutex<Option<std::sync::Arc<ConnectionManager>>>;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisStore").field("key_prefix", &self.options.key_prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `options.url`. Nothing is contacted yet: the first call
    /// connects, so an unreachable Redis shows as [`Error::StoreUnavailable`] then, and the
    /// authority fails closed.
    pub fn new(options: RedisOptions) -> Result<Self> {
        let nodes = Nodes::new(&options)?;
        let prefix = &options.key_prefix;
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("redis key_prefix", "1 to 64 printable ASCII characters, no spaces"));
        }
        if options.timeout.is_zero() || options.timeout > Duration::from_secs(60) {
            return Err(Error::invalid("redis timeout", "between 1 ms and 60 s"));
        }
        let keys = Keys { prefix: prefix.clone() };
        Ok(Self {
            nodes,
            options,
            replicas_seen: std::sync::atomic::AtomicU32::new(u32::MAX),
            connection: Slot::default(),
            ends: Slot::default(),
            event_reader: Slot::default(),
            unconfirmed: Default::default(),
            keys,
        })
    }

    /// The connection in `slot`, made (to the primary as of now) if there is none; within the
    /// call deadline, waiting for others making it included.
    async fn connection(&self, slot: &Slot) -> Result<std::sync::Arc<ConnectionManager>> {
        let made = tokio::time::timeout(self.options.timeout, async {
            let mut slot = slot.lock().await;
            if let Some(connection) = slot.as_ref() {
                return Ok(connection.clone());
            }
            let primary = self.nodes.primary().await.map_err(unavailable)?;
            // Few, quick retries: a call must fail within its deadline, not wait out a long
            // reconnect; the next call tries again.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.options.timeout))
                .set_response_timeout(Some(self.options.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let connection = ConnectionManager::new_lazy_with_config(primary, config).map_err(unavailable)?;
            Ok(slot.insert(std::sync::Arc::new(connection)).clone())
        });
        made.await.unwrap_or_else(|_| {
            Err(Error::StoreUnavailable {
                message: format!("no connection to the Redis primary within {:?}", self.options.timeout),
                source: None,
            })
        })
    }

    /// Drops `failed` from `slot` (with Sentinel, so that the next call asks them for the
    /// primary), unless another call has replaced it already.
    async fn forget(&self, slot: &Slot, failed: &std::sync::Arc<ConnectionManager>) {
        if self.nodes.follow_failovers() {
            let mut slot = slot.lock().await;
            if slot.as_ref().is_some_and(|now| std::sync::Arc::ptr_eq(now, failed)) {
                *slot = None;
            }
        }
    }

    /// Runs one call on the shared connection, with the deadline.
    async fn run<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_on(&self.connection, what, call).await
    }

    /// Runs one call on the connection in `slot`, with the deadline. A connection that dropped
    /// (Redis restarted) shows only when used: the call is made once more on the reconnected
    /// one, or, with Sentinel, on a new connection to the primary they name now (the old one
    /// may be gone, or a replica that answers `READONLY`). That is safe for every call here:
    /// reads, and scripts that are compare-and-swaps or inserts whose repeat is recognised
    /// (see `insert`). A call that timed out is not repeated: a store that slow counts as
    /// absent, and the caller must know at once (with Sentinel, the next call asks them again).
    async fn run_on<T, F, Fut>(&self, slot: &Slot, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection(slot).await?;
        match self.call(what, call((*connection).clone())).await {
            Err(Attempt::Failed(err)) if retried(&err) => {
                self.forget(slot, &connection).await;
                let connection = self.connection(slot).await?;
                let again = self.call(what, call((*connection).clone())).await;
                if again.is_err() {
                    self.forget(slot, &connection).await;
                }
                again.map_err(Attempt::into_error)
            }
            Err(failed) => {
                self.forget(slot, &connection).await;
                Err(failed.into_error())
            }
            Ok(answer) => Ok(answer),
        }
    }

    /// How many replicas must confirm an end and be in sync (`RedisOptions::min_replicas`);
    /// by default 1 once a replica has been seen (also before the first look).
    fn min_replicas(&self) -> u32 {
        let seen = self.replicas_seen.load(std::sync::atomic::Ordering::Relaxed);
        self.options.min_replicas.unwrap_or(seen.min(1))
    }

    /// Reads the primary's replication state: how many replicas are in sync (online, and
    /// acknowledged within [`MAX_REPLICA_LAG`]). Every authority of the fleet checks it with
    /// each ping, so that none lets a user in while a revocation written now could be lost in
    /// a failover, whoever writes it. A node that is not the primary is an error.
    async fn replication(&self) -> Result<u32> {
        let info: String = self
            .run("the replication state", |mut con| async move {
                redis::cmd("INFO").arg("replication").query_async(&mut con).await
            })
            .await?;
        if info.len() > MAX_RECORD_LEN {
            return Err(corrupt("replication state"));
        }
        if !info.lines().any(|line| line.trim_end() == "role:master") {
            if let Some(connection) = self.connection.lock().await.clone() {
                self.forget(&self.connection, &connection).await;
            }
            return Err(Error::StoreUnavailable {
                message: "the Redis node answering is not the primary (role is not master)".into(),
                source: None,
            });
        }
        // `slave0:ip=10.0.0.2,port=6379,state=online,offset=1234,lag=0`
        let replicas: Vec<&str> =
            info.lines().filter(|line| line.starts_with("slave") && line.contains(":ip=")).collect();
        let count = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
        let seen = &self.replicas_seen;
        let _ = seen.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |before| Some(if before == u32::MAX { count } else { before.max(count) }),
        );
        let in_sync = replicas
            .iter()
            .filter(|line| {
                let field = |name: &str| line.split([':', ',']).find_map(|f| f.strip_prefix(name));
                field("state=") == Some("online")
                    && field("lag=")
                        .and_then(|lag| lag.trim().parse::<u64>().ok())
                        .is_some_and(|lag| lag <= MAX_REPLICA_LAG)
            })
            .count();
        Ok(u32::try_from(in_sync).unwrap_or(u32::MAX))
    }

    /// Makes sure the primary has `build_id`'s end, written again if it lacks it (a failover
    /// to a replica that missed it), and that `min_replicas` replicas have it: the read, a
    /// barrier write and `WAIT` go in one pipeline on one connection, so the `WAIT` covers the
    /// barrier and with it every earlier write on that primary, the end included. Whether
    /// the replicas confirmed it.
    async fn settle_end(
        &self,
        build_id: &BuildId,
        ended: &Session,
        revocation: &Option<Revocation>,
    ) -> Result<bool> {
        let wanted = self.min_replicas();
        if wanted == 0 {
            return Ok(true); // no replica to wait for, nor one a failover could promote
        }
        let wait_ms = (self.options.timeout / 2).min(MAX_WAIT).as_millis() as u64;
        let (key, barrier) = (&self.keys.session(build_id), &self.keys.barrier());
        for _ in 0..3 {
            type Checked = ((Option<u64>, Option<Vec<u8>>), String, i64);
            let ((version, stored), _, confirmed): Checked = self
                .run_on(&self.ends, "a check of a session's end", |mut con| async move {
                    redis::pipe()
                        .cmd("HMGET")
                        .arg(key)
                        .arg("v")
                        .arg("s")
                        .cmd("SET")
                        .arg(barrier)
                        .arg(1)
                        .arg("PX")
                        .arg(3_600_000)
                        .cmd("WAIT")
                        .arg(wanted)
                        .arg(wait_ms)
                        .query_async(&mut con)
                        .await
                })
                .await?;
            let stored = stored.as_deref().map(|json| parse::<Session>(json, "session")).transpose()?;
            match (version, stored) {
                (Some(version), Some(stored)) if !stored.is_ended() => {
                    tracing::warn!(%build_id, "the Redis primary lacks a session's end (a failover?): writing it again");
                    // Lost to another writer: read again and retry.
                    self.write_session(&self.ends, ended.clone(), version, revocation.clone()).await?;
                }
                // Ended there (or gone with its credential: the primary lost everything).
                _ => return Ok(confirmed >= i64::from(wanted)),
            }
        }
        Ok(false)
    }

    /// Settles every end kept unconfirmed; how many are still unconfirmed.
    async fn settle_pending(&self) -> Result<usize> {
        let pending: Vec<(BuildId, (Session, Option<Revocation>))> = {
            let unconfirmed = self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner);
            unconfirmed.iter().map(|(id, end)| (id.clone(), end.clone())).collect()
        };
        let mut left = 0;
        for (build_id, (ended, revocation)) in &pending {
            if self.settle_end(build_id, ended, revocation).await? {
                self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner).remove(build_id);
                tracing::info!(%build_id, "the Redis replicas confirmed a session's end");
            } else {
                left += 1;
            }
        }
        Ok(left)
    }

    /// The compare-and-swap of a session (with its tombstone when it ends) on `slot`.
    async fn write_session(
        &self,
        slot: &Slot,
        session: Session,
        version: u64,
        revocation: Option<Revocation>,
    ) -> Result<bool> {
        let id = session.build_id().clone();
        let json = serde_json::to_string(&session).map_err(|_| corrupt("session"))?;
        let revocation = match &revocation {
            Some(r) => encode_revocation(r)?,
            None => String::new(),
        };
        let mut script = REPLACE.prepare_invoke();
        script
            .key(self.keys.session(&id))
            .key(self.keys.credential(&id))
            .key(self.keys.deadlines())
            .key(self.keys.ended())
            .key(session.vnc_port().map_or_else(|| self.keys.vnc_port_none(), |p| self.keys.vnc_port(p)))
            .key(self.keys.certified())
            .arg(version)
            .arg(json)
            .arg(id.as_str())
            .arg(session.next_deadline().map_or(0, ms_ceil))
            .arg(session.end().map_or(0, |(_, at)| ms_ceil(at)))
            .arg(revocation)
            .arg(self.keys.channel())
            .arg(format!("{:016x}", russh::keys::key::safe_rng().next_u64()))
            .arg(ms_ceil(session.max_end()));
        let script = &script;
        let replaced: i64 = self
            .run_on(slot, "a session update", |mut con| async move { script.invoke_async(&mut con).await })
            .await?;
        Ok(replaced == 1)
    }

    /// One attempt with the deadline.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> std::result::Result<T, Attempt> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(result) => result.map_err(Attempt::Failed),
            Err(_) => Err(Attempt::TimedOut(format!(
                "Redis did not answer {what} within {:?}",
                self.options.timeout
            ))),
        }
    }

    async fn read_credential(&self, build_id: &BuildId) -> Result<Option<CredentialRecord>> {
        let key = &self.keys.credential(build_id);
        let (record, revoked): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .run("a credential read", |mut con| async move { con.hmget(key, &["record", "revoked"]).await })
            .await?;
        let Some(record) = record.map(Zeroizing::new) else { return Ok(None) };
        decode_credential(build_id, &record, revoked.as_deref()).map(Some)
    }

    async fn index(&self, key: String) -> Result<Option<BuildId>> {
        let key = &key;
        let found: Option<String> =
            self.run("an index read", |mut con| async move { con.get(key).await }).await?;
        found.map(|id| BuildId::new(id).map_err(|_| corrupt("index"))).transpose()
    }
}

impl Store for RedisStore {
    fn insert(
        &self,
        session: Session,
        credential: CredentialRecord,
        keep_until: OffsetDateTime,
    ) -> StoreFuture<'_, Insert> {
        Box::pin(async move {
            let id = session.build_id().clone();
            let session_json = serde_json::to_string(&session).map_err(|_| corrupt("session"))?;
            let record_json = encode_credential(&credential)?;
            let mut script = INSERT.prepare_invoke();
            script
                .key(self.keys.session(&id))
                .key(self.keys.credential(&id))
                .key(self.keys.deadlines())
                .key(session.vnc_port().map_or_else(|| self.keys.vnc_port_none(), |p| self.keys.vnc_port(p)))
                .key(self.keys.ended());
            let mut conflicts = Vec::new();
            let mut unique = |key: String, conflict: &'static str| {
                script.key(key);
                conflicts.push(conflict);
            };
            unique(self.keys.user(&credential.username), "username");
            if let Some(agent) = &credential.agent_username {
                unique(self.keys.user(agent), "username");
            }
            unique(self.keys.fingerprint(&credential.key_fingerprint), "key");
            if let Some(agent) = &credential.agent_key_fingerprint {
                unique(self.keys.fingerprint(agent), "key");
            }
            unique(self.keys.password(&credential.password_digest), "password");
            script
                .arg(id.as_str())
                .arg(session_json)
                .arg(record_json.as_slice())
                .arg(session.next_deadline().map_or(0, ms_ceil))
                .arg(ms_ceil(keep_until))
                .arg(session.vnc_port().map_or(0, |_| ms_ceil(session.deadline())));
            for conflict in conflicts {
                script.arg(conflict);
            }
            let script = &script;
            let outcome: String =
                self.run("an insert", |mut con| async move { script.invoke_async(&mut con).await }).await?;
            Ok(match outcome.as_str() {
                "done" => Insert::Done,
                // If the first attempt was stored but its answer lost, the repeat finds the
                // build taken by this very insert: recognised by its (fresh, unique) username.
                "build_id" => match self.read_credential(&id).await? {
                    Some(stored) if stored.username == credential.username => Insert::Done,
                    _ => Insert::Conflict(Conflict::BuildId),
                },
                "username" => Insert::Conflict(Conflict::Username),
                "key" => Insert::Conflict(Conflict::Key),
                "password" => Insert::Conflict(Conflict::Password),
                "vnc_port" => Insert::Conflict(Conflict::VncPort),
                _ => return Err(corrupt("insert outcome")),
            })
        })
    }

    fn session<'a>(&'a self, build_id: &'a BuildId) -> StoreFuture<'a, Option<Versioned<Session>>> {
        Box::pin(async move {
            let key = &self.keys.session(build_id);
            let (version, session): (Option<u64>, Option<Vec<u8>>) = self
                .run("a session read", |mut con| async move { con.hmget(key, &["v", "s"]).await })
                .await?;
            let (Some(version), Some(session)) = (version, session) else { return Ok(None) };
            let value: Session = parse(&session, "session")?;
            if value.build_id() != build_id {
                return Err(corrupt("session"));
            }
            Ok(Some(Versioned { value, version }))
        })
    }

    fn replace_session(
        &self,
        session: Session,
        version: u64,
        revocation: Option<Revocation>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            if !session.is_ended() {
                return self.write_session(&self.connection, session, version, revocation).await;
            }
            // An end: first know whether there are replicas to wait for...
            if self.replicas_seen.load(std::sync::atomic::Ordering::Relaxed) == u32::MAX {
                let _ = self.replication().await;
            }
            // ...then write it on its own connection and have the replicas confirm it. An end
            // whose write failed may have landed all the same (the authority checks): kept too.
            let (build_id, end) = (session.build_id().clone(), (session.clone(), revocation.clone()));
            let keep = |why: &dyn std::fmt::Display| {
                tracing::warn!(%build_id, %why, "a session's end is not confirmed by the Redis replicas; kept, and logins refused until it is");
                self.unconfirmed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(build_id.clone(), end.clone());
            };
            let replaced = match self.write_session(&self.ends, session, version, revocation).await {
                Ok(replaced) => replaced,
                Err(err) => {
                    keep(&err);
                    return Err(err);
                }
            };
            if replaced {
                match self.settle_end(&build_id, &end.0, &end.1).await {
                    Ok(true) => {}
                    Ok(false) => keep(&"the replicas did not confirm it in time"),
                    Err(err) => keep(&err),
                }
            }
            Ok(replaced)
        })
    }

    fn credential_for_user<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<CredentialRecord>> {
        Box::pin(async move {
            let Some(build_id) = self.index(self.keys.user(username)).await? else { return Ok(None) };
            self.read_credential(&build_id).await
        })
    }

    fn credential_for_build<'a>(
        &'a self,
        build_id: &'a BuildId,
    ) -> StoreFuture<'a, Option<CredentialRecord>> {
        Box::pin(self.read_credential(build_id))
    }

    fn session_for_vnc_port(&self, port: u16) -> StoreFuture<'_, Option<BuildId>> {
        Box::pin(self.index(self.keys.vnc_port(port)))
    }

    fn due_sessions(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>> {
        Box::pin(async move {
            let mut script = DUE.prepare_invoke();
            script.key(self.keys.deadlines()).arg(ms_floor(now)).arg(self.keys.session_prefix()).arg(BATCH);
            let script = &script;
            let due: Vec<String> = self
                .run("the due sessions", |mut con| async move { script.invoke_async(&mut con).await })
                .await?;
            due.into_iter().map(|id| BuildId::new(id).map_err(|_| corrupt("deadline index"))).collect()
        })
    }

    fn next_deadline(&self) -> StoreFuture<'_, Option<OffsetDateTime>> {
        Box::pin(async move {
            let key = &self.keys.deadlines();
            let first: Vec<(String, f64)> = self
                .run("the next deadline", |mut con| async move { con.zrange_withscores(key, 0, 0).await })
                .await?;
            Ok(first.first().and_then(|(_, ms)| from_ms(*ms as i64)))
        })
    }

    fn purge(&self, ended_before: OffsetDateTime) -> StoreFuture<'_, Vec<BuildId>> {
        Box::pin(async move {
            let mut script = PURGE.prepare_invoke();
            script
                .key(self.keys.ended())
                .key(self.keys.deadlines())
                .key(self.keys.certified())
                .arg(ms_floor(ended_before))
                .arg(format!("{}:", self.keys.prefix))
                .arg(BATCH);
            let script = &script;
            let purged: Vec<String> =
                self.run("a purge", |mut con| async move { script.invoke_async(&mut con).await }).await?;
            purged.into_iter().map(|id| BuildId::new(id).map_err(|_| corrupt("ended index"))).collect()
        })
    }

    fn revoked_fingerprints(&self, now: OffsetDateTime) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let key = &self.keys.certified();
            let now = ms_floor(now);
            let (ended,): (Vec<String>,) = self
                .run("the revoked keys", |mut con| async move {
                    // What has passed its latest end is dropped on the way.
                    redis::pipe()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(key)
                        .arg("-inf")
                        .arg(now)
                        .ignore()
                        .cmd("ZRANGEBYSCORE")
                        .arg(key)
                        .arg(format!("({now}"))
                        .arg("+inf")
                        .query_async(&mut con)
                        .await
                })
                .await?;
            Ok(ended)
        })
    }

    fn live_sessions(&self) -> StoreFuture<'_, Vec<BuildId>> {
        Box::pin(async move {
            let key = &self.keys.deadlines();
            let live: Vec<String> =
                self.run("the live sessions", |mut con| async move { con.zrange(key, 0, -1).await }).await?;
            live.into_iter().map(|id| BuildId::new(id).map_err(|_| corrupt("deadline index"))).collect()
        })
    }

    fn heartbeat(&self, instance: u32, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = &self.keys.instances();
            let _: i64 = self
                .run("a heartbeat", |mut con| async move { con.zadd(key, instance, ms_floor(at)).await })
                .await?;
            Ok(())
        })
    }

    fn claim_silent_instances(
        &self,
        before: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<u32>> {
        Box::pin(async move {
            let mut script = CLAIM.prepare_invoke();
            script.key(self.keys.instances()).arg(ms_floor(before)).arg(ms_floor(until));
            let script = &script;
            let claimed: Vec<u32> =
                self.run("claiming silent instances", |mut con| async move {
                    script.invoke_async(&mut con).await
                })
                .await?;
            Ok(claimed)
        })
    }

    fn forget_instance(&self, instance: u32, until: OffsetDateTime) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut script = FORGET.prepare_invoke();
            script.key(self.keys.instances()).arg(instance).arg(ms_floor(until));
            let script = &script;
            let _: i64 = self
                .run("forgetting an instance", |mut con| async move { script.invoke_async(&mut con).await })
                .await?;
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: String = self
                .run("a ping", |mut con| async move { redis::cmd("PING").query_async(&mut con).await })
                .await?;
            // The replicas first (what they have seen sets the default of `min_replicas`),
            // then the ends they have not confirmed, written again where the primary lacks
            // them: logins wait for both.
            let in_sync = self.replication().await?;
            let unconfirmed = self.settle_pending().await?;
            let required = self.min_replicas();
            if unconfirmed > 0 {
                return Err(Error::StoreUnavailable {
                    message: format!(
                        "{unconfirmed} session ends written here are not confirmed by {required} Redis replicas: a \
                         failover now could undo them, so logins are refused until they are (fail closed)"
                    ),
                    source: None,
                });
            }
            if in_sync < required {
                return Err(Error::StoreUnavailable {
                    message: format!(
                        "{in_sync} of the {required} Redis replicas required are in sync with the primary: a \
                         session's end written now could be undone by a failover, so logins are refused until \
                         they are (fail closed)"
                    ),
                    source: None,
                });
            }
            Ok(())
        })
    }

    fn add_failure<'a>(&'a self, key: &'a str, tag: Option<&'a str>) -> StoreFuture<'a, u32> {
        Box::pin(async move {
            let mut script = ADD_FAILURE.prepare_invoke();
            let memory = u64::try_from(FAILURE_MEMORY.as_millis()).unwrap_or(u64::MAX);
            script.key(self.keys.failures(key)).arg(memory).arg(tag.unwrap_or("")).arg(MAX_FAILURE_TAGS);
            let script = &script;
            // Repeated after a reconnection like every call: a failure may then count twice,
            // which errs towards the backoff.
            let count: i64 = self
                .run("counting a failed login", |mut con| async move { script.invoke_async(&mut con).await })
                .await?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
    }

    fn failures<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Failures>> {
        Box::pin(async move {
            let mut script = FAILURES.prepare_invoke();
            script.key(self.keys.failures(key));
            let script = &script;
            let run: Option<(i64, i64)> = self
                .run("reading failed logins", |mut con| async move { script.invoke_async(&mut con).await })
                .await?;
            Ok(run.and_then(failures))
        })
    }

    fn take_back_failures<'a>(
        &'a self,
        key: &'a str,
        tag: Option<&'a str>,
    ) -> StoreFuture<'a, Option<Failures>> {
        Box::pin(async move {
            let mut script = TAKE_BACK_FAILURES.prepare_invoke();
            script.key(self.keys.failures(key)).arg(tag.unwrap_or(""));
            let script = &script;
            let run: Option<(i64, i64)> =
                self.run("taking back failed logins", |mut con| async move {
                    script.invoke_async(&mut con).await
                })
                .await?;
            Ok(run.and_then(failures))
        })
    }

    fn append_events<'a>(&'a self, events: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let key = &self.keys.events();
            let _: () = self
                .run("appending events", |mut con| async move {
                    let mut pipe = redis::pipe();
                    for event in events {
                        pipe.cmd("XADD")
                            .arg(key)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(EVENT_LOG_LEN)
                            .arg("*")
                            .arg("e")
                            .arg(event)
                            .ignore();
                    }
                    pipe.query_async(&mut con).await
                })
                .await?;
            Ok(())
        })
    }

    fn last_event_id(&self) -> StoreFuture<'_, String> {
        Box::pin(async move {
            let key = &self.keys.events();
            let last: Vec<(String, HashMap<String, Vec<u8>>)> = self
                .run("the last event", |mut con| async move {
                    redis::cmd("XREVRANGE")
                        .arg(key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut con)
                        .await
                })
                .await?;
            Ok(last.into_iter().next().map_or_else(|| "0-0".to_owned(), |(id, _)| id))
        })
    }

    fn read_events(
        &self,
        after: String,
        count: usize,
        wait: Duration,
    ) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            if !valid_stream_id(&after) {
                return Err(Error::invalid("event id", "not an id of the event log (MS-N)"));
            }
            // Blocks within the call deadline.
            let block = wait.min(self.options.timeout / 2).as_millis() as u64;
            let (key, after) = (&self.keys.events(), &after);
            type Read = Option<Vec<(String, Vec<(String, HashMap<String, Vec<u8>>)>)>>;
            let read: Read = self
                .run_on(&self.event_reader, "reading events", |mut con| async move {
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(count)
                        .arg("BLOCK")
                        .arg(block.max(1))
                        .arg("STREAMS")
                        .arg(key)
                        .arg(after)
                        .query_async(&mut con)
                        .await
                })
                .await?;
            let mut events = Vec::new();
            for (_, entries) in read.unwrap_or_default() {
                for (id, mut fields) in entries {
                    match fields
                        .remove("e")
                        .filter(|json| json.len() <= MAX_RECORD_LEN)
                        .map(String::from_utf8)
                    {
                        Some(Ok(json)) => events.push((id, json)),
                        _ => tracing::warn!(%id, "skipped a malformed entry of the event log"),
                    }
                }
            }
            Ok(events)
        })
    }

    fn unconfirmed_ends(&self) -> usize {
        self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn watch(&self, notices: mpsc::Sender<Notice>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let channel = self.keys.channel();
            loop {
                match self.follow(&channel, &notices).await {
                    Ok(()) => return, // the authority stopped listening
                    Err(err) => tracing::warn!(%err, "lost the Redis change feed; reconnecting"),
                }
                if notices.is_closed() {
                    return;
                }
                tokio::time::sleep(WATCH_RETRY).await;
            }
        })
    }
}

impl RedisStore {
    /// Subscribes to the channel of ended sessions and forwards what it hears. Returns `Ok`
    /// when `notices` closes, an error when the subscription is lost.
    async fn follow(&self, channel: &str, notices: &mpsc::Sender<Notice>) -> Result<()> {
        let lost = Attempt::into_error;
        let primary = match tokio::time::timeout(self.options.timeout, self.nodes.primary()).await {
            Ok(primary) => primary.map_err(unavailable)?,
            Err(_) => {
                return Err(Error::StoreUnavailable {
                    message: "no Sentinel named the primary".into(),
                    source: None,
                });
            }
        };
        let pubsub = self.call("a subscription", primary.get_async_pubsub()).await.map_err(lost)?;
        let (mut sink, mut messages) = pubsub.split();
        self.call("a subscription", sink.subscribe(channel)).await.map_err(lost)?;
        // Whatever ended while we were not subscribed was not heard: have it checked.
        if notices.send(Notice::Missed).await.is_err() {
            return Ok(());
        }
        // A connection that died silently (no reset, a partition) would never deliver again:
        // a ping through it now and then proves it alive, or the subscription starts over.
        let mut probe = tokio::time::interval(WATCH_PROBE);
        probe.tick().await;
        loop {
            tokio::select! {
                () = notices.closed() => return Ok(()),
                _ = probe.tick() => {
                    self.call("a subscription ping", sink.ping::<redis::Value>()).await.map_err(lost)?;
                }
                message = next(&mut messages) => {
                    let Some(message) = message else {
                        return Err(Error::StoreUnavailable { message: "the subscription closed".into(), source: None });
                    };
                    let payload = message.get_payload_bytes();
                    match std::str::from_utf8(payload).ok().and_then(|id| BuildId::new(id).ok()) {
                        Some(id) => {
                            if notices.send(Notice::Ended(id)).await.is_err() {
                                return Ok(());
                            }
                        }
                        None => tracing::warn!(len = payload.len(), "ignored a malformed message on the Redis channel"),
                    }
                }
            }
        }
    }
}

/// The stream's next item (the one stream method we need, without a stream utility crate).
async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// The key names, in one place.
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, id: &BuildId) -> String {
        format!("{}:session:{id}", self.prefix)
    }
    fn session_prefix(&self) -> String {
        format!("{}:session:", self.prefix)
    }
    fn credential(&self, id: &BuildId) -> String {
        format!("{}:credential:{id}", self.prefix)
    }
    fn user(&self, name: &str) -> String {
        format!("{}:user:{name}", self.prefix)
    }
    fn fingerprint(&self, fingerprint: &str) -> String {
        format!("{}:key:{fingerprint}", self.prefix)
    }
    fn password(&self, digest: &[u8; 32]) -> String {
        format!("{}:password:{}", self.prefix, hex(digest))
    }
    fn vnc_port(&self, port: u16) -> String {
        format!("{}:vnc-port:{port}", self.prefix)
    }
    /// Named by scripts for sessions without VNC; never written.
    fn vnc_port_none(&self) -> String {
        format!("{}:vnc-port:none", self.prefix)
    }
    fn deadlines(&self) -> String {
        format!("{}:deadlines", self.prefix)
    }
    fn ended(&self) -> String {
        format!("{}:ended", self.prefix)
    }
    /// The fleet's event log (a stream, trimmed to about `EVENT_LOG_LEN`).
    fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// Written before each `WAIT`, so that it covers every earlier write on the primary.
    fn barrier(&self) -> String {
        format!("{}:wait-barrier", self.prefix)
    }
    /// A run of failed logins (a hash: `n` the count, `at` the last in Redis's ms, `t:<tag>`
    /// the count per tag), expiring `FAILURE_MEMORY` after the last.
    fn failures(&self, key: &str) -> String {
        format!("{}:failures:{key}", self.prefix)
    }
    /// Key fingerprints of ended builds by their latest possible end (ms), until it passes:
    /// the KRL's list. Purging leaves it alone.
    fn certified(&self) -> String {
        format!("{}:revoked-keys", self.prefix)
    }
    fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }
    /// The channel of ended builds shares the sorted set's name (channels and keys are
    /// separate namespaces in Redis).
    fn channel(&self) -> String {
        self.ended()
    }
}

/// Inserts a build unless a unique value is taken. KEYS: session, credential, deadlines, VNC
/// port, ended, then the unique indexes; ARGV: build id, session, record, next deadline, keep
/// until, VNC port expiry (0: no VNC), then each unique index's conflict name.
static INSERT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'build_id' end
for i = 6, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return ARGV[i + 1] end
end
if ARGV[6] ~= '0' and redis.call('EXISTS', KEYS[4]) == 1 then return 'vnc_port' end
redis.call('HSET', KEYS[1], 'v', '0', 's', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'record', ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
for i = 6, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PXAT', ARGV[5]) end
if ARGV[6] ~= '0' then redis.call('SET', KEYS[4], ARGV[1], 'PXAT', ARGV[6]) end
if ARGV[4] ~= '0' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
-- An earlier build of this id that expired away but is not purged yet must not have its
-- purge take this one's keys.
redis.call('ZREM', KEYS[5], ARGV[1])
return 'done'
",
    )
});

/// Compare-and-swap of a session, with its indexes, its tombstone and its announcement; an
/// end also lists the build's key fingerprint for the KRL until its latest possible end.
/// KEYS: session, credential, deadlines, ended, VNC port, revoked keys; ARGV: expected version,
/// session, build id, next deadline (0: none), ended at (0: live), revocation ('' : none),
/// channel, the write's token (random, so that its own repeat is told from another's write),
/// and the latest possible end (ms).
static REPLACE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  -- A repeat of a write that landed with its answer lost finds its own token: done.
  if redis.call('HGET', KEYS[1], 'w') == ARGV[8] then return 1 end
  return 0
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 's', ARGV[2], 'w', ARGV[8])
if ARGV[4] ~= '0' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) else redis.call('ZREM', KEYS[3], ARGV[3]) end
if ARGV[5] ~= '0' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
  local raw = redis.call('HGET', KEYS[2], 'record')
  if raw then
    local ok, record = pcall(cjson.decode, raw)
    if ok and type(record) == 'table' and type(record['key_fingerprint']) == 'string' then
      redis.call('ZADD', KEYS[6], ARGV[9], record['key_fingerprint'])
    end
  end
  if redis.call('GET', KEYS[5]) == ARGV[3] then redis.call('DEL', KEYS[5]) end
end
if ARGV[6] ~= '' then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSETNX', KEYS[2], 'revoked', ARGV[6]) end
  redis.call('PUBLISH', ARGV[7], ARGV[3])
end
return 1
",
    )
});

/// Live builds whose deadline is at or before ARGV[1]; members whose session expired away are
/// dropped from the index. ARGV: now, session key prefix, batch size.
static DUE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local due = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[2] .. id) == 1 then table.insert(due, id) else redis.call('ZREM', KEYS[1], id) end
end
return due
",
    )
});

/// Deletes builds that ended before ARGV[1], with their indexes (each only if it still names
/// the build), and the KRL's keys whose build's latest end is before it. KEYS: ended,
/// deadlines, revoked keys; ARGV: cutoff, key prefix, batch size.
static PURGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local p = ARGV[2]
local function drop_index(key, id)
  if redis.call('GET', key) == id then redis.call('DEL', key) end
end
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', p .. 'credential:' .. id, 'record')
  if raw then
    local ok, record = pcall(cjson.decode, raw)
    if ok and type(record) == 'table' then
      for _, field in ipairs({'username', 'agent_username'}) do
        if type(record[field]) == 'string' then drop_index(p .. 'user:' .. record[field], id) end
      end
      for _, field in ipairs({'key_fingerprint', 'agent_key_fingerprint'}) do
        if type(record[field]) == 'string' then drop_index(p .. 'key:' .. record[field], id) end
      end
      if type(record['password_digest']) == 'string' then drop_index(p .. 'password:' .. record['password_digest'], id) end
    end
  end
  redis.call('DEL', p .. 'session:' .. id, p .. 'credential:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
-- The KRL's list keeps a key until its build's latest end, whatever is purged: only keys
-- whose latest end is before the cutoff (so long past) go here.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
return ids
",
    )
});

/// Claims the instances whose heartbeat is older than ARGV[1] until ARGV[2] (their score
/// becomes the claim's end, so that one caller gets each) and returns them.
static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local silent = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, id in ipairs(silent) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return silent
",
    )
});

/// Removes instance ARGV[1] if its score is still the claim's end ARGV[2] (no heartbeat since).
static FORGET: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
",
    )
});

/// Tags (what failed logins tried) kept per run of failures, as the in-memory store keeps.
const MAX_FAILURE_TAGS: usize = 4;

/// Returns the run in KEYS[1] as {count, ms since its last failure}, by Redis's clock (every
/// gateway's clock would do only if they agreed), or nil. The end of the scripts below.
const READ_FAILURES: &str = r"
local run = redis.call('HMGET', KEYS[1], 'n', 'at')
if not run[1] then return false end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {tonumber(run[1]), math.max(0, ms - tonumber(run[2] or ms))}
";

/// Adds a failure to the run in KEYS[1] (expiring ARGV[1] ms after it), against tag ARGV[2]
/// unless empty (a new tag only while fewer than ARGV[3] are kept); returns the count.
static ADD_FAILURE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local count = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'at', string.format('%.0f', ms))
if ARGV[2] ~= '' then
  local field = 't:' .. ARGV[2]
  if redis.call('HEXISTS', KEYS[1], field) == 1 or redis.call('HLEN', KEYS[1]) < 2 + tonumber(ARGV[3]) then
    redis.call('HINCRBY', KEYS[1], field, 1)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return count
",
    )
});

/// Reads the run in KEYS[1].
static FAILURES: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(READ_FAILURES));

/// Takes back from the run in KEYS[1] the failures against tag ARGV[1], or the whole run when
/// it is empty; returns what is left.
static TAKE_BACK_FAILURES: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
  return false
end
local field = 't:' .. ARGV[1]
local taken = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if taken > 0 then
  redis.call('HDEL', KEYS[1], field)
  if redis.call('HINCRBY', KEYS[1], 'n', -taken) <= 0 then
    redis.call('DEL', KEYS[1])
    return false
  end
end
{READ_FAILURES}"
    ))
});

/// A run as the scripts return it; `None` for one that makes no sense (count 0).
fn failures((count, ago_ms): (i64, i64)) -> Option<Failures> {
    let count = u32::try_from(count).ok().filter(|count| *count > 0)?;
    Some(Failures::new(count, Duration::from_millis(u64::try_from(ago_ms).unwrap_or(0))))
}

/// A credential record as stored: the password digest in hex; the secrets are zeroized on drop.
///
/// The passwords come last: Redis's SLOWLOG keeps the first 128 bytes of each argument of a
/// slow call, and the fields before them (a fingerprint and a 64-digit digest) are longer.
#[derive(Serialize, Deserialize)]
struct StoredCredential {
    username: String,
    key_fingerprint: String,
    password_digest: String,
    agent_username: Option<String>,
    agent_key_fingerprint: Option<String>,
    builder_vnc_username: Option<String>,
    vnc_password: String,
    builder_vnc_password: Option<String>,
}

impl Drop for StoredCredential {
    fn drop(&mut self) {
        self.vnc_password.zeroize();
        self.builder_vnc_password.zeroize();
    }
}

impl StoredCredential {
    fn from_record(record: &CredentialRecord) -> Self {
        Self {
            username: record.username.clone(),
            key_fingerprint: record.key_fingerprint.clone(),
            vnc_password: record.vnc_password.expose().clone(),
            password_digest: hex(&record.password_digest),
            agent_username: record.agent_username.clone(),
            agent_key_fingerprint: record.agent_key_fingerprint.clone(),
            builder_vnc_password: record.builder_vnc_password.as_ref().map(|p| p.expose().clone()),
            builder_vnc_username: record.builder_vnc_username.clone(),
        }
    }

    fn into_record(mut self, build_id: &BuildId, revoked: Option<Revocation>) -> Result<CredentialRecord> {
        let mut password_digest = [0; 32];
        if self.password_digest.len() != 64 {
            return Err(corrupt("credential"));
        }
        for (byte, pair) in password_digest.iter_mut().zip(self.password_digest.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| corrupt("credential"))?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| corrupt("credential"))?;
        }
        Ok(CredentialRecord {
            build_id: build_id.clone(),
            username: std::mem::take(&mut self.username),
            key_fingerprint: std::mem::take(&mut self.key_fingerprint),
            vnc_password: Secret::new(std::mem::take(&mut self.vnc_password)),
            password_digest,
            agent_username: self.agent_username.take(),
            agent_key_fingerprint: self.agent_key_fingerprint.take(),
            builder_vnc_password: self.builder_vnc_password.take().map(Secret::new),
            builder_vnc_username: self.builder_vnc_username.take(),
            revoked,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRevocation {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    reason: String,
}

impl From<&Revocation> for StoredRevocation {
    fn from(r: &Revocation) -> Self {
        Self { at: r.at, reason: r.reason.clone() }
    }
}

impl From<StoredRevocation> for Revocation {
    fn from(r: StoredRevocation) -> Self {
        Self { at: r.at, reason: r.reason }
    }
}

/// A credential record as stored, without its revocation (kept apart, written once).
pub(crate) fn encode_credential(credential: &CredentialRecord) -> Result<Zeroizing<Vec<u8>>> {
    let record = StoredCredential::from_record(credential);
    // Sized up front so that the buffer holding the passwords is never reallocated (and a
    // stale copy left behind); zeroized when dropped.
    let mut json = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *json, &record).map_err(|_| corrupt("credential"))?;
    Ok(json)
}

/// A credential record and its revocation as Redis returned them.
pub(crate) fn decode_credential(
    build_id: &BuildId,
    record: &[u8],
    revoked: Option<&[u8]>,
) -> Result<CredentialRecord> {
    let stored: StoredCredential = parse(record, "credential")?;
    let revoked = revoked.map(|r| parse::<StoredRevocation>(r, "revocation")).transpose()?;
    stored.into_record(build_id, revoked.map(Revocation::from))
}

/// A revocation as stored.
pub(crate) fn encode_revocation(revocation: &Revocation) -> Result<String> {
    serde_json::to_string(&StoredRevocation::from(revocation)).map_err(|_| corrupt("revocation"))
}

/// Parses what Redis returned, within a size limit.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() > MAX_RECORD_LEN {
        return Err(corrupt(what));
    }
    serde_json::from_slice(bytes).map_err(|_| corrupt(what))
}

/// A record that does not parse: someone else wrote under our prefix, or a different version.
fn corrupt(what: &str) -> Error {
    Error::StoreUnavailable {
        message: format!(
            "Redis holds a {what} this version cannot read (another program writing under the key prefix?)"
        ),
        source: None,
    }
}

/// Whether a failed call is made once more: the connection dropped or failed (a restart, a
/// failover), or it reached a replica (`READONLY`: the primary moved).
fn retried(err: &redis::RedisError) -> bool {
    (err.is_connection_dropped() || err.is_io_error() || err.code() == Some("READONLY")) && !err.is_timeout()
}

/// A failed attempt, which [`RedisStore::run`] may repeat once.
enum Attempt {
    /// Redis answered with an error, or the connection failed.
    Failed(redis::RedisError),
    /// No answer within the deadline.
    TimedOut(String),
}

impl Attempt {
    fn into_error(self) -> Error {
        match self {
            Self::Failed(err) => unavailable(err),
            Self::TimedOut(message) => Error::StoreUnavailable { message, source: None },
        }
    }
}

fn unavailable(err: redis::RedisError) -> Error {
    Error::StoreUnavailable { message: format!("Redis: {err}"), source: Some(Box::new(err)) }
}

/// A stream id as Redis gives them out: `MS-N`, both parts decimal.
fn valid_stream_id(id: &str) -> bool {
    id.len() <= 41
        && id.split_once('-').is_some_and(|(ms, n)| {
            [ms, n].iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ms_floor(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos().div_euclid(1_000_000)) as i64
}

/// Deadlines round up, so that "due at or before now" never fires early.
fn ms_ceil(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() + 999_999).div_euclid(1_000_000) as i64
}

fn from_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}
