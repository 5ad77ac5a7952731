//! noVNC (Debian's `novnc` 1.3, `/usr/share/novnc`) in a real Chromium on a [`Screen`], as a
//! dashboard embeds it: a page from one origin opening `ws[s]://` to the gateway. The page is
//! noVNC's `vnc_lite.html`, served from a loopback HTTP server of our own, with two changes
//! (see [`lite_page`]): an `encrypt` parameter picks `wss` (stock, the page's own scheme does),
//! and every status text it shows is reported to the test.
//!
//! Headless Chromium cannot do this (its virtual time ignores WebSockets), so Chromium runs
//! headed on the Xvfb screen and tests judge by [`Screen::wait_for`] and
//! [`NoVnc::wait_for_status`].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::programs::Run;
use crate::screen::{PATIENCE, POLL, Screen};
use crate::server::Server;

/// Where Debian's `novnc` package puts noVNC.
const NOVNC: &str = "/usr/share/novnc";

/// noVNC in Chromium, connected (or trying) to a WebSocket; Chromium (all its processes: it
/// runs in a process group of its own) and the page's HTTP server stop on drop.
pub struct NoVnc {
    _chromium: Server,
    files: Files,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NoVnc {
    /// `vnc_lite.html`'s top bar (`#top_bar`, `#6e84a3`) with the status text, about 22 pixels
    /// high: there in every state.
    pub const STATUS_BAR: [u8; 3] = [0x6e, 0x84, 0xa3];
    /// noVNC's own screen (`rgb(40, 40, 40)`) below the top bar while it connects or is
    /// connected, the remote screen centred on it (not scaled); noVNC removes it on disconnect.
    pub const SESSION: [u8; 3] = [0x28, 0x28, 0x28];
    /// `vnc_lite.html`'s background (`dimgrey`), all of the page below the top bar once the
    /// session has ended (or failed): with [`SESSION`](Self::SESSION), a screenshot tells a
    /// failed connection from a connected one.
    pub const NO_SESSION: [u8; 3] = [0x69, 0x69, 0x69];

    /// Opens `vnc_lite.html?host=WS_HOST&port=WS_PORT&path=PATH&password=PASSWORD&encrypt=0|1`
    /// in Chromium (kiosk, the whole `screen`): it connects at once to
    /// `ws[s]://WS_HOST:WS_PORT/PATH` with that password (`path` as `vnc_lite.html` takes it,
    /// without the leading `/`, which is dropped if given). `tls`: `None` for `ws://`; for
    /// `wss://`, the PEM file of the certificate the WebSocket server presents (its first
    /// certificate is read). Chromium then accepts that certificate's public key, whoever
    /// signed it and whatever names it holds (`--ignore-certificate-errors-spki-list`), and
    /// still refuses any other key (tested): a test CA cannot be added to Chromium's trust
    /// without NSS's `certutil` (not installed), and `--ignore-certificate-errors` would accept
    /// any certificate at all. An empty `password` makes the page ask for one in a dialog.
    pub fn open(
        screen: &Screen,
        ws_host: &str,
        ws_port: u16,
        path: &str,
        password: &str,
        tls: Option<&Path>,
    ) -> NoVnc {
        let dir = tempfile::Builder::new().prefix("ra-chromium-").tempdir().unwrap();
        let files = Files::serve(Path::new(NOVNC));
        let query = [
            ("host", ws_host),
            ("port", &ws_port.to_string()),
            ("path", path.trim_start_matches('/')),
            ("password", password),
            ("encrypt", if tls.is_some() { "1" } else { "0" }),
        ]
        .map(|(name, value)| format!("{name}={}", url_encode(value)))
        .join("&");
        let url = format!("http://127.0.0.1:{}/vnc_lite.html?{query}", files.port);
        let log = dir.path().join("chromium.log");
        let mut cmd = Command::new("chromium");
        cmd.env("DISPLAY", format!(":{}", screen.display()))
            // Its profile, caches, crash reports and NSS database in our directory: nothing
            // carries over between tests or into the user's own.
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join(".config"))
            .env("XDG_CACHE_HOME", dir.path().join(".cache"))
            .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
            // Chromium refuses to run as root with its sandbox; the page is our own.
            .args(["--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check"])
            // No keyring, no background downloads: less work on a busy test machine.
            .args(["--password-store=basic", "--disable-background-networking", "--disable-component-update"])
            // `--test-type` drops the "unsupported command-line flag" bar above the page.
            .args(["--test-type", "--kiosk", "--window-position=0,0"])
            .arg(format!("--window-size={},{}", screen.width(), screen.height()));
        if let Some(cert) = tls {
            cmd.arg(format!("--ignore-certificate-errors-spki-list={}", spki_sha256(cert)));
        }
        cmd.arg(&url).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let chromium = Server::spawn("chromium", &mut cmd);
        NoVnc { _chromium: chromium, files, url, log, _dir: dir }
    }

    /// The page's address (with the password in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The page's origin, which Chromium sends as the WebSocket's `Origin` header:
    /// `http://127.0.0.1:PORT`. A gateway that checks origins must allow it.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.files.port)
    }

    /// Every status text the page has shown, in order: `Connecting`, then `Connected to
    /// <desktop name>`; or, when authentication fails, `Security failure: <the server's
    /// reason>` (e.g. `password check failed!` from x11vnc behind websockify); then, at the
    /// end, `Disconnected` (closed cleanly) or `Something went wrong, connection is closed`
    /// (what x11vnc's refusal through websockify, an unreachable server and a TLS failure all
    /// give).
    pub fn statuses(&self) -> Vec<String> {
        self.files.statuses.lock().unwrap().clone()
    }

    /// Waits until the page shows a status that satisfies `check` (60 s at most): `Ok` with it,
    /// or `Err` with all statuses so far, e.g.
    /// `wait_for_status(|s| s.starts_with("Connected to ")).await.expect("connects")`.
    pub async fn wait_for_status(&self, mut check: impl FnMut(&str) -> bool) -> Result<String, Vec<String>> {
        let start = Instant::now();
        loop {
            let statuses = self.statuses();
            if let Some(found) = statuses.iter().find(|s| check(s)) {
                return Ok(found.clone());
            }
            if start.elapsed() > PATIENCE {
                return Err(statuses);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Chromium's stderr (mostly noise about D-Bus), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `vnc_lite.html` changed in three ways (and panics when the installed noVNC lacks the lines
/// changed): an `encrypt` query parameter (`1`/`0`, as `vnc.html` has) chooses `wss`/`ws`,
/// where the stock page follows its own scheme (it would need an HTTPS server); `status()`
/// also reports its text to `/ra-status` on our server; and a refused authentication shows
/// `Security failure: <the server's reason>` before the stock page's disconnect status (which
/// does not say why). Without `encrypt` the page shows what the stock page does, but for that
/// one status.
fn lite_page(stock: &str) -> String {
    let changes = [
        (
            r#"if (window.location.protocol === "https:") {"#,
            r#"if (readQueryVariable('encrypt', window.location.protocol === "https:" ? '1' : '0') === '1') {"#,
        ),
        (
            "document.getElementById('status').textContent = text;",
            "document.getElementById('status').textContent = text;\n            \
             fetch('/ra-status?' + encodeURIComponent(text)).catch(() => {});",
        ),
        (
            r#"rfb.addEventListener("desktopname", updateDesktopName);"#,
            r#"rfb.addEventListener("desktopname", updateDesktopName);
        rfb.addEventListener("securityfailure", (e) =>
            status("Security failure: " + (e.detail.reason || "status " + e.detail.status)));"#,
        ),
    ];
    changes.iter().fold(stock.to_owned(), |page, (from, to)| {
        assert!(page.contains(from), "{NOVNC}/vnc_lite.html has no `{from}`: another noVNC version?");
        page.replacen(from, to, 1)
    })
}

/// A static file server for noVNC on a free loopback port, plus `/ra-status`; its listener is
/// bound before the port is used, so no other process can take it. Stops on drop.
struct Files {
    port: u16,
    statuses: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Files {
    fn serve(root: &Path) -> Files {
        let stock = std::fs::read_to_string(root.join("vnc_lite.html"))
            .unwrap_or_else(|err| panic!("{}", crate::programs::missing("novnc", &err)));
        let page = Arc::new(lite_page(&stock));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, shared, stopping) = (root.to_owned(), statuses.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (root, page, statuses) = (root.clone(), page.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = respond(stream, &root, &page, &statuses);
                });
            }
        });
        Files { port, statuses, stop, thread: Some(thread) }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)); // wakes `accept`
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request (GET only) and closes the connection.
fn respond(
    mut stream: TcpStream,
    root: &Path,
    page: &str,
    statuses: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.strip_prefix("GET ").and_then(|rest| rest.split(' ').next()).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, kind, body) = if path == "/ra-status" {
        statuses.lock().unwrap().push(url_decode(query));
        ("204 No Content", "text/plain", Vec::new())
    } else if path == "/vnc_lite.html" {
        ("200 OK", "text/html; charset=utf-8", page.as_bytes().to_vec())
    } else {
        let relative = path.trim_start_matches('/');
        let file = (!relative.split('/').any(|part| part == ".." || part.is_empty()))
            .then(|| std::fs::read(root.join(relative)).ok())
            .flatten();
        match file {
            Some(body) => ("200 OK", content_type(relative), body),
            None => ("404 Not Found", "text/plain", b"not found".to_vec()),
        }
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    stream.write_all(&body)
}

/// The content type of a noVNC file; module scripts load only with a JavaScript type.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "css" => "text/css",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Undoes `encodeURIComponent`.
fn url_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The base64 SHA-256 of the public key (SubjectPublicKeyInfo) of the first certificate in a
/// PEM file: what `--ignore-certificate-errors-spki-list` takes. Computed with `openssl`.
fn spki_sha256(cert: &Path) -> String {
    let openssl = |args: &[&str], input: &[u8]| -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start();
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let pem = std::fs::read(cert).unwrap_or_else(|err| panic!("{}: {err}", cert.display()));
    let public_key = openssl(&["x509", "-noout", "-pubkey"], &pem);
    let spki = openssl(&["pkey", "-pubin", "-outform", "DER"], &public_key);
    base64(&openssl(&["dgst", "-sha256", "-binary"], &spki))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_url_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\xff"), "Zm9vYmFy/w==");
        let odd = "p&ss=w/rd ü%";
        assert_eq!(url_encode(odd), "p%26ss%3Dw%2Frd%20%C3%BC%25");
        assert_eq!(url_decode(&url_encode(odd)), odd);
        assert_eq!(url_decode("Connected%20to%20ci-vm"), "Connected to ci-vm");
    }

    #[test]
    fn the_lite_page_takes_encrypt_and_reports_its_status() {
        let Ok(stock) = std::fs::read_to_string(Path::new(NOVNC).join("vnc_lite.html")) else {
            panic!("{}", crate::programs::missing("novnc", &"no vnc_lite.html"));
        };
        let page = lite_page(&stock);
        assert!(page.contains("readQueryVariable('encrypt'"));
        assert!(page.contains("fetch('/ra-status?'"));
        assert!(page.contains(r#"addEventListener("securityfailure""#));
    }
}
