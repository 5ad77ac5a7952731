//! Encrypted VNC on the gateway's own ports: VeNCrypt `X509Vnc` and RFB over WebSocket (`ws://`,
//! `wss://`), against real builder VNC servers (x11vnc, Xtigervnc) and several client
//! implementations: the tests' own RFB viewer over tokio-tungstenite and rustls (a client
//! written from the protocols, not from the gateway's code), vncdotool and vncsnapshot (which
//! cannot encrypt, so they show what requiring encryption refuses), the TigerVNC viewer and
//! noVNC in Chromium.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::builds::*;
use crate::vnc_viewer::{RfbStream, VncViewer};
use remote_access_core::{
    Authority, AuthorityOptions, BuildRequest, Credentials, Gateway, RunningGateway, TlsIdentity,
};
use remote_access_test_peers::*;
use remote_access_test_peers::{
    Image, NoVnc, Screen, TigerViewer, gvnccapture, on_display_port, paint, vncsnapshot,
};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A gateway with a generated VNC certificate (for `localhost` and 127.0.0.1), VNC ports, and
/// optionally encryption required.
struct Fixture {
    authority: Authority,
    _running: RunningGateway,
    identity: TlsIdentity,
    scratch: tempfile::TempDir,
}

impl Fixture {
    async fn new(require_encryption: bool) -> Fixture {
        let mut options = AuthorityOptions::default();
        options.vnc_ports = vec![free_port(), free_port()];
        let authority = authority(options);
        let identity = TlsIdentity::generate(&["localhost", "127.0.0.1"]).unwrap();
        let mut gateway_options = gateway_options();
        gateway_options.vnc_tls = Some(identity.clone());
        gateway_options.vnc_require_encryption = require_encryption;
        let running =
            Gateway::new(authority.clone(), gateway_options).unwrap().start("127.0.0.1:0").await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        std::fs::write(scratch.path().join("ca.pem"), identity.certificate_pem()).unwrap();
        Fixture { authority, _running: running, identity, scratch }
    }

    /// Issues a build whose builder runs `server`; returns the credentials and the gateway's
    /// VNC port for it.
    async fn issue(&self, id: &str, server: &VncServer) -> (Credentials, u16) {
        let mut request: BuildRequest = crate::builds::request(id, server.builder());
        request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
        let creds = self.authority.issue(request).await.unwrap();
        let port = self.authority.session(creds.build_id()).await.unwrap().vnc_port().expect("a VNC port");
        (creds, port)
    }

    /// A TLS client that trusts only the gateway's certificate.
    fn tls(&self) -> tokio_rustls::TlsConnector {
        tls_client(&self.identity)
    }

    /// RFB over a WebSocket to `port`: `wss://` with `tls`, else `ws://`.
    async fn websocket(&self, port: u16, tls: bool) -> Result<Box<dyn RfbStream>, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let scheme = if tls { "wss" } else { "ws" };
        let mut request = format!("{scheme}://localhost:{port}/websockify").into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "binary".parse().unwrap());
        let ws: Box<dyn RfbStream> = if tls {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = self.tls().connect(name, tcp).await.map_err(|err| format!("TLS: {err}"))?;
            let (ws, response) =
                tokio_tungstenite::client_async(request, tls).await.map_err(|err| err.to_string())?;
            assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
            Box::new(Ws::new(ws))
        } else {
            let (ws, _) =
                tokio_tungstenite::client_async(request, tcp).await.map_err(|err| err.to_string())?;
            Box::new(Ws::new(ws))
        };
        Ok(ws)
    }
}

/// RFB bytes over a client WebSocket: each write one binary message, reads across messages.
struct Ws<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    pending: Vec<u8>,
    /// A message was queued by a write that waits for its flush.
    sent: Option<usize>,
    /// The close frame the gateway sent, if any.
    closed_with: Arc<std::sync::Mutex<Option<String>>>,
}

impl<S> Ws<S> {
    fn new(ws: tokio_tungstenite::WebSocketStream<S>) -> Self {
        Ws { ws, pending: Vec::new(), sent: None, closed_with: Arc::default() }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncRead for Ws<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use futures_util::Stream;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.drain(..n);
                return std::task::Poll::Ready(Ok(()));
            }
            match std::task::ready!(std::pin::Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => self.pending = bytes.to_vec(),
                Some(Ok(Message::Close(frame))) => {
                    *self.closed_with.lock().unwrap() =
                        frame.map(|f| format!("{}: {}", u16::from(f.code), f.reason));
                    return std::task::Poll::Ready(Ok(()));
                }
                Some(Ok(Message::Text(_))) => panic!("the gateway sent a text message"),
                Some(Ok(_)) => {}
                Some(Err(err)) => return std::task::Poll::Ready(Err(std::io::Error::other(err))),
                None => return std::task::Poll::Ready(Ok(())),
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Ws<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Written through, as a browser does: RFB waits for an answer after most writes. A
        // write pending on its flush completes when polled again (with the same data).
        use futures_util::Sink;
        use tokio_tungstenite::tungstenite::Message;
        if self.sent.is_none() {
            std::task::ready!(std::pin::Pin::new(&mut self.ws).poll_ready(cx))
                .map_err(std::io::Error::other)?;
            let message = Message::Binary(data.to_vec().into());
            std::pin::Pin::new(&mut self.ws).start_send(message).map_err(std::io::Error::other)?;
            self.sent = Some(data.len());
        }
        std::task::ready!(std::pin::Pin::new(&mut self.ws).poll_flush(cx)).map_err(std::io::Error::other)?;
        std::task::Poll::Ready(Ok(self.sent.take().unwrap_or(data.len())))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use futures_util::Sink;
        std::pin::Pin::new(&mut self.ws).poll_flush(cx).map_err(std::io::Error::other)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use futures_util::Sink;
        std::pin::Pin::new(&mut self.ws).poll_close(cx).map_err(std::io::Error::other)
    }
}

/// `vncdo -s 127.0.0.1::PORT -p PASSWORD capture FILE`: its exit code.
async fn vncdo_capture(fx: &Fixture, port: u16, password: &str) -> i32 {
    let shot = fx.scratch.path().join(format!("shot-{port}.png"));
    let mut vncdo = vncdo(port, password)
        .arg("capture")
        .arg(&shot)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .start();
    let status =
        tokio::time::timeout(Duration::from_secs(60), vncdo.wait()).await.expect("vncdo finishes").unwrap();
    status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfb_over_ws_and_wss_shows_the_builders_screen_and_revocation_closes_it() {
    let fx = Fixture::new(false).await;
    let server = x11vnc("ws-builder-pw");
    let (creds, port) = fx.issue("ws-1", &server).await;
    let password = creds.vnc_password().expose();
    for tls in [false, true] {
        let ws = fx.websocket(port, tls).await.unwrap();
        let mut viewer = VncViewer::connect_over(ws, password).await;
        viewer.refresh().await;
        viewer.refresh().await;
    }
    // A wrong password is refused with RFB's reason, inside the WebSocket.
    let ws = fx.websocket(port, true).await.unwrap();
    let refused = VncViewer::login(ws, "wrongpw1").await.err().expect("refused");
    assert!(refused.contains("Authentication failed"), "{refused}");

    // Revocation ends a live WebSocket session with a close frame that says so.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("ws://localhost:{port}/websockify").into_client_request().unwrap();
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let ws = Ws::new(ws);
    let closed_with = ws.closed_with.clone();
    let mut viewer = VncViewer::connect_over(Box::new(ws), password).await;
    viewer.refresh().await;
    fx.authority.revoke(creds.build_id(), "build cancelled").await.unwrap();
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(30), viewer.stream().read_to_end(&mut rest)).await;
    assert!(drained.is_ok(), "the WebSocket session ends at revocation");
    let closed_with = closed_with.lock().unwrap().clone();
    assert_eq!(closed_with.as_deref(), Some("1000: the VNC session ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiring_encryption_refuses_plain_vnc_and_ws_but_serves_wss() {
    let fx = Fixture::new(true).await;
    let server = x11vnc("req-builder-pw");
    let (creds, port) = fx.issue("req-1", &server).await;
    let password = creds.vnc_password().expose();
    // vncdotool (types 1, 2, 30 only) finds no type it can use; vncsnapshot (RFB 3.3) is told why.
    assert_ne!(vncdo_capture(&fx, port, password).await, 0, "plain VNC Authentication is refused");
    let passwd = fx.scratch.path().join("user.passwd");
    std::fs::write(&passwd, remote_access_core::vnc_password_file(password)).unwrap();
    let (code, _, stderr) = output_of(
        tokio::process::Command::new("vncsnapshot")
            .args(["-passwd"])
            .arg(&passwd)
            .arg(format!("127.0.0.1::{port}"))
            .arg(fx.scratch.path().join("snap.jpg")),
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("requires an encrypted VNC connection"), "vncsnapshot says why: {stderr}");
    // The tests' viewer over plain TCP is offered only VeNCrypt.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let refused = VncViewer::login(Box::new(tcp), password).await.err().expect("no plain VNC Authentication");
    assert_eq!(refused, "VNC Authentication not offered: [19]");
    // ws:// is refused with a reason; wss:// works.
    let refused = fx.websocket(port, false).await.err().expect("ws:// refused");
    assert!(refused.contains("403"), "{refused}");
    let ws = fx.websocket(port, true).await.unwrap();
    let mut viewer = VncViewer::connect_over(ws, password).await;
    viewer.refresh().await;
}

/// The builder's screen colour in the viewer tests: distinctive, and far from noVNC's greys.
const BUILDER_BLUE: [u8; 3] = [0x1e, 0x6f, 0xd9];

/// Whether most of a screenshot shows the builder's painted screen.
fn shows_builder(image: &Image) -> bool {
    image.share_of(BUILDER_BLUE, 6) > 0.3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tigervnc_viewer_requiring_x509vnc_shows_the_builders_screen() {
    let fx = Fixture::new(true).await;
    let server = x11vnc("tiger-tls-pw");
    paint(server.display, BUILDER_BLUE);
    let (creds, port) = fx.issue("tiger-tls", &server).await;
    let password = creds.vnc_password().expose();
    let ca = fx.scratch.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // The viewer insists on VeNCrypt X509Vnc and trusts only the gateway's certificate.
    let screen = Screen::new(1024, 768);
    let mut viewer = TigerViewer::start(
        &screen,
        &format!("localhost::{port}"),
        password,
        &["-SecurityTypes", "X509Vnc", "-X509CA", ca],
    );
    viewer.wait_for_log("Choosing security type X509Vnc (261)").await;
    viewer.wait_for_log(TigerViewer::CONNECTED).await;
    let shot = screen.wait_for(shows_builder).await;
    assert!(shot.is_ok(), "the viewer shows the builder's screen: {shot:?}");
    drop(viewer);

    // A viewer that will only do plain VNC Authentication finds nothing it may use.
    let screen = Screen::new(800, 600);
    let mut plain =
        TigerViewer::start(&screen, &format!("localhost::{port}"), password, &["-SecurityTypes", "VncAuth"]);
    let log = plain.wait_for_log("No matching security types").await;
    assert!(!log.contains(TigerViewer::CONNECTED), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn novnc_in_chromium_shows_the_builders_screen_over_wss_and_is_cut_at_revocation() {
    let fx = Fixture::new(false).await;
    let server = x11vnc("novnc-pw");
    paint(server.display, BUILDER_BLUE);
    let (creds, port) = fx.issue("novnc-1", &server).await;
    let password = creds.vnc_password().expose();
    let ca = fx.scratch.path().join("ca.pem");

    // A wrong password over ws:// shows noVNC's failure, with the gateway's reason.
    let screen = Screen::new(1024, 768);
    let wrong = NoVnc::open(&screen, "127.0.0.1", port, "websockify", "wrongpw1", None);
    let failed = wrong.wait_for_status(|status| status.starts_with("Security failure")).await;
    assert_eq!(failed.as_deref(), Ok("Security failure: Authentication failed"), "{}", wrong.log());
    assert!(!shows_builder(&screen.screenshot()));
    drop(wrong);

    // The right one over wss://, with the gateway's certificate pinned: the builder's screen.
    let screen = Screen::new(1024, 768);
    let browser = NoVnc::open(&screen, "localhost", port, "websockify", password, Some(&ca));
    let connected = browser.wait_for_status(|status| status.starts_with("Connected")).await;
    assert!(connected.is_ok(), "{connected:?}\n{}", browser.log());
    let shot = screen.wait_for(shows_builder).await;
    assert!(shot.is_ok(), "noVNC shows the builder's screen: {shot:?}");

    // Revocation disconnects it: the page says so and the builder's screen is gone.
    fx.authority.revoke(creds.build_id(), "build cancelled").await.unwrap();
    let ended = browser.wait_for_status(|status| status.starts_with("Disconnected")).await;
    assert!(ended.is_ok(), "{ended:?}");
    let shot = screen.wait_for(|image| !shows_builder(image)).await;
    assert!(shot.is_ok(), "the builder's screen is gone: {shot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_connects_with_exactly_what_the_instructions_print() {
    // A gateway with no certificate, on a VNC port of 5900..=5999 (as the docs recommend), so
    // that every client reads the display form alike.
    let (port, (authority, _running)) = on_display_port(|port| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut options = AuthorityOptions::default();
                options.vnc_ports = vec![port];
                let authority = authority(options);
                let running = gateway(&authority).start("127.0.0.1:0").await.ok()?;
                Some((authority, running))
            })
        })
    });
    let server = x11vnc("instr-pw");
    paint(server.display, BUILDER_BLUE);
    let mut request: BuildRequest = crate::builds::request("instr-1", server.builder());
    request.builder_vnc_password = Some(remote_access_core::Secret::new(server.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    let session = authority.session(creds.build_id()).await.unwrap();
    assert_eq!(session.vnc_port(), Some(port));
    let options = remote_access_core::ScriptOptions::new("127.0.0.1", 22);
    let key = remote_access_core::HostKey::generate().unwrap();
    let info = remote_access_core::ConnectionInfo::new(&creds, &session, &key, &options).unwrap();
    let text = info.vnc_instructions(&creds).unwrap().unwrap();
    let text = text.expose();
    let value = |label: &str| {
        text.lines()
            .find_map(|line| line.trim_start().strip_prefix(label)?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label} line in {text}"))
            .to_owned()
    };
    let (address, display, password) = (value("address:"), value("display:"), value("password:"));
    assert_eq!(address, format!("127.0.0.1::{port}"));
    assert_eq!(display, format!("127.0.0.1:{}", port - 5900));
    let scratch = tempfile::tempdir().unwrap();

    // vncdotool and vncsnapshot, each form.
    for (n, target) in [&address, &display].into_iter().enumerate() {
        let shot = scratch.path().join(format!("vncdo-{n}.png"));
        let (code, _, stderr) = output_of(
            tokio::process::Command::new("vncdo").args(["-s", target, "-p", &password, "capture"]).arg(&shot),
        )
        .await;
        assert_eq!(code, 0, "vncdo -s {target}: {stderr}");
        let size = png_size(&std::fs::read(&shot).unwrap());
        assert_eq!(size, Some((server.width, server.height)), "vncdo -s {target}");

        let snap = scratch.path().join(format!("snap-{n}.jpg"));
        let (code, output) = vncsnapshot(target, &password, &snap).await;
        assert_eq!(code, 0, "vncsnapshot {target}: {output}");
        assert!(std::fs::read(&snap).unwrap().starts_with(&[0xff, 0xd8]), "a JPEG from vncsnapshot {target}");
    }

    // gtk-vnc has only the display form.
    let png = scratch.path().join("gvnc.png");
    let (code, output) = gvnccapture(&display, &password, &png).await;
    assert_eq!(code, 0, "gvnccapture {display}: {output}");
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), Some((server.width, server.height)));

    // The TigerVNC viewer, each form, showing the builder's screen.
    for target in [&address, &display] {
        let screen = Screen::new(800, 600);
        let mut viewer = TigerViewer::start(&screen, target, &password, &[]);
        viewer.wait_for_log(TigerViewer::CONNECTED).await;
        let shot = screen.wait_for(shows_builder).await;
        assert!(shot.is_ok(), "xtigervncviewer {target} shows the builder's screen: {shot:?}");
    }
}
