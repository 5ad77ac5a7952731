//! The fleet's Redis, as every store-backed command reaches it, and the authority on it.

use std::time::Duration;

use remote_access_core::{Authority, AuthorityOptions, RedisOptions, Secret, StoreOptions};

use crate::Failure;
use crate::args::{Args, Usage};

/// The options every store-backed command takes (`Spec::store`).
pub(crate) const VALUES: [&str; 6] =
    ["redis", "key-prefix", "redis-ca", "redis-cert", "redis-key", "redis-min-replicas"];

/// Their usage lines.
pub(crate) const USAGE: &str = "  --redis URL          the fleet's Redis (redis://HOST:PORT/DB, rediss:// for TLS, or\n\
     \x20                      redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER/DB); a URL with a password goes in\n\
     \x20                      REMOTE_ACCESS_REDIS_URL instead, since every user of the machine can\n\
     \x20                      read a command line\n\
     \x20 --key-prefix PREFIX  the fleet's key prefix in Redis (default remote-access)\n\
     \x20 --redis-ca FILE      for rediss://: the CA certificates (PEM) that sign Redis's certificate,\n\
     \x20                      instead of the system's roots\n\
     \x20 --redis-cert FILE    for rediss:// with client certificates: this client's chain (PEM),\n\
     \x20 --redis-key FILE     and its private key (PEM; the file should be private)\n\
     \x20 --redis-min-replicas N  replicas that must confirm each revocation and be in sync for\n\
     \x20                      logins to go on (default: 1 once a replica has been seen, else 0)\n";

/// The Redis options from `--redis` (or `REMOTE_ACCESS_REDIS_URL`) and `--key-prefix`.
pub(crate) fn redis(args: &Args) -> Result<RedisOptions, Failure> {
    let url = match args.value("redis") {
        Some(url) if url.contains('@') => {
            return Err(Usage(
                "a Redis URL with credentials on the command line is visible to every user of this \
                 machine; set REMOTE_ACCESS_REDIS_URL instead"
                    .into(),
            )
            .into());
        }
        Some(url) => url.to_owned(),
        None => std::env::var("REMOTE_ACCESS_REDIS_URL")
            .map_err(|_| Usage("--redis URL (or REMOTE_ACCESS_REDIS_URL) is required".into()))?,
    };
    let mut options = RedisOptions::new(url);
    if let Some(prefix) = args.value("key-prefix") {
        options.key_prefix = prefix.to_owned();
    }
    let read = |name: &str| {
        args.value(name)
            .map(|path| {
                std::fs::read_to_string(path)
                    .map_err(|err| Failure::Other(format!("cannot read --{name} {path}: {err}")))
            })
            .transpose()
    };
    options.tls_ca_pem = read("redis-ca")?;
    options.tls_client = match (read("redis-cert")?, read("redis-key")?) {
        (Some(chain), Some(key)) => Some((chain, Secret::new(key))),
        (None, None) => None,
        _ => return Err(Usage("--redis-cert and --redis-key go together".into()).into()),
    };
    options.min_replicas = args.parsed::<u32>("redis-min-replicas", "a number of replicas")?;
    Ok(options)
}

/// The SSH CA key in the file `--NAME` names (an OpenSSH private key), if given.
pub(crate) fn ca(args: &Args, name: &str) -> Result<Option<remote_access_core::SshCa>, Failure> {
    let Some(path) = args.value(name) else { return Ok(None) };
    let text = Secret::new(
        std::fs::read_to_string(path)
            .map_err(|err| Failure::Other(format!("cannot read --{name} {path}: {err}")))?,
    );
    Ok(Some(remote_access_core::SshCa::from_openssh(text.expose())?))
}

/// An authority on the fleet's Redis with `options` (its store replaced).
pub(crate) fn authority(args: &Args, mut options: AuthorityOptions) -> Result<Authority, Failure> {
    options.store = StoreOptions::Redis(redis(args)?);
    Ok(Authority::new(options)?)
}

/// Runs `work`, saying on stderr what it waits for when that takes longer than a second
/// (an unreachable Redis is retried for a while before it fails).
pub(crate) async fn waiting<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(Duration::from_secs(1)) => eprintln!("remote-access: waiting for {what}..."),
    }
    work.await
}
