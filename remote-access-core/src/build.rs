//! What the platform tells us about a build when it asks for remote access.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The platform's id for a build: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, not starting
/// with `-` or `.`.
///
/// The id ends up in `authorized_keys` comments, scripts and events, so it is checked once, here,
/// and is inert everywhere after.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(String);

impl TryFrom<String> for BuildId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        Self::new(id)
    }
}

impl From<BuildId> for String {
    fn from(id: BuildId) -> String {
        id.0
    }
}

impl BuildId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 128;

    /// Checks and wraps a build id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let problem = if id.is_empty() {
            Some("it is empty".to_string())
        } else if id.len() > Self::MAX_LEN {
            Some(format!("it is {} bytes long; the limit is {}", id.len(), Self::MAX_LEN))
        } else if id.starts_with(['-', '.']) {
            Some("it must not start with '-' or '.'".to_string())
        } else {
            id.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .map(|c| format!("character {c:?} is not allowed; use A-Z a-z 0-9 . _ -"))
        };
        match problem {
            Some(problem) => Err(Error::invalid("build id", problem)),
            None => Ok(Self(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BuildId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// How a build was started. Only [`Trigger::Manual`] builds may get remote access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// A person started the build by hand.
    Manual,
    /// A push, pull request, tag or other webhook started it.
    Webhook,
    /// A schedule started it.
    Scheduled,
    /// An API call or another pipeline started it.
    Api,
}

impl Trigger {
    /// `manual`, `webhook`, `scheduled` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Webhook => "webhook",
            Self::Scheduled => "scheduled",
            Self::Api => "api",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = Error;
    /// The names of [`Trigger::as_str`].
    fn from_str(s: &str) -> Result<Self> {
        [Self::Manual, Self::Webhook, Self::Scheduled, Self::Api]
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| Error::invalid("trigger", "expected manual, webhook, scheduled or api"))
    }
}

/// The builder machine of a build, as the gateway reaches it.
///
/// Users may reach exactly this address, on `ssh_port` and `extra_ports`, and nothing else.
///
/// ```
/// use remote_access_core::Builder;
/// let builder = Builder::new("10.0.3.7".parse().unwrap());
/// assert_eq!((builder.ssh_port, builder.user.as_str()), (22, "builder"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Builder {
    /// The builder's private address. An address, not a name: resolving names at connect time
    /// would let DNS decide where users go.
    pub address: IpAddr,
    /// Its sshd port (default 22).
    pub ssh_port: u16,
    /// Further ports users may reach through the gateway (none by default).
    pub extra_ports: Vec<u16>,
    /// The builder's VNC server port, if users get VNC (none by default). The gateway gives the
    /// user a port of its own and logs in here with the builder's password.
    pub vnc_port: Option<u16>,
    /// The account users log in to on the builder (default `builder`).
    pub user: String,
    /// The builder is reached only through its agent's reverse tunnel: the gateway never dials
    /// `address` (then only the name users' scripts ask for); users' channels go over the
    /// agent's connection, and the agent connects to its own configured local address and
    /// ports. Issuing then also makes the agent's credential.
    pub reverse_tunnel: bool,
    /// The builder sshd's host key (`ssh-ed25519 AAAA...`), pinned by the connection scripts.
    /// Without it, scripts trust the builder's key on first use.
    pub host_key: Option<String>,
}

impl Builder {
    /// A builder at `address` with the defaults.
    pub fn new(address: IpAddr) -> Self {
        Self {
            address,
            ssh_port: 22,
            extra_ports: Vec::new(),
            vnc_port: None,
            reverse_tunnel: false,
            user: "builder".into(),
            host_key: None,
        }
    }

    /// Whether a user may open a channel to `host:port`: only this builder's address, written
    /// as an IP address in its canonical form, on an allowed port.
    pub(crate) fn allows(&self, host: &str, port: u32) -> bool {
        let port_allowed = u16::try_from(port)
            .is_ok_and(|port| port != 0 && (port == self.ssh_port || self.extra_ports.contains(&port)));
        port_allowed && host.parse::<IpAddr>().is_ok_and(|ip| ip == self.address)
    }

    /// Whether `host:port` is this builder's VNC server, exactly as the session knows it.
    pub(crate) fn is_vnc(&self, host: &str, port: u32) -> bool {
        let port_is_vnc = u16::try_from(port).is_ok_and(|port| self.vnc_port == Some(port));
        port_is_vnc && host.parse::<IpAddr>().is_ok_and(|ip| ip == self.address)
    }

    /// Checks every field and normalizes the host key (its comment, free text, is dropped).
    pub(crate) fn validated(mut self) -> Result<Self> {
        if self.ssh_port == 0 || self.extra_ports.contains(&0) || self.vnc_port == Some(0) {
            return Err(Error::invalid("builder port", "port 0 is not a port"));
        }
        if self.extra_ports.len() > 16 {
            return Err(Error::invalid("builder.extra_ports", "at most 16 ports"));
        }
        check_user("builder.user", &self.user)?;
        if let Some(text) = &self.host_key {
            let mut key = russh::keys::PublicKey::from_openssh(text.trim())
                .map_err(|_| Error::invalid("builder.host_key", "not an OpenSSH public key line"))?;
            key.set_comment("");
            let line = key.to_openssh().map_err(Error::key_material)?;
            self.host_key = Some(line.trim().to_owned());
        }
        Ok(self)
    }
}

/// A login name on the builder: 1-32 of `a-z 0-9 _ -`, starting with a letter or `_`.
pub(crate) fn check_user(what: &'static str, user: &str) -> Result<()> {
    let ok = (1..=32).contains(&user.len())
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(what, "use 1-32 characters of a-z 0-9 _ -, starting with a letter or _"))
    }
}

/// An OpenSSH public key line reduced to `type base64`: the comment, free text, is dropped.
pub(crate) fn normalized_public_key(what: &'static str, text: &str) -> Result<String> {
    let mut key = russh::keys::PublicKey::from_openssh(text.trim())
        .map_err(|_| Error::invalid(what, "not an OpenSSH public key line"))?;
    key.set_comment("");
    Ok(key.to_openssh().map_err(Error::key_material)?.trim().to_owned())
}
