//! Where the Redis primary is: the one server a `redis://` or `rediss://` URL names, or
//! whichever server the Sentinels of a `redis+sentinel://` URL name now, asked again after a
//! failover. Errors never quote the URL: it may carry a password.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisResult};

use super::redis::RedisOptions;
use crate::error::{Error, Result};

/// How the store reaches its primary.
pub(super) enum Nodes {
    /// One server; its connections reconnect to it by themselves.
    Direct(redis::Client),
    /// The primary the Sentinels name: resolved for each new connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Nodes {
    pub(super) fn new(options: &RedisOptions) -> Result<Self> {
        let url = options.url.expose().as_str();
        match url.split_once("://") {
            Some(("redis+sentinel", rest)) => {
                if options.tls_ca_pem.is_some() || options.tls_client.is_some() {
                    return Err(tls_with_sentinel());
                }
                sentinel(rest).map(|client| Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
            Some(("rediss+sentinel", _)) => Err(tls_with_sentinel()),
            _ => direct(options).map(Self::Direct),
        }
    }

    /// Whether the primary can move (a failover): connections are then made afresh after
    /// errors, through the Sentinels.
    pub(super) fn follow_failovers(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// A client for the primary as of now.
    pub(super) async fn primary(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Direct(client) => Ok(client.clone()),
            // The Sentinels name the primary, and the crate checks its ROLE before answering.
            Self::Sentinel(sentinels) => sentinels.lock().await.async_get_client().await,
        }
    }
}

fn tls_with_sentinel() -> Error {
    Error::invalid(
        "redis url",
        "TLS with Sentinel (rediss+sentinel://) is not supported yet: use redis+sentinel:// on a private \
         network, or rediss:// to one primary",
    )
}

/// `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`: the Sentinels'
/// addresses, the name they monitor the primary by, and the database; the credentials are the
/// data nodes' (Sentinels without a password).
fn sentinel(rest: &str) -> Result<SentinelClient> {
    let wrong = || {
        Error::invalid(
            "redis url",
            "a Sentinel URL is redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]",
        )
    };
    let (authority, path) = rest.split_once('/').ok_or_else(wrong)?;
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = host.rsplit_once(':').ok_or_else(wrong)?;
        let port: u16 = port.parse().map_err(|_| wrong())?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() || port == 0 {
            return Err(wrong());
        }
        sentinels.push(ConnectionAddr::Tcp(name.to_owned(), port));
    }
    let mut path = path.split('/');
    let master = path.next().filter(|name| !name.is_empty()).ok_or_else(wrong)?;
    let db = match path.next() {
        None | Some("") => 0,
        Some(db) => i64::from(db.parse::<u32>().map_err(|_| wrong())?),
    };
    if path.next().is_some() {
        return Err(wrong());
    }
    let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
        .map_err(|_| wrong())?
        .set_client_to_redis_db(db);
    if let Some(credentials) = credentials {
        // As in redis:// URLs: `user:password`, `:password`, or a user name alone.
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let decode = |text: &str| {
            percent_decode(text)
                .ok_or_else(|| Error::invalid("redis url", "a malformed %-escape in the credentials"))
        };
        if !user.is_empty() {
            builder = builder.set_client_to_redis_username(decode(user)?);
        }
        if !password.is_empty() {
            builder = builder.set_client_to_redis_password(decode(password)?);
        }
    }
    builder.build().map_err(|_| wrong())
}

/// `%XX` escapes decoded, as in a URL's user information.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The client of a `redis://` or `rediss://` URL: plain, or TLS trusting the system's roots
/// unless a CA is given, with a client certificate when one is given.
fn direct(options: &RedisOptions) -> Result<redis::Client> {
    let url = options.url.expose().as_str();
    let tls = url.starts_with("rediss://");
    let not_url = || {
        Error::invalid(
            "redis url",
            "not a Redis URL (redis://host:port/db, rediss://host:port/db or redis+sentinel://host:port,.../master/db)",
        )
    };
    if !tls && (options.tls_ca_pem.is_some() || options.tls_client.is_some()) {
        return Err(Error::invalid(
            "redis tls",
            "a TLS CA or client certificate is set but the URL is redis://: use rediss:// for TLS",
        ));
    }
    if options.tls_ca_pem.is_none() && options.tls_client.is_none() {
        return redis::Client::open(url).map_err(|_| not_url());
    }
    let certificates = redis::TlsCertificates {
        client_tls: options.tls_client.as_ref().map(|(chain, key)| redis::ClientTlsConfig {
            client_cert: chain.as_bytes().to_vec(),
            client_key: key.expose().as_bytes().to_vec(),
        }),
        root_cert: options.tls_ca_pem.as_ref().map(|ca| ca.as_bytes().to_vec()),
    };
    redis::Client::build_with_tls(url, certificates).map_err(|err| {
        if err.kind() == redis::ErrorKind::InvalidClientConfig {
            not_url()
        } else {
            // The PEM did not parse or hold what rustls needs; redis's message names which.
            Error::invalid("redis tls", format!("the TLS CA or client certificate is unusable: {err}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> RedisOptions {
        RedisOptions::new(url)
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_database() {
        for url in [
            "redis+sentinel://127.0.0.1:26379/m",
            "redis+sentinel://a:26379,b:26380,c:26381/mymaster/3",
            "redis+sentinel://:s%40cret@10.0.0.1:26379/m/0",
            "redis+sentinel://user:pw@[::1]:26379/m",
        ] {
            let nodes = Nodes::new(&options(url)).unwrap_or_else(|err| panic!("{url}: {err}"));
            assert!(nodes.follow_failovers(), "{url}");
        }
        for url in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/m",
            "redis+sentinel://127.0.0.1:0/m",
            "redis+sentinel://127.0.0.1:26379/m/x",
            "redis+sentinel://:%zz@127.0.0.1:26379/m",
            "redis+sentinel://:%+f@127.0.0.1:26379/m",
            "redis+sentinel://127.0.0.1:26379/m/-1",
        ] {
            let err = Nodes::new(&options(url)).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(!err.to_string().contains("127.0.0.1"), "the URL is not quoted: {err}");
        }
        let err = Nodes::new(&options("rediss+sentinel://127.0.0.1:26379/m")).err().unwrap();
        assert!(err.to_string().contains("not supported yet"), "{err}");
        assert!(!Nodes::new(&options("redis://127.0.0.1:6379/0")).unwrap().follow_failovers());
    }
}
