//! The builder agent (reverse tunnels) and the VNC helpers.

use napi::bindgen_prelude::{Buffer, PromiseRaw, This, Unknown};
use napi::{Env, Result};
use napi_derive::napi;
use remote_access_core as core;
use std::sync::Arc;

use crate::convert::{ip, millis_or, ports, secret};
use crate::errors::{Outcome, Stop, invalid, outcome, promise, stop_signal, stopped};
use crate::keepalive::KeepAlive;

/// What the builder's agent needs (durations in milliseconds).
#[napi(object)]
pub struct AgentOptions<'a> {
    /// The gateway, `host:port`.
    pub gateway: String,
    /// The gateway's public host key (`ssh-ed25519 AAAA...`), pinned.
    pub gateway_host_key: String,
    /// The build's agent username (`credentials.agentUsername`).
    pub username: String,
    /// The build's agent private key (`credentials.agentPrivateKeyOpenssh()`). A secret.
    #[napi(ts_type = "string")]
    pub private_key: Unknown<'a>,
    /// Where the builder's services listen (default 127.0.0.1).
    pub local_host: Option<String>,
    /// The ports the tunnel may reach (default [22]).
    pub ports: Option<Vec<f64>>,
    pub min_backoff_ms: Option<f64>,
    pub max_backoff_ms: Option<f64>,
    pub dial_timeout_ms: Option<f64>,
}

/// A running builder agent: `await agent.done()` tells why it returned (`session_ended`,
/// `refused`, `replaced` or `stopped`; every caller gets the same answer); `stop()` stops it.
/// Only `stop()` or the end of the session stops it: not the garbage collector. Until it
/// returns it keeps Node running, unless `unref()` is called.
#[napi]
pub struct RunningAgent {
    gateway: String,
    stop: Stop,
    done: Arc<Outcome<&'static str>>,
    keep_alive: KeepAlive,
}

/// Starts a builder's agent: it dials out to the gateway with the build's agent credential and
/// carries the build's reverse tunnel, reconnecting with backoff, until the session ends.
#[napi]
pub fn run_agent(env: Env, options: AgentOptions<'_>) -> Result<RunningAgent> {
    let private_key = secret(&env, "privateKey", options.private_key)?;
    let mut agent =
        core::AgentOptions::new(options.gateway, options.gateway_host_key, options.username, private_key);
    if let Some(host) = &options.local_host {
        agent.local_host = ip(&env, "localHost", host)?;
    }
    if let Some(list) = &options.ports {
        agent.ports = ports(&env, "ports", list)?;
    }
    agent.min_backoff = millis_or(&env, "minBackoffMs", options.min_backoff_ms, agent.min_backoff)?;
    agent.max_backoff = millis_or(&env, "maxBackoffMs", options.max_backoff_ms, agent.max_backoff)?;
    agent.dial_timeout = millis_or(&env, "dialTimeoutMs", options.dial_timeout_ms, agent.dial_timeout)?;
    let gateway = agent.gateway.clone();
    let keep_alive = KeepAlive::new(&env)?;
    let stop = stop_signal();
    let done: Arc<Outcome<&'static str>> = Arc::new(tokio::sync::watch::channel(None).0);
    let (signal, result, held) = (stop.clone(), done.clone(), keep_alive.clone());
    napi::bindgen_prelude::spawn(async move {
        let exit = core::run_agent(agent, stopped(signal)).await.map(|exit| match exit {
            core::AgentExit::SessionEnded => "session_ended",
            core::AgentExit::Refused => "refused",
            core::AgentExit::Replaced => "replaced",
            _ => "stopped",
        });
        result.send_replace(Some(exit.map_err(Arc::new)));
        held.release();
    });
    Ok(RunningAgent { gateway, stop, done, keep_alive })
}

#[napi]
impl RunningAgent {
    /// Stops the agent (its connection closes); `done()` then resolves to `stopped`.
    #[napi]
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves when the agent returns, with why.
    #[napi(ts_return_type = "Promise<AgentExit>")]
    pub fn done<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, &'static str>> {
        promise(env, outcome(self.done.clone()), Ok)
    }

    /// The gateway it dials (`host:port`).
    #[napi(getter)]
    pub fn gateway(&self) -> String {
        self.gateway.clone()
    }

    /// Keeps Node running until the agent returns (the default).
    #[napi(js_name = "ref", ts_return_type = "this")]
    pub fn keep_ref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, true)?;
        Ok(this)
    }

    /// Lets Node exit while the agent runs, if nothing else keeps it running.
    #[napi(ts_return_type = "this")]
    pub fn unref<'env>(&self, env: Env, this: This<'env>) -> Result<This<'env>> {
        self.keep_alive.set_ref(&env, false)?;
        Ok(this)
    }

    /// Whether the agent keeps Node running now: until `unref()` or its return.
    #[napi]
    pub fn has_ref(&self) -> bool {
        self.keep_alive.has_ref()
    }
}

/// The 8-byte VNC password file (`vncpasswd` format) for a builder's VNC server.
#[napi]
pub fn vnc_password_file(env: Env, #[napi(ts_arg_type = "string")] password: Unknown<'_>) -> Result<Buffer> {
    let password = secret(&env, "VNC password", password)?;
    Ok(core::vnc_password_file(password.expose()).to_vec().into())
}

/// The 16-byte answer to a VNC Authentication challenge (for clients and tests).
#[napi]
pub fn vnc_auth_response(
    env: Env,
    #[napi(ts_arg_type = "string")] password: Unknown<'_>,
    challenge: Buffer,
) -> Result<Buffer> {
    let password = secret(&env, "VNC password", password)?;
    let challenge: &[u8; 16] = challenge.as_ref().try_into().map_err(|_| {
        invalid(&env, "challenge", format!("{} bytes; a VNC challenge has 16", challenge.len()))
    })?;
    Ok(core::vnc_auth_response(password.expose(), challenge).to_vec().into())
}
