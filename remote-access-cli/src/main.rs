//! `remote-access`: see the library's documentation (`remote_access_cli`) or `remote-access --help`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(remote_access_cli::run(&args) as u8)
}
