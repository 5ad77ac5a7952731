//! One gateway of a fleet: `remote-access gateway` (the `remote-access-cli` crate), kept under
//! this name for the examples' tests and the benchmark harness. `gateway --help` says how to
//! run it; `docs/scaling.md` how a fleet fits together.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::iter::once("gateway".to_owned()).chain(std::env::args().skip(1)).collect();
    std::process::ExitCode::from(remote_access_cli::run(&args) as u8)
}
