//! The builder agent program: start it on a builder the gateway cannot reach. It dials out to
//! the gateway with the build's agent credential, keeps the build's reverse tunnel up
//! (reconnecting with backoff), and exits when the build's session is over.
//!
//! ```text
//! agent --gateway gw.example.com:2222 [--gateway gw2.internal:2222]... \
//!       --host-key 'ssh-ed25519 AAAA...' \
//!       --user rt-xxxxxxxxxxxx --key-file /run/remote-access/agent_key \
//!       [--local 127.0.0.1] [--port 22] [--port 5900]
//! ```
//!
//! With several gateways sharing a store (`docs/scaling.md`), name each one: the agent keeps a
//! tunnel to every gateway, so whichever one a user lands on holds the build's tunnel. The
//! first tunnel to end (the session is over everywhere at once) stops the others.
//!
//! Exit status: 0 when the session ended (or on Ctrl-C / SIGTERM), 2 when the gateway refused
//! the credential, 1 on any other error. Logs (reconnections, forwarded connections) go to
//! stderr, at `info` and above unless `RUST_LOG` says otherwise (`RUST_LOG=debug`).

use std::process::ExitCode;

use remote_access_core::{AgentExit, AgentOptions, Secret, run_agent};

fn usage() -> ExitCode {
    eprintln!(
        "usage: agent --gateway HOST:PORT [--gateway HOST:PORT]... --host-key 'ssh-ed25519 AAAA...' --user USER --key-file PATH \
         [--local ADDRESS] [--port PORT]..."
    );
    ExitCode::from(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    remote_access_examples::logging::init("agent", tracing_subscriber::filter::LevelFilter::INFO, false);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut gateways, mut host_key, mut user, mut key_file, mut local, mut ports) =
        (Vec::new(), None, None, None, None, Vec::new());
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { return usage() };
        match flag.as_str() {
            "--gateway" => gateways.push(value.clone()),
            "--host-key" => host_key = Some(value.clone()),
            "--user" => user = Some(value.clone()),
            "--key-file" => key_file = Some(value.clone()),
            "--local" => local = Some(value.clone()),
            "--port" => match value.parse::<u16>() {
                Ok(port) => ports.push(port),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    let (Some(host_key), Some(user), Some(key_file)) = (host_key, user, key_file) else {
        return usage();
    };
    if gateways.is_empty() {
        return usage();
    }
    let key = match std::fs::read_to_string(&key_file) {
        Ok(key) => Secret::new(key),
        Err(err) => {
            eprintln!("agent: cannot read {key_file}: {err}");
            return ExitCode::from(1);
        }
    };
    let mut options = AgentOptions::new(String::new(), host_key, user, key);
    if let Some(local) = local {
        match local.parse() {
            Ok(ip) => options.local_host = ip,
            Err(_) => return usage(),
        }
    }
    if !ports.is_empty() {
        options.ports = ports;
    }
    // One tunnel per gateway; the first to end stops the rest.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tunnels = tokio::task::JoinSet::new();
    for gateway in gateways {
        let mut options = options.clone();
        options.gateway = gateway;
        let mut stopped = stopped.clone();
        tunnels.spawn(run_agent(options, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
    }
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let first = tokio::select! {
        () = shutdown => None,
        first = tunnels.join_next() => first,
    };
    let _ = stop.send(true);
    let first = match first {
        Some(Ok(exit)) => exit,
        Some(Err(err)) => Err(remote_access_core::Error::Io(std::io::Error::other(err))),
        None => Ok(AgentExit::Stopped),
    };
    while tunnels.join_next().await.is_some() {}
    match first {
        Ok(AgentExit::SessionEnded) => {
            eprintln!("agent: the build's remote access session has ended");
            ExitCode::SUCCESS
        }
        Ok(AgentExit::Stopped) => ExitCode::SUCCESS,
        Ok(AgentExit::Replaced) => {
            eprintln!("agent: a newer agent of this build took over the tunnel; stopping");
            ExitCode::SUCCESS
        }
        Ok(AgentExit::Refused) => {
            eprintln!(
                "agent: the gateway refused this agent's credential (session over, or not this build's)"
            );
            ExitCode::from(2)
        }
        Ok(other) => {
            eprintln!("agent: stopped ({other:?})");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("agent: {err}");
            ExitCode::from(1)
        }
    }
}
