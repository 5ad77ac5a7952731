//! What the user gets: connection info for a web UI, an `ssh_config` block, and scripts for
//! POSIX shells and PowerShell that connect with the pinned gateway key.

mod builder_env;
mod quote;

pub use builder_env::BuildEnvironment;

use std::fmt::Write as _;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::build::{BuildId, check_user, normalized_public_key};
use crate::clock::rfc3339;
use crate::credential::Credentials;
use crate::credential::HostKey;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::session::{Session, human};

/// Names the scripts give the two hops; they are also the `HostKeyAlias`es the pinned keys are
/// filed under, so known_hosts lines do not depend on addresses or ports.
const GATEWAY_ALIAS: &str = "remote-access-gateway";
const BUILDER_ALIAS: &str = "remote-access-builder";
/// The builder with an interactive login shell in the build directory.
const SHELL_ALIAS: &str = "remote-access-shell";
/// The builder running the command given to the PowerShell script (a config entry, because
/// Windows PowerShell mangles quotes in native command arguments).
const COMMAND_ALIAS: &str = "remote-access-command";
/// Ends every here-document; no generated line can equal it.
const HEREDOC_END: &str = "REMOTE_ACCESS_END";

/// Where users reach the gateway, and how the scripts behave; every field but the host has a
/// default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScriptOptions {
    /// The gateway's public host name or address, as users reach it.
    pub gateway_host: String,
    /// The gateway's public port (default 22).
    pub gateway_port: u16,
    /// The directory the login shell starts in: `$NAME` for an environment variable on the
    /// builder (default `$FCI_BUILD_DIR`), or a path (no control characters, and no backslash
    /// before a backslash, a quote or the end: `ssh_config` would read it as an escape).
    pub build_dir: String,
    /// The SHA-256 fingerprint of the gateway's VNC TLS certificate
    /// ([`TlsIdentity::fingerprint`](crate::credential::TlsIdentity::fingerprint) of
    /// `GatewayOptions::vnc_tls`), when it has one (default none): users are told to choose
    /// VeNCrypt, and browsers get a `wss://` URL.
    pub vnc_tls_fingerprint: Option<String>,
    /// The gateway refuses unencrypted VNC on its ports (`GatewayOptions::vnc_require_encryption`;
    /// default false): users are not offered the plain path.
    pub vnc_require_encryption: bool,
    /// The gateway serves VNC over WebSocket (`GatewayOptions::vnc_websocket`; default true):
    /// the connection info carries the URL for noVNC.
    pub vnc_websocket: bool,
    /// The public key of the CA that signs builders' host keys (`AuthorityOptions::host_ca`,
    /// [`SshCa::public_key`](crate::credential::SshCa::public_key)), if builders have host
    /// certificates (default none): the scripts then trust it for the builder's address
    /// (`@cert-authority`) instead of a pinned builder key, or the key on first use.
    pub builder_host_ca: Option<String>,
}

impl ScriptOptions {
    /// Options for a gateway reached at `gateway_host:gateway_port`.
    pub fn new(gateway_host: impl Into<String>, gateway_port: u16) -> Self {
        Self {
            gateway_host: gateway_host.into(),
            gateway_port,
            build_dir: "$FCI_BUILD_DIR".into(),
            vnc_tls_fingerprint: None,
            vnc_require_encryption: false,
            vnc_websocket: true,
            builder_host_ca: None,
        }
    }
}

/// Clients that read `HOST:N` as display N, port 5900 + N, reach only ports from here up.
const VNC_DISPLAY_BASE: u16 = 5900;

/// Everything a client needs to connect, without secrets; serializes to JSON for web UIs.
///
/// ```
/// # use remote_access_core::*;
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let authority = Authority::new(AuthorityOptions::default())?;
/// let mut request = BuildRequest::new(BuildId::new("b-7")?, Trigger::Manual, true);
/// request.builder = Some(Builder::new("10.0.3.7".parse()?));
/// let credentials = authority.issue(request).await?;
/// let session = authority.session(credentials.build_id()).await?;
/// let host_key = HostKey::generate()?;
/// let info = ConnectionInfo::new(&credentials, &session, &host_key, &ScriptOptions::new("gw.example.com", 2222))?;
/// assert!(info.to_json().contains("\"gateway_port\": 2222"));
/// let script = info.posix_script(&credentials)?; // holds the private key: a Secret
/// assert!(script.expose().starts_with("#!/bin/sh"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The build.
    pub build_id: String,
    /// The gateway's public host.
    pub gateway_host: String,
    /// The gateway's public port.
    pub gateway_port: u16,
    /// The username on the gateway.
    pub gateway_user: String,
    /// The gateway's host key, pinned (`ssh-ed25519 AAAA...`).
    pub gateway_host_key: String,
    /// Its `SHA256:` fingerprint, to compare with what `ssh` shows.
    pub gateway_host_key_fingerprint: String,
    /// The builder's private address (reached through the gateway).
    pub builder_host: String,
    /// The builder's sshd port.
    pub builder_port: u16,
    /// The account on the builder.
    pub builder_user: String,
    /// The builder's host key, pinned when known.
    pub builder_host_key: Option<String>,
    /// The CA trusted for the builder's host certificate, when builders have them (then
    /// `builder_host_key` is not pinned).
    pub builder_host_ca: Option<String>,
    /// The user key's `SHA256:` fingerprint.
    pub key_fingerprint: String,
    /// Where the session is: `steps_running`, `steps_completed` or `ended`.
    pub phase: String,
    /// When access ends at the latest as things stand (RFC 3339, UTC): the build's start plus
    /// its maximum duration while the steps run; once they completed, the grace period's end
    /// (or that maximum, if earlier). Refresh the info to follow it
    /// ([`ConnectionInfo::refresh`]), or listen for `deadline_changed` events.
    pub deadline: String,
    /// The latest end whatever happens: the build's start plus its maximum duration (RFC 3339).
    pub max_end: String,
    /// How long access lasts after the steps complete, in seconds.
    pub grace: u64,
    /// How long a lost connection may reconnect after the steps completed, in seconds.
    pub reconnect_window: u64,
    /// When the steps completed (RFC 3339), once they have.
    pub steps_completed_at: Option<String>,
    /// While the user's lost connection may come back: until when (RFC 3339).
    pub reconnect_by: Option<String>,
    /// Why access ended (`logged_out`, `grace_elapsed`, ...), once it has.
    pub end_reason: Option<String>,
    /// The rule in words, with the build's numbers: "until 20 minutes after the build steps
    /// complete, and never after 12:00 UTC", or the actual deadline once the steps completed.
    pub access_rule: String,
    /// The directory the login shell starts in.
    pub build_dir: String,
    /// Where a VNC client connects (the gateway host), if the session has VNC.
    pub vnc_host: Option<String>,
    /// The gateway's VNC port for this session, if it has VNC. The password is
    /// `Credentials::vnc_password` (see [`ConnectionInfo::vnc_instructions`]).
    pub vnc_port: Option<u16>,
    /// The builder's VNC port, if the session has VNC: reached encrypted inside the SSH tunnel,
    /// `ssh -L 5901:<builder_host>:<builder_vnc_port> remote-access-gateway` (the scripts' `--vnc`),
    /// with the same password. Set even when the session has no gateway VNC port.
    pub builder_vnc_port: Option<u16>,
    /// The SHA-256 fingerprint (`AB:CD:...`) of the certificate the gateway's VNC port presents
    /// to VeNCrypt and `wss://`, if it has one.
    pub vnc_tls_fingerprint: Option<String>,
    /// The gateway's VNC port refuses unencrypted VNC (plain VNC Authentication, `ws://`).
    pub vnc_require_encryption: bool,
    /// Where noVNC connects, `wss://HOST:PORT/websockify` (`ws://` without a certificate), if
    /// the session has a gateway VNC port and the gateway serves WebSocket.
    pub vnc_websocket_url: Option<String>,
}

impl ConnectionInfo {
    /// Collects and checks the connection details of an issued build.
    pub fn new(
        credentials: &Credentials,
        session: &Session,
        gateway_host_key: &HostKey,
        options: &ScriptOptions,
    ) -> Result<Self> {
        if session.build_id() != credentials.build_id() {
            return Err(Error::invalid("session", "belongs to another build than the credentials"));
        }
        Self::from_parts(
            credentials.username(),
            credentials.fingerprint(),
            session,
            gateway_host_key,
            options,
        )
    }

    /// [`ConnectionInfo::new`] from the parts the credentials give: what an authority keeps
    /// after issuing (the username and key fingerprint, never the private key).
    pub(crate) fn from_parts(
        username: &str,
        fingerprint: &str,
        session: &Session,
        gateway_host_key: &HostKey,
        options: &ScriptOptions,
    ) -> Result<Self> {
        quote::check_host("gateway_host", &options.gateway_host)?;
        if options.gateway_port == 0 {
            return Err(Error::invalid("gateway_port", "port 0 is not a port"));
        }
        quote::check_build_dir(&options.build_dir)?;
        let builder = session.builder().ok_or_else(|| {
            Error::invalid("builder", "the build has no builder address; set BuildRequest::builder")
        })?;
        let mut info = Self {
            build_id: session.build_id().to_string(),
            gateway_host: options.gateway_host.clone(),
            gateway_port: options.gateway_port,
            gateway_user: username.to_owned(),
            gateway_host_key: gateway_host_key.public_key(),
            gateway_host_key_fingerprint: gateway_host_key.fingerprint(),
            builder_host: builder.address.to_string(),
            builder_port: builder.ssh_port,
            builder_user: builder.user.clone(),
            builder_host_key: builder.host_key.clone(),
            builder_host_ca: options.builder_host_ca.clone(),
            key_fingerprint: fingerprint.to_owned(),
            phase: String::new(),
            deadline: String::new(),
            max_end: String::new(),
            grace: 0,
            reconnect_window: 0,
            steps_completed_at: None,
            reconnect_by: None,
            end_reason: None,
            access_rule: String::new(),
            build_dir: options.build_dir.clone(),
            vnc_host: session.vnc_port().map(|_| options.gateway_host.clone()),
            vnc_port: session.vnc_port(),
            builder_vnc_port: builder.vnc_port,
            vnc_tls_fingerprint: options.vnc_tls_fingerprint.clone(),
            vnc_require_encryption: options.vnc_require_encryption,
            vnc_websocket_url: session.vnc_port().filter(|_| options.vnc_websocket).map(|port| {
                websocket_url(&options.gateway_host, port, options.vnc_tls_fingerprint.is_some())
            }),
        };
        info.refresh(session)?;
        Ok(info)
    }

    /// Brings the time fields up to date with the build's session as it is now (read it with
    /// `Authority::session`): the phase, the deadline once the steps completed, a reconnect
    /// window, the end. `Authority::connection_info` builds a fresh one in one call.
    pub fn refresh(&mut self, session: &Session) -> Result<()> {
        if session.build_id().as_str() != self.build_id {
            return Err(Error::invalid("session", "belongs to another build than this connection info"));
        }
        let policy = session.policy();
        self.phase = session.phase().as_str().to_owned();
        self.deadline = rfc3339(session.deadline());
        self.max_end = rfc3339(session.max_end());
        self.grace = policy.grace.as_secs();
        self.reconnect_window = policy.reconnect_window.as_secs();
        self.steps_completed_at = session.steps_completed_at().map(rfc3339);
        self.reconnect_by = session.reconnect_by().map(rfc3339);
        self.end_reason = session.end().map(|(reason, _)| reason.code().to_owned());
        self.access_rule = session.access_rule();
        self.check()
    }

    /// The info as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field that ends up in generated text. The fields are public (for JSON and
    /// the bindings) and a session may come from any store, so each generator checks again
    /// rather than trusting where the values came from.
    fn check(&self) -> Result<()> {
        BuildId::new(self.build_id.as_str())?;
        quote::check_host("gateway_host", &self.gateway_host)?;
        let user_ok = (1..=64).contains(&self.gateway_user.len())
            && self
                .gateway_user
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !user_ok {
            return Err(Error::invalid("gateway_user", "not a generated gateway username"));
        }
        if normalized_public_key("gateway_host_key", &self.gateway_host_key)? != self.gateway_host_key {
            return Err(Error::invalid("gateway_host_key", "must be exactly `type base64`"));
        }
        self.builder_host
            .parse::<std::net::IpAddr>()
            .map_err(|_| Error::invalid("builder_host", "not an IP address"))?;
        check_user("builder_user", &self.builder_user)?;
        if let Some(key) = &self.builder_host_key
            && normalized_public_key("builder_host_key", key)? != *key
        {
            return Err(Error::invalid("builder_host_key", "must be exactly `type base64`"));
        }
        if let Some(key) = &self.builder_host_ca
            && normalized_public_key("builder_host_ca", key)? != *key
        {
            return Err(Error::invalid("builder_host_ca", "must be exactly `type base64`"));
        }
        let fingerprint_ok = self.key_fingerprint.strip_prefix("SHA256:").is_some_and(|b64| {
            b64.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        });
        if !fingerprint_ok {
            return Err(Error::invalid("key_fingerprint", "not a SHA256: fingerprint"));
        }
        for (what, at) in [("deadline", &self.deadline), ("max_end", &self.max_end)] {
            time::OffsetDateTime::parse(at, &Rfc3339)
                .map_err(|_| Error::invalid(what, "not an RFC 3339 time"))?;
        }
        if self.access_rule.len() > 512 || self.access_rule.chars().any(char::is_control) {
            return Err(Error::invalid("access_rule", "at most 512 bytes, no control characters"));
        }
        quote::check_build_dir(&self.build_dir)?;
        if let Some(host) = &self.vnc_host {
            quote::check_host("vnc_host", host)?;
        }
        if let Some(fingerprint) = &self.vnc_tls_fingerprint {
            let pairs: Vec<&str> = fingerprint.split(':').collect();
            let hex = |pair: &&str| pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit());
            if pairs.len() != 32 || !pairs.iter().all(hex) {
                return Err(Error::invalid(
                    "vnc_tls_fingerprint",
                    "not a SHA-256 fingerprint (AB:CD:... 32 bytes)",
                ));
            }
        }
        if self.vnc_require_encryption && self.vnc_tls_fingerprint.is_none() {
            return Err(Error::invalid(
                "vnc_require_encryption",
                "needs vnc_tls_fingerprint: without a certificate the VNC port has no encrypted path",
            ));
        }
        if let Some(url) = &self.vnc_websocket_url {
            let (Some(host), Some(port)) = (&self.vnc_host, self.vnc_port) else {
                return Err(Error::invalid("vnc_websocket_url", "set without a VNC port"));
            };
            if *url != websocket_url(host, port, self.vnc_tls_fingerprint.is_some()) {
                return Err(Error::invalid(
                    "vnc_websocket_url",
                    "not the gateway's VNC WebSocket URL (wss:// exactly when there is a certificate)",
                ));
            }
        }
        Ok(())
    }

    /// What to enter in a VNC client, password included (so it is a [`Secret`]); `None` if the
    /// session has no VNC. Hand it to the user next to the scripts. Each way in is on a line
    /// of its own, its address first: `HOST::PORT` (two colons: a port, understood by
    /// TigerVNC, vncdotool, vncsnapshot, Remmina and RealVNC), the display form `HOST:N` (port
    /// 5900 + N, for gtk-vnc and other clients that read one colon as a display number) when
    /// the port is 5900 or above, the `wss://` URL for noVNC, and the SSH tunnel of the
    /// scripts' `--vnc`.
    pub fn vnc_instructions(&self, credentials: &Credentials) -> Result<Option<Secret<String>>> {
        self.check()?;
        if credentials.build_id().as_str() != self.build_id {
            return Err(Error::invalid("credentials", "belong to another build than this connection info"));
        }
        if self.vnc_port.is_none() && self.builder_vnc_port.is_none() {
            return Ok(None);
        }
        // The ways in first, then one allocation with the password: growing a string that
        // holds it would leave copies in freed memory.
        let mut ways = String::new();
        if let (Some(host), Some(port)) = (&self.vnc_host, self.vnc_port) {
            let host = bracketed(host);
            let clients = if self.vnc_require_encryption {
                "HOST::PORT, VeNCrypt: TigerVNC, Remmina"
            } else {
                "HOST::PORT: TigerVNC, Remmina, vncdotool, vncsnapshot"
            };
            let _ = writeln!(ways, "  address:    {host}::{port}   ({clients})");
            match port.checked_sub(VNC_DISPLAY_BASE) {
                // TigerVNC reads `HOST:N` as a port from 100 up: there the form is gtk-vnc's.
                Some(display) if display < 100 => {
                    let _ = writeln!(
                        ways,
                        "  display:    {host}:{display}   (HOST:DISPLAY, port 5900 + {display}: gtk-vnc and others)"
                    );
                }
                Some(display) => {
                    let _ = writeln!(
                        ways,
                        "  display:    {host}:{display}   (HOST:DISPLAY, port 5900 + {display}: gtk-vnc)"
                    );
                }
                None => {
                    let _ = writeln!(
                        ways,
                        "              (port {port} is below 5900: clients that take only HOST:DISPLAY cannot reach it)"
                    );
                }
            }
            if let Some(fingerprint) = &self.vnc_tls_fingerprint {
                let _ = writeln!(
                    ways,
                    "  encrypted:  choose VeNCrypt X509Vnc (TigerVNC: -SecurityTypes X509Vnc); certificate SHA-256\n              {fingerprint}"
                );
            }
            if self.vnc_require_encryption {
                ways.push_str("              unencrypted VNC is refused on this port\n");
            } else if self.vnc_tls_fingerprint.is_none() {
                ways.push_str("              unencrypted on the internet: prefer the SSH tunnel\n");
            }
            if let Some(url) = &self.vnc_websocket_url {
                let _ = writeln!(ways, "  browser:    {url}   (noVNC)");
            }
        }
        if self.builder_vnc_port.is_some() {
            ways.push_str(
                "  ssh tunnel: 127.0.0.1::5901   after running the connection script with --vnc (encrypted by SSH)\n",
            );
        }
        let text = format!(
            "VNC for build {}\n  password:   {}\n{ways}access lasts {}\nclosing the viewer after the build steps completed is a logout: it finishes the build\n",
            self.build_id,
            credentials.vnc_password().expose(),
            self.access_rule
        );
        Ok(Some(Secret::new(text)))
    }

    /// The `known_hosts` lines that pin the gateway, and the builder: its host CA for its
    /// address when builders have host certificates, else its key when known.
    pub fn known_hosts(&self) -> Result<String> {
        self.check()?;
        let mut out = format!("{GATEWAY_ALIAS} {}\n", self.gateway_host_key);
        if let Some(ca) = &self.builder_host_ca {
            // The names ssh looks the builder up by: its address, with the port unless 22.
            let mut names = self.builder_host.clone();
            if self.builder_port != 22 {
                names = format!("{names},[{}]:{}", self.builder_host, self.builder_port);
            }
            out.push_str(&format!("@cert-authority {names} {ca}\n"));
        } else if let Some(key) = &self.builder_host_key {
            out.push_str(&format!("{BUILDER_ALIAS} {key}\n"));
        }
        Ok(out)
    }

    /// An `ssh_config` block for users who keep the key themselves: with it,
    /// `ssh -F <file> remote-access-shell` opens a shell in the build directory and
    /// `ssh -F <file> remote-access-builder CMD` runs a command. `identity_file` and
    /// `known_hosts_file` are where the user stored the key and [`ConnectionInfo::known_hosts`]
    /// (no `"` or control characters, and no backslash before a backslash, a quote or the end).
    pub fn ssh_config(&self, identity_file: &str, known_hosts_file: &str) -> Result<String> {
        self.config_with(identity_file, None, known_hosts_file)
    }

    /// [`ConnectionInfo::ssh_config`] for a build whose key has a certificate
    /// ([`Credentials::certificate`]), stored at `certificate_file`: `ssh` presents it to the
    /// builder (`CertificateFile`), and the plain key to the gateway. Keep the certificate out
    /// of `<identity_file>-cert.pub`, which `ssh` would also offer the gateway first.
    pub fn ssh_config_with_certificate(
        &self,
        identity_file: &str,
        certificate_file: &str,
        known_hosts_file: &str,
    ) -> Result<String> {
        self.config_with(identity_file, Some(certificate_file), known_hosts_file)
    }

    fn config_with(
        &self,
        identity_file: &str,
        certificate_file: Option<&str>,
        known_hosts_file: &str,
    ) -> Result<String> {
        self.check()?;
        let mut paths = vec![("identity_file", identity_file), ("known_hosts_file", known_hosts_file)];
        paths.extend(certificate_file.map(|path| ("certificate_file", path)));
        for (what, path) in paths {
            if path.is_empty() || path.chars().any(|c| c.is_control() || c == '"') {
                return Err(Error::invalid(what, "must be a path without quotes or control characters"));
            }
            if quote::has_ssh_config_escape(path) {
                return Err(Error::invalid(
                    what,
                    "must not have a backslash before a backslash, a quote or the end",
                ));
            }
        }
        let mut config = self.config_hosts(None);
        let _ = write!(
            config,
            "Host *\n  IdentityFile \"{}\"\n  UserKnownHostsFile \"{}\"\n",
            quote::ssh_config_tokens(identity_file),
            quote::ssh_config_tokens(known_hosts_file)
        );
        if let Some(path) = certificate_file {
            let _ = write!(
                config,
                "Host {BUILDER_ALIAS} {SHELL_ALIAS}\n  CertificateFile \"{}\"\n",
                quote::ssh_config_tokens(path)
            );
        }
        Ok(config)
    }

    /// A POSIX `sh` script for Linux and macOS. Run with no arguments it opens a login shell in
    /// the build directory; with arguments it runs them there as a command. It keeps the key and
    /// the pinned host keys in a private temporary directory that it removes on exit. The
    /// script contains the private key, so it is returned as a [`Secret`].
    pub fn posix_script(&self, credentials: &Credentials) -> Result<Secret<String>> {
        let key = self.private_key(credentials)?;
        let banner = self.banner();
        let cd = quote::cd_command(&self.build_dir);
        let mut s = String::with_capacity(4096);
        let _ = write!(
            s,
            "#!/bin/sh\n\
             # remote-access: SSH into build {build} through {gw}.\n\
             # Usage: sh {file} [command ...]   (no command: a login shell in the build directory)\n\
             #        sh {file} --vnc [local port]   (VNC through the SSH tunnel, default port 5901)\n\
             # This file holds a private key: keep it private and delete it when done.\n\
             # Everything runs in a subshell, so pasting this into a terminal leaves it open.\n\
             (\n\
             set -eu\n\
             umask 077\n\
             command -v ssh >/dev/null 2>&1 || {{ echo 'remote-access: ssh (OpenSSH) is not installed' >&2; exit 127; }}\n\
             # ssh passes the config path to the jump hop unquoted: keep it free of spaces.\n\
             base=\"${{TMPDIR:-/tmp}}\"\n\
             case \"$base\" in *[!A-Za-z0-9/._-]*) base=/tmp ;; esac\n\
             dir=$(mktemp -d \"$base/remote-access.XXXXXXXX\")\n\
             trap 'rm -rf \"$dir\"' EXIT\n\
             trap 'exit 129' HUP\n\
             trap 'exit 130' INT\n\
             trap 'exit 143' TERM\n\
             cat > \"$dir/id_ed25519\" <<'{END}'\n{key}{END}\n\
             cat > \"$dir/known_hosts\" <<'{END}'\n{known}{END}\n\
             cat > \"$dir/config\" <<'{END}'\n{hosts}{END}\n\
             printf 'Host *\\n  IdentityFile \"%s/id_ed25519\"\\n  UserKnownHostsFile \"%s/known_hosts\"\\n' \"$dir\" \"$dir\" >> \"$dir/config\"\n\
             {certificate}\
             echo {banner} >&2\n\
             status=0\n\
             if [ \"${{1:-}}\" = --vnc ]; then\n\
             {vnc}\
             elif [ \"$#\" -eq 0 ]; then\n\
             \x20 ssh -F \"$dir/config\" {SHELL_ALIAS} || status=$?\n\
             else\n\
             \x20 cd_command={cd}\n\
             \x20 ssh -F \"$dir/config\" {BUILDER_ALIAS} \"$cd_command && $*\" || status=$?\n\
             fi\n\
             exit \"$status\"\n\
             )\n",
            build = self.build_id,
            gw = self.gateway_host,
            file = format_args!("remote-access-{}.sh", self.build_id),
            END = HEREDOC_END,
            key = key.expose(),
            known = self.known_hosts()?,
            hosts = self.config_hosts(None),
            banner = quote::sh(&banner),
            cd = quote::sh(&cd),
            vnc = self.posix_vnc(),
            certificate = match certificate(credentials)? {
                Some(line) => format!(
                    "# The builder trusts the key's certificate; the gateway gets the plain key.\n\
                     cat > \"$dir/builder-cert.pub\" <<'{HEREDOC_END}'\n{line}\n{HEREDOC_END}\n\
                     printf 'Host {BUILDER_ALIAS} {SHELL_ALIAS}\\n  CertificateFile \"%s/builder-cert.pub\"\\n' \"$dir\" >> \"$dir/config\"\n"
                ),
                None => String::new(),
            },
        );
        Ok(Secret::new(s))
    }

    /// The PowerShell script's `--vnc [port]` branch, as [`ConnectionInfo::posix_script`]'s. The
    /// build's values are literals, so the code is the same for every build.
    fn powershell_vnc(&self) -> String {
        let target = self.vnc_forward_target().unwrap_or_default();
        let said =
            format!("remote-access: VNC for build {}: connect a VNC client to 127.0.0.1::", self.build_id);
        format!(
            "        $vncTarget = {target}\r\n\
             \x20       if (-not $vncTarget) {{ Write-Error 'remote-access: this build has no VNC'; exit 2 }}\r\n\
             \x20       $port = if ($args.Count -gt 1) {{ [string]$args[1] }} else {{ '5901' }}\r\n\
             \x20       if ($port -notmatch '^[0-9]+$') {{ Write-Error 'remote-access: --vnc takes a local port number'; exit 2 }}\r\n\
             \x20       Write-Host ({said} + $port + ' with the VNC password of the build; Ctrl-C closes the tunnel')\r\n\
             \x20       & ssh.exe -F (Join-Path $dir 'config') -N -o ExitOnForwardFailure=yes -L ('127.0.0.1:' + $port + ':' + $vncTarget) {GATEWAY_ALIAS}\r\n\
             \x20       $status = $LASTEXITCODE\r\n",
            target = quote::powershell(&target),
            said = quote::powershell(&said),
        )
    }

    /// `-L`'s target for the builder's VNC server (an IPv6 address in brackets), if any.
    fn vnc_forward_target(&self) -> Option<String> {
        let port = self.builder_vnc_port?;
        let host = self.builder_host.parse::<std::net::IpAddr>().ok()?;
        Some(match host {
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        })
    }

    /// The POSIX script's `--vnc [port]` branch: a local port forwarded through the gateway to
    /// the builder's VNC server, which the gateway's VNC proxy serves inside the tunnel. The
    /// build's values are literals, so the code is the same for every build.
    fn posix_vnc(&self) -> String {
        let target = self.vnc_forward_target().unwrap_or_default();
        let said =
            format!("remote-access: VNC for build {}: connect a VNC client to 127.0.0.1::", self.build_id);
        format!(
            "\x20 vnc_target={target}\n\
             \x20 [ -n \"$vnc_target\" ] || {{ echo 'remote-access: this build has no VNC' >&2; exit 2; }}\n\
             \x20 port=\"${{2:-5901}}\"\n\
             \x20 case \"$port\" in ''|*[!0-9]*) echo 'remote-access: --vnc takes a local port number' >&2; exit 2 ;; esac\n\
             \x20 echo {said}\"$port\"' with the VNC password of the build; Ctrl-C closes the tunnel' >&2\n\
             \x20 ssh -F \"$dir/config\" -N -o ExitOnForwardFailure=yes -L \"127.0.0.1:$port:$vnc_target\" {GATEWAY_ALIAS} || status=$?\n",
            target = quote::sh(&target),
            said = quote::sh(&said),
        )
    }

    /// A PowerShell script for Windows' built-in OpenSSH client (no Git Bash needed); same
    /// behaviour as [`ConnectionInfo::posix_script`]. Returned as a [`Secret`].
    pub fn powershell_script(&self, credentials: &Credentials) -> Result<Secret<String>> {
        let key = self.private_key(credentials)?;
        let cd = quote::cd_command(&self.build_dir);
        let mut s = String::with_capacity(4096);
        let _ = write!(
            s,
            "# remote-access: SSH into build {build} through {gw}.\r\n\
             # Usage: powershell -ExecutionPolicy Bypass -File {file} [command ...]\r\n\
             #        ... -File {file} --vnc [local port]   (VNC through the SSH tunnel, default port 5901)\r\n\
             # This file holds a private key: keep it private and delete it when done.\r\n\
             $ErrorActionPreference = 'Stop'\r\n\
             if (-not (Get-Command ssh.exe -ErrorAction SilentlyContinue)) {{\r\n\
             \x20   Write-Error 'remote-access: the OpenSSH client is not installed (Settings > Apps > Optional features > OpenSSH Client)'\r\n\
             \x20   exit 127\r\n\
             }}\r\n\
             $dir = Join-Path ([System.IO.Path]::GetTempPath()) ('remote-access-' + [System.Guid]::NewGuid().ToString('N'))\r\n\
             New-Item -ItemType Directory -Path $dir | Out-Null\r\n\
             # ssh passes the config path to the jump hop unquoted: use the short (8.3) form if the\r\n\
             # path has spaces or other special characters (e.g. in the user name).\r\n\
             if ($dir -match '[^A-Za-z0-9\\\\/:._-]') {{ $dir = (New-Object -ComObject Scripting.FileSystemObject).GetFolder($dir).ShortPath }}\r\n\
             $status = 1\r\n\
             try {{\r\n\
             \x20   # Only this user may read the key: OpenSSH for Windows refuses keys that others can read.\r\n\
             \x20   icacls $dir /inheritance:r /grant:r \"$($env:USERNAME):(OI)(CI)F\" | Out-Null\r\n\
             \x20   $key = @'\r\n{key}'@\r\n\
             \x20   $knownHosts = @'\r\n{known}'@\r\n\
             \x20   $hosts = @'\r\n{hosts}'@\r\n\
             \x20   $cdCommand = {cd}\r\n\
             \x20   $unix = $dir.Replace('\\', '/')\r\n\
             \x20   $config = $hosts + \"Host *`n  IdentityFile `\"$unix/id_ed25519`\"`n  UserKnownHostsFile `\"$unix/known_hosts`\"`n\"\r\n\
             {certificate}\
             \x20   $vnc = $args.Count -gt 0 -and $args[0] -eq '--vnc'\r\n\
             \x20   if ($args.Count -gt 0 -and -not $vnc) {{\r\n\
             \x20       $command = ($cdCommand + ' && ' + ($args -join ' ')).Replace('%', '%%')\r\n\
             \x20       $config = \"Host {COMMAND_ALIAS}`n  RemoteCommand $command`n\" + $config\r\n\
             \x20   }}\r\n\
             \x20   $utf8 = New-Object System.Text.UTF8Encoding($false)\r\n\
             \x20   [System.IO.File]::WriteAllText((Join-Path $dir 'id_ed25519'), $key.Replace(\"`r`n\", \"`n\"), $utf8)\r\n\
             \x20   [System.IO.File]::WriteAllText((Join-Path $dir 'known_hosts'), $knownHosts.Replace(\"`r`n\", \"`n\"), $utf8)\r\n\
             \x20   [System.IO.File]::WriteAllText((Join-Path $dir 'config'), $config.Replace(\"`r`n\", \"`n\"), $utf8)\r\n\
             \x20   Write-Host {banner}\r\n\
             \x20   if ($vnc) {{\r\n\
             {vnc}\
             \x20   }} else {{\r\n\
             \x20       $target = if ($args.Count -gt 0) {{ '{COMMAND_ALIAS}' }} else {{ '{SHELL_ALIAS}' }}\r\n\
             \x20       & ssh.exe -F (Join-Path $dir 'config') $target\r\n\
             \x20       $status = $LASTEXITCODE\r\n\
             \x20   }}\r\n\
             }} finally {{\r\n\
             \x20   Remove-Item -Recurse -Force -LiteralPath $dir -ErrorAction SilentlyContinue\r\n\
             }}\r\n\
             exit $status\r\n",
            build = self.build_id,
            gw = self.gateway_host,
            file = format_args!("remote-access-{}.ps1", self.build_id),
            key = crlf(key.expose()),
            known = crlf(&self.known_hosts()?),
            hosts = crlf(&self.config_hosts(Some(COMMAND_ALIAS))),
            cd = quote::powershell(&cd),
            banner = quote::powershell(&self.banner()),
            vnc = self.powershell_vnc(),
            certificate = match certificate(credentials)? {
                Some(line) => format!(
                    "\x20   # The builder trusts the key's certificate; the gateway gets the plain key.\r\n\
                     \x20   [System.IO.File]::WriteAllText((Join-Path $dir 'builder-cert.pub'), '{line}' + \"`n\", (New-Object System.Text.UTF8Encoding($false)))\r\n\
                     \x20   $config += \"Host {BUILDER_ALIAS} {SHELL_ALIAS} {COMMAND_ALIAS}`n  CertificateFile `\"$unix/builder-cert.pub`\"`n\"\r\n"
                ),
                None => String::new(),
            },
        );
        Ok(Secret::new(s))
    }

    fn private_key(&self, credentials: &Credentials) -> Result<Secret<String>> {
        self.check()?;
        if credentials.build_id().as_str() != self.build_id {
            return Err(Error::invalid("credentials", "belong to another build than this connection info"));
        }
        credentials.private_key_openssh()
    }

    fn banner(&self) -> String {
        let vnc = match self.vnc_port {
            Some(port) => format!(" VNC: {}::{port} with this build's VNC password.", self.gateway_host),
            None => String::new(),
        };
        format!(
            "remote-access: build {} through {}:{}; access lasts {} (as of when this script was made). Once the build steps completed, logging out (exit) finishes the build; a lost connection may reconnect within {}.{vnc}",
            self.build_id,
            self.gateway_host,
            self.gateway_port,
            self.access_rule,
            human(std::time::Duration::from_secs(self.reconnect_window))
        )
    }

    /// The `Host` entries shared by every output (paths to the key and known_hosts excluded).
    fn config_hosts(&self, command_alias: Option<&str>) -> String {
        let builders = match command_alias {
            Some(alias) => format!("{BUILDER_ALIAS} {SHELL_ALIAS} {alias}"),
            None => format!("{BUILDER_ALIAS} {SHELL_ALIAS}"),
        };
        let builder_checking = if self.builder_host_ca.is_some() {
            // Its host certificate, for its address: no alias, so the address is what is checked.
            String::from("yes")
        } else if self.builder_host_key.is_some() {
            format!("yes\n  HostKeyAlias {BUILDER_ALIAS}")
        } else {
            // Unknown builder key: trust it on first use, in this private file only.
            format!("accept-new\n  HostKeyAlias {BUILDER_ALIAS}")
        };
        let remote = quote::ssh_config_tokens(&format!(
            "{} ; exec \"${{SHELL:-/bin/sh}}\" -l",
            quote::cd_command(&self.build_dir)
        ));
        format!(
            "# remote-access: build {build}\n\
             Host {GATEWAY_ALIAS}\n\
             \x20 HostName {gw_host}\n\
             \x20 Port {gw_port}\n\
             \x20 User {gw_user}\n\
             \x20 HostKeyAlias {GATEWAY_ALIAS}\n\
             \x20 StrictHostKeyChecking yes\n\
             Host {builders}\n\
             \x20 HostName {b_host}\n\
             \x20 Port {b_port}\n\
             \x20 User {b_user}\n\
             \x20 StrictHostKeyChecking {builder_checking}\n\
             \x20 ProxyJump {GATEWAY_ALIAS}\n\
             Host {SHELL_ALIAS}\n\
             \x20 RequestTTY yes\n\
             \x20 RemoteCommand {remote}\n\
             Host *\n\
             \x20 IdentitiesOnly yes\n\
             \x20 GlobalKnownHostsFile none\n\
             \x20 PasswordAuthentication no\n\
             \x20 KbdInteractiveAuthentication no\n\
             \x20 ForwardAgent no\n\
             \x20 ForwardX11 no\n\
             \x20 ServerAliveInterval 30\n",
            build = self.build_id,
            gw_host = self.gateway_host,
            gw_port = self.gateway_port,
            gw_user = self.gateway_user,
            b_host = self.builder_host,
            b_port = self.builder_port,
            b_user = self.builder_user,
        )
    }
}

/// The credentials' certificate line, checked for what the scripts embed it in (a here
/// document, a PowerShell single-quoted string): printable ASCII and spaces only.
fn certificate(credentials: &Credentials) -> Result<Option<&str>> {
    let Some(line) = credentials.certificate() else { return Ok(None) };
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') || line.contains('\'') {
        return Err(Error::invalid("certificate", "not an OpenSSH certificate line"));
    }
    Ok(Some(line))
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// A host as URLs and VNC clients take it before a port (`:PORT`, `::PORT`, `:N`): an IPv6
/// address in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// The VNC WebSocket's URL: `wss` with a certificate, `ws` without; noVNC's default path,
/// which the gateway's WebSocket answers on (`gateway/vnc/websocket.rs`, `PATHS`).
fn websocket_url(host: &str, port: u16, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{}:{port}/websockify", bracketed(host))
}
