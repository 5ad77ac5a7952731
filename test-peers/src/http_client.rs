//! The gateway's metrics endpoint read as an operator's tools read it: `curl` for HTTP, and
//! the Prometheus text's series by name.

use crate::programs::require;

/// `curl` (a real HTTP client) asking the gateway's metrics endpoint on `port` for `path`
/// with `method`: the status and the body.
pub async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    require("curl");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// The value of `series` (name and labels, as written) in Prometheus text, 0 if absent (a
/// labelled counter appears on its first count).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}
