//! `npx remote-access`: the `remote-access` command line (`remote-access-cli`), run in this
//! process. `cli.js` calls it with the arguments and exits with what it returns.

use napi_derive::napi;

/// Runs the `remote-access` command line with `args` (without the program name) and returns
/// its exit code: 0 done, 1 failed, 2 a usage error or refused input, 3 the build's access has
/// ended, 4 no such build. It blocks until the command ends (`gateway` runs until Ctrl-C or
/// SIGTERM); output goes to the process's stdout and stderr.
#[napi]
pub fn cli_main(args: Vec<String>) -> i32 {
    remote_access_cli::run(&args) as i32
}
