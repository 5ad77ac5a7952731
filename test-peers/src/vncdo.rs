//! vncdotool's `vncdo`, the tests' VNC client (from PyPI: `pip install vncdotool==1.4.2`), and
//! the size of the screenshots it takes.

/// `vncdo -s 127.0.0.1::PORT -p PASSWORD`, to which a test adds its commands (`capture FILE`,
/// `pause 600`, ...); start it with [`RunAsync`](crate::RunAsync), which says how to install
/// vncdo when it is missing.
pub fn vncdo(port: u16, password: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("vncdo");
    cmd.args(["-s", &format!("127.0.0.1::{port}"), "-p", password]);
    cmd
}

/// The width and height in a PNG's header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some((word(16), word(20)))
}
