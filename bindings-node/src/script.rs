//! Connection info and the scripts users run.

use napi::{Env, JsString, Result};
use napi_derive::napi;
use remote_access_core as core;

use crate::authority::{Credentials, Session};
use crate::convert::port;
use crate::errors::OrThrow;
use crate::gateway::HostKey;

/// Where users reach the gateway, and how the scripts behave.
#[napi(object)]
pub struct ScriptOptions {
    /// The gateway's public host name or address, as users reach it.
    pub gateway_host: String,
    /// The gateway's public port (default 22).
    pub gateway_port: Option<f64>,
    /// The directory the login shell starts in (default `$FCI_BUILD_DIR`).
    pub build_dir: Option<String>,
    /// The SHA-256 fingerprint of the gateway's VNC TLS certificate (`fingerprint` of the
    /// gateway's `vncTls`), when it has one (default none): users are told to choose VeNCrypt,
    /// and browsers get a `wss://` URL.
    pub vnc_tls_fingerprint: Option<String>,
    /// The gateway refuses unencrypted VNC (its `vncRequireEncryption`; default false): users
    /// are not offered the plain path.
    pub vnc_require_encryption: Option<bool>,
    /// The gateway serves VNC over WebSocket (its `vncWebsocket`; default true): the
    /// connection info carries the URL for noVNC.
    pub vnc_websocket: Option<bool>,
    /// The public key of the CA that signs builders' host keys (`SshCa.publicKey`), if builders
    /// have host certificates: the scripts trust it for the builder's address instead of a
    /// pinned key or the key on first use.
    pub builder_host_ca: Option<String>,
}

impl ScriptOptions {
    /// The core's options: what is set here over the core's defaults (for `new
    /// ConnectionInfo` and `Authority.connectionInfo` alike).
    pub(crate) fn into_core(self, env: &Env) -> Result<core::ScriptOptions> {
        let mut options = core::ScriptOptions::new(
            self.gateway_host,
            port(env, "gatewayPort", self.gateway_port.unwrap_or(22.0))?,
        );
        if let Some(build_dir) = self.build_dir {
            options.build_dir = build_dir;
        }
        options.vnc_tls_fingerprint = self.vnc_tls_fingerprint;
        options.vnc_require_encryption =
            self.vnc_require_encryption.unwrap_or(options.vnc_require_encryption);
        options.vnc_websocket = self.vnc_websocket.unwrap_or(options.vnc_websocket);
        options.builder_host_ca = self.builder_host_ca;
        Ok(options)
    }
}

/// Everything a client needs to connect, without secrets. `toJSON()` is the plain object a
/// web UI shows (the Rust and Python keys, in camelCase); the methods generate the scripts.
/// A snapshot of the session it was made from: `refresh(session)` brings its time fields up
/// to date, as does a new one from `authority.connectionInfo(...)`.
#[napi]
pub struct ConnectionInfo(pub(crate) core::ConnectionInfo);

#[napi]
impl ConnectionInfo {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        credentials: &Credentials,
        session: &Session,
        host_key: &HostKey,
        options: ScriptOptions,
    ) -> Result<Self> {
        let options = options.into_core(&env)?;
        core::ConnectionInfo::new(&credentials.0, &session.0, &host_key.0, &options).or_throw(&env).map(Self)
    }

    /// Brings the time fields up to date with `session` (the same build's, read later with
    /// `authority.session(buildId)`): the phase, the deadline once the steps completed, a
    /// reconnect window, the end. Throws `invalid_input` for another build's session, and then
    /// changes nothing.
    #[napi]
    pub fn refresh(&mut self, env: Env, session: &Session) -> Result<()> {
        // On a copy, so that a refused session leaves the info as it was.
        let mut info = self.0.clone();
        info.refresh(&session.0).or_throw(&env)?;
        self.0 = info;
        Ok(())
    }

    /// The info as a plain object with camelCase keys, like every `toJSON()` of this package
    /// (the core's JSON, which Python's `ConnectionInfo` dict holds, is snake_case). Its
    /// values are the core's, so `grace` and `reconnectWindow` are seconds there too.
    #[napi(
        js_name = "toJSON",
        ts_return_type = "{ buildId: string; gatewayHost: string; gatewayPort: number; gatewayUser: string; gatewayHostKey: string; gatewayHostKeyFingerprint: string; builderHost: string; builderPort: number; builderUser: string; builderHostKey: string | null; builderHostCa: string | null; keyFingerprint: string; phase: Phase; deadline: string; maxEnd: string; grace: number; reconnectWindow: number; stepsCompletedAt: string | null; reconnectBy: string | null; endReason: EndReasonCode | null; accessRule: string; buildDir: string; vncHost: string | null; vncPort: number | null; builderVncPort: number | null; vncTlsFingerprint: string | null; vncRequireEncryption: boolean; vncWebsocketUrl: string | null }"
    )]
    pub fn to_json(&self) -> serde_json::Value {
        let info = &self.0;
        serde_json::json!({
            "buildId": info.build_id, "gatewayHost": info.gateway_host, "gatewayPort": info.gateway_port,
            "gatewayUser": info.gateway_user, "gatewayHostKey": info.gateway_host_key,
            "gatewayHostKeyFingerprint": info.gateway_host_key_fingerprint, "builderHost": info.builder_host,
            "builderPort": info.builder_port, "builderUser": info.builder_user,
            "builderHostKey": info.builder_host_key, "builderHostCa": info.builder_host_ca,
            "keyFingerprint": info.key_fingerprint,
            "phase": info.phase, "deadline": info.deadline, "maxEnd": info.max_end, "grace": info.grace,
            "reconnectWindow": info.reconnect_window, "stepsCompletedAt": info.steps_completed_at,
            "reconnectBy": info.reconnect_by, "endReason": info.end_reason, "accessRule": info.access_rule,
            "buildDir": info.build_dir, "vncHost": info.vnc_host,
            "vncPort": info.vnc_port, "builderVncPort": info.builder_vnc_port,
            "vncTlsFingerprint": info.vnc_tls_fingerprint, "vncRequireEncryption": info.vnc_require_encryption,
            "vncWebsocketUrl": info.vnc_websocket_url,
        })
    }

    /// The `known_hosts` lines that pin the gateway (and the builder, when its key is known).
    #[napi]
    pub fn known_hosts(&self, env: Env) -> Result<String> {
        self.0.known_hosts().or_throw(&env)
    }

    /// An `ssh_config` block for users who keep the key and `knownHosts()` in files.
    #[napi]
    pub fn ssh_config(&self, env: Env, identity_file: String, known_hosts_file: String) -> Result<String> {
        self.0.ssh_config(&identity_file, &known_hosts_file).or_throw(&env)
    }

    /// The same for a key with a certificate (`credentials.certificate`) in `certificateFile`,
    /// which `ssh` presents to the builder only.
    #[napi]
    pub fn ssh_config_with_certificate(
        &self,
        env: Env,
        identity_file: String,
        certificate_file: String,
        known_hosts_file: String,
    ) -> Result<String> {
        self.0
            .ssh_config_with_certificate(&identity_file, &certificate_file, &known_hosts_file)
            .or_throw(&env)
    }

    /// A POSIX `sh` script that opens a shell in the build directory (or runs its arguments
    /// there). It contains the private key: a secret for the user only.
    #[napi]
    pub fn posix_script<'env>(&self, env: &'env Env, credentials: &Credentials) -> Result<JsString<'env>> {
        env.create_string(self.0.posix_script(&credentials.0).or_throw(env)?.expose())
    }

    /// The same for PowerShell on Windows. A secret too.
    #[napi]
    pub fn powershell_script<'env>(
        &self,
        env: &'env Env,
        credentials: &Credentials,
    ) -> Result<JsString<'env>> {
        env.create_string(self.0.powershell_script(&credentials.0).or_throw(env)?.expose())
    }

    /// What to enter in a VNC client, password included (a secret); null without VNC.
    #[napi]
    pub fn vnc_instructions<'env>(
        &self,
        env: &'env Env,
        credentials: &Credentials,
    ) -> Result<Option<JsString<'env>>> {
        let text = self.0.vnc_instructions(&credentials.0).or_throw(env)?;
        text.map(|text| env.create_string(text.expose())).transpose()
    }
}
