//! # remote-access-cli
//!
//! The `remote-access` command line, for operators and CI scripts: run a gateway of a fleet,
//! and issue, revoke, inspect and hand out a build's access against the fleet's shared Redis.
//! The binary is `remote-access` (`cargo install remote-access-cli`); the Python and Node
//! packages run the same code as `python -m remote_access` and `npx remote-access`, through
//! [`run`].
//!
//! ```text
//! remote-access gateway --listen 0.0.0.0:22 --host-key-file /etc/remote-access/host_key ...
//! remote-access issue BUILD_ID --builder 10.0.3.7 --out DIR
//! remote-access script --credentials DIR/credentials.json --gateway-host gw.example.com ...
//! remote-access status BUILD_ID [--json]
//! remote-access revoke BUILD_ID [--reason TEXT]
//! remote-access revoked-keys --out /etc/ssh/remote-access-revoked.krl
//! remote-access builder-env --dir /run/remote-access --env-file - --deadline 2026-05-04T12:20:00Z
//! ```
//!
//! Exit codes: 0 done; 1 failed (the store could not be reached, a file could not be written:
//! the message says what); 2 a usage error or input the library refused; 3 the build's access
//! has ended (`status`, and `revoke` or `script` of an ended build); 4 no such build.
//!
//! # Layout
//!
//! - `args`: the words of the command line, checked against what a sub-command takes.
//! - `store`: the Redis URL and the authority every store-backed command uses.
//! - `gateway`, `issue`, `script`, `status`, `revoke`, `revoked_keys`: one sub-command each.
//! - `builder_env`: the one sub-command that runs on a builder, without Redis.
//! - `logging`: where the gateway's logs go.
//! - `output`: what every command shares for printing (JSON or text, progress lines).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod args;
mod builder_env;
mod gateway;
mod issue;
pub mod logging;
mod output;
mod revoke;
mod revoked_keys;
mod script;
mod status;
mod store;

use args::Usage;
use remote_access_core::Error;

/// How a command ended: the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Done = 0,
    /// 1: failed; the message says why.
    Failed = 1,
    /// 2: a usage error, or input the library refused.
    Usage = 2,
    /// 3: the build's access has ended.
    Ended = 3,
    /// 4: no such build.
    UnknownBuild = 4,
}

/// What a sub-command returns: done, or why not (printed on stderr by [`run`]).
type Outcome = Result<(), Failure>;

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    Usage(Usage),
    Library(Error),
    /// The build's access has ended (what ended it).
    Ended(String),
    Other(String),
}

impl From<Usage> for Failure {
    fn from(usage: Usage) -> Self {
        Self::Usage(usage)
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Self::Library(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Self::Other(err.to_string())
    }
}

impl Failure {
    fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) | Self::Library(Error::InvalidInput { .. }) => Exit::Usage,
            Self::Library(Error::SessionEnded { .. }) | Self::Ended(_) => Exit::Ended,
            Self::Library(Error::UnknownBuild { .. }) => Exit::UnknownBuild,
            Self::Library(_) | Self::Other(_) => Exit::Failed,
        }
    }
}

/// One sub-command: its name, what it does, its usage and how to run it.
struct Command {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    run: fn(&[String]) -> Outcome,
    /// Its options; `spec.store`: whether it works against the fleet's Redis.
    spec: &'static args::Spec,
}

impl Command {
    /// Its usage, with the Redis options if it takes them.
    fn usage(&self) -> String {
        if self.spec.store {
            format!("{}\nthe fleet's Redis:\n{}", self.usage, store::USAGE)
        } else {
            self.usage.to_owned()
        }
    }
}

const COMMANDS: [Command; 7] = [
    Command {
        name: "gateway",
        summary: gateway::SUMMARY,
        usage: gateway::USAGE,
        run: gateway::run,
        spec: &gateway::SPEC,
    },
    Command {
        name: "issue",
        summary: issue::SUMMARY,
        usage: issue::USAGE,
        run: issue::run,
        spec: &issue::SPEC,
    },
    Command {
        name: "script",
        summary: script::SUMMARY,
        usage: script::USAGE,
        run: script::run,
        spec: &script::SPEC,
    },
    Command {
        name: "status",
        summary: status::SUMMARY,
        usage: status::USAGE,
        run: status::run,
        spec: &status::SPEC,
    },
    Command {
        name: "revoke",
        summary: revoke::SUMMARY,
        usage: revoke::USAGE,
        run: revoke::run,
        spec: &revoke::SPEC,
    },
    Command {
        name: "revoked-keys",
        summary: revoked_keys::SUMMARY,
        usage: revoked_keys::USAGE,
        run: revoked_keys::run,
        spec: &revoked_keys::SPEC,
    },
    Command {
        name: "builder-env",
        summary: builder_env::SUMMARY,
        usage: builder_env::USAGE,
        run: builder_env::run,
        spec: &builder_env::SPEC,
    },
];

/// The overview `remote-access --help` prints.
fn overview() -> String {
    let mut text = String::from(
        "remote-access: temporary SSH and VNC access to CI builders through a public gateway\n\n\
         usage: remote-access COMMAND [OPTIONS]   (remote-access COMMAND --help for one command)\n\n\
         commands:\n",
    );
    for command in &COMMANDS {
        text.push_str(&format!("  {:<12} {}\n", command.name, command.summary));
    }
    text.push_str(
        "\nThe store-backed commands read the fleet's Redis from --redis URL or, for a URL with a\n\
         password, from REMOTE_ACCESS_REDIS_URL.\n\n\
         exit codes: 0 done; 1 failed; 2 usage error or refused input; 3 the build's access has\n\
         ended; 4 no such build\n",
    );
    text
}

/// Runs the command line `args` (without the program name) and returns the exit code; what it
/// prints goes to stdout (results) and stderr (errors, progress). `remote-access` calls this,
/// and so do `python -m remote_access` and `npx remote-access`.
pub fn run(args: &[String]) -> Exit {
    let Some((name, rest)) = args.split_first() else {
        eprint!("{}", overview());
        return Exit::Usage;
    };
    if matches!(name.as_str(), "--help" | "-h" | "help") {
        match rest.first().and_then(|wanted| COMMANDS.iter().find(|c| c.name == wanted)) {
            Some(command) => print!("{}", command.usage()),
            None => print!("{}", overview()),
        }
        return Exit::Done;
    }
    if name == "--version" {
        println!("remote-access {}", env!("CARGO_PKG_VERSION"));
        return Exit::Done;
    }
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("remote-access: unknown command {name:?}\n");
        eprint!("{}", overview());
        return Exit::Usage;
    };
    if rest.iter().any(|word| word == "--help" || word == "-h") {
        print!("{}", command.usage());
        return Exit::Done;
    }
    match (command.run)(rest) {
        Ok(()) => Exit::Done,
        Err(failure) => {
            match &failure {
                Failure::Usage(Usage(what)) => {
                    eprintln!("remote-access {name}: {what}\n");
                    eprint!("{}", command.usage());
                }
                Failure::Library(err) => eprintln!("remote-access {name}: {err}"),
                Failure::Ended(what) => {
                    eprintln!("remote-access {name}: the build's access has ended ({what})")
                }
                Failure::Other(what) => eprintln!("remote-access {name}: {what}"),
            }
            failure.exit()
        }
    }
}

/// A multi-threaded tokio runtime for one command.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::Other(format!("cannot start the async runtime: {err}")))
}
