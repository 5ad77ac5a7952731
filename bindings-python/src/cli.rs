//! `python -m remote_access` (and the `remote-access` script pip installs): the `remote-access`
//! command line (`remote-access-cli`), run in this process.

use pyo3::prelude::*;

/// Runs the `remote-access` command line with `args` (without the program name) and returns
/// its exit code: 0 done, 1 failed, 2 a usage error or refused input, 3 the build's access has
/// ended, 4 no such build. It blocks until the command ends (`gateway` runs until Ctrl-C or
/// SIGTERM), without the GIL; output goes to the process's stdout and stderr.
#[pyfunction]
pub(crate) fn cli_main(py: Python<'_>, args: Vec<String>) -> i32 {
    py.detach(|| remote_access_cli::run(&args) as i32)
}
