//! RFB over WebSocket, for noVNC in a browser: the HTTP upgrade, then the RFB byte stream
//! carried in binary messages, as websockify does, so a dashboard embeds noVNC and connects
//! straight to the gateway's VNC port.
//!
//! The upgrade's request is capped by tungstenite (64 KiB of headers, 124 header lines) and
//! the caller's pre-auth deadline; messages from the browser are capped at [`MAX_MESSAGE`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::handshake::HandshakeError;

/// The paths the VNC WebSocket answers on: noVNC's default (`websockify`) and the root. The
/// connection info's URL (`script/`, which may not depend on this layer) names the first.
const PATHS: [&str; 2] = ["/websockify", "/"];
/// The largest message (and frame) a browser may send. What noVNC sends is small (key and
/// pointer events, update requests) except clipboard text, which this bounds. tungstenite
/// reserves a frame's announced length as soon as its header arrives, so this is also what
/// one connection can make the gateway hold before it authenticates (like SSH's largest
/// packet).
const MAX_MESSAGE: usize = 256 * 1024;
/// How much of a browser's bytes tungstenite reads at a time.
const READ_CHUNK: usize = 8 * 1024;
/// The subprotocol noVNC and websockify name binary framing by; echoed only when offered.
const BINARY: &str = "binary";

/// What the upgrade checks besides the protocol itself.
pub(crate) struct Rules<'a> {
    /// Browser origins allowed (`Origin` header, exactly); empty allows any.
    pub(crate) origins: &'a [String],
    /// Refuse the upgrade, saying that `wss://` is required (a plain `ws://` connection when
    /// the gateway requires encryption).
    pub(crate) refuse_unencrypted: bool,
}

/// Accepts a WebSocket upgrade on `stream` (the HTTP request not yet read) and returns the RFB
/// byte stream inside it.
pub(crate) async fn accept<S>(stream: S, rules: Rules<'_>) -> Result<WebSocketIo<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // tungstenite reads in chunks of `read_buffer_size`, allocated up front (128 KiB by
    // default): what a browser sends is small, and each connection waiting to authenticate
    // would hold the whole chunk. Writes go out as they come (the splice flushes).
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // tungstenite's error says only the status: keep why, and from which origin, for the log.
    let refused = std::sync::Mutex::new(None);
    #[allow(clippy::result_large_err, reason = "tungstenite's `Callback` fixes the signature")]
    let check = |request: &Request, response: Response| {
        check_upgrade(request, response, &rules).map_err(|(refusal, why)| {
            let origin =
                request.headers().get("origin").map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
            let said = format!("upgrade refused ({}): {why}; Origin {origin:?}", refusal.status());
            *refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(said);
            refusal
        })
    };
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await;
    let ws = accepted.map_err(|err| {
        let refused = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        HandshakeError::WebSocket(refused.unwrap_or_else(|| err.to_string()))
    })?;
    Ok(WebSocketIo { ws, pending: Bytes::new(), closed: false })
}

/// The path, the origin and the subprotocol of an upgrade request; a refusal comes with why.
#[allow(clippy::result_large_err, reason = "tungstenite's `Callback` fixes the signature")]
fn check_upgrade(
    request: &Request,
    mut response: Response,
    rules: &Rules<'_>,
) -> Result<Response, (ErrorResponse, &'static str)> {
    let refuse = |status: StatusCode, why: &'static str| {
        let mut refusal = ErrorResponse::new(Some(format!("{why}\n")));
        *refusal.status_mut() = status;
        (refusal, why)
    };
    if !PATHS.contains(&request.uri().path()) {
        return Err(refuse(StatusCode::NOT_FOUND, "the VNC WebSocket is at /websockify"));
    }
    if rules.refuse_unencrypted {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this gateway requires an encrypted connection: use wss://",
        ));
    }
    if !rules.origins.is_empty() {
        let origin = request.headers().get("origin").and_then(|value| value.to_str().ok());
        if !origin.is_some_and(|origin| rules.origins.iter().any(|allowed| allowed == origin)) {
            return Err(refuse(StatusCode::FORBIDDEN, "this page's origin may not open VNC on this gateway"));
        }
    }
    let offered = request.headers().get_all("sec-websocket-protocol").iter().filter_map(|v| v.to_str().ok());
    let mut offered = offered.flat_map(|list| list.split(',')).map(str::trim).peekable();
    if offered.peek().is_some() {
        // A client that names subprotocols gets `binary` or nothing: the base64 framing of
        // old noVNC versions is not spoken, and answering with a name the client did not
        // offer would make the browser fail the connection.
        if !offered.any(|name| name == BINARY) {
            return Err(refuse(StatusCode::BAD_REQUEST, "only the `binary` WebSocket subprotocol is spoken"));
        }
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(BINARY));
    }
    Ok(response)
}

/// The RFB byte stream inside a WebSocket: each write is one binary message, and reads take
/// the bytes of binary messages in order, wherever their boundaries fall. Text messages are a
/// protocol error; pings are answered by tungstenite; a close message is the end of the stream.
pub(crate) struct WebSocketIo<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    pending: Bytes,
    /// The close frame has been queued.
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let taken = self.pending.split_to(n);
                buf.put_slice(&taken);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => self.pending = bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a WebSocket text message: RFB travels in binary messages",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        let message = Message::Binary(Bytes::copy_from_slice(data));
        Pin::new(&mut self.ws).start_send(message).map_err(io::Error::other)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A close frame with a reason: noVNC shows it ("code: 1000, reason: ...").
        if !self.closed {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let frame = CloseFrame { code: CloseCode::Normal, reason: "the VNC session ended".into() };
            Pin::new(&mut self.ws).start_send(Message::Close(Some(frame))).map_err(io::Error::other)?;
            self.closed = true;
        }
        Pin::new(&mut self.ws).poll_close(cx).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The gateway's answer to an upgrade request with `headers` (each ending in CRLF).
    async fn answer(path: &str, headers: &str, rules: Rules<'_>) -> String {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        theirs.write_all(request.as_bytes()).await.unwrap();
        let accepted = accept(ours, rules).await;
        drop(accepted);
        let mut out = String::new();
        theirs.read_to_string(&mut out).await.unwrap();
        out
    }

    fn any() -> Rules<'static> {
        Rules { origins: &[], refuse_unencrypted: false }
    }

    #[tokio::test]
    async fn binary_is_echoed_only_when_offered() {
        let plain = answer("/websockify", "", any()).await;
        assert!(plain.starts_with("HTTP/1.1 101"), "{plain}");
        assert!(!plain.to_ascii_lowercase().contains("sec-websocket-protocol"), "{plain}");
        let offered = answer("/", "Sec-WebSocket-Protocol: base64, binary\r\n", any()).await;
        assert!(offered.to_ascii_lowercase().contains("sec-websocket-protocol: binary"), "{offered}");
        let base64 = answer("/", "Sec-WebSocket-Protocol: base64\r\n", any()).await;
        assert!(base64.starts_with("HTTP/1.1 400"), "{base64}");
    }

    #[tokio::test]
    async fn paths_origins_and_unencrypted_upgrades_are_refused_with_why() {
        let path = answer("/admin", "", any()).await;
        assert!(path.starts_with("HTTP/1.1 404") && path.contains("/websockify"), "{path}");
        let origins = [String::from("https://ci.example.com")];
        let rules = || Rules { origins: &origins, refuse_unencrypted: false };
        let good = answer("/websockify", "Origin: https://ci.example.com\r\n", rules()).await;
        assert!(good.starts_with("HTTP/1.1 101"), "{good}");
        for other in ["Origin: https://evil.example\r\n", ""] {
            let refused = answer("/websockify", other, rules()).await;
            assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        }
        let plain = answer("/websockify", "", Rules { origins: &[], refuse_unencrypted: true }).await;
        assert!(plain.starts_with("HTTP/1.1 403") && plain.contains("wss://"), "{plain}");
    }
}
