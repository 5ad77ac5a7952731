//! The operator's HTTP endpoint (`GatewayOptions::metrics_address`): `GET /metrics`, the
//! Prometheus text of [`Gateway::metrics_text`], and `GET /healthz`, 200 while the gateway
//! should get new connections ([`Gateway::ready`]) and 503 otherwise, for load balancers; and
//! `GET /revoked-keys`, the fleet's KRL ([`crate::Authority::revoked_keys`]), for builders'
//! sshd (`RevokedKeys`): an agent on the builder fetches it every minute. It is made at most
//! once a second however many ask (it costs store reads), and holds only key hashes.
//!
//! One request per connection, answered and closed. Like every input that crosses a network,
//! the request is read with limits (its head at most 8 KiB, at most 32 requests served at
//! once) and a deadline (5 s), and anything else gets a status and a short reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Gateway;
use super::listen::Stop;

/// The longest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// A request must arrive, and its answer be written, within this.
const DEADLINE: Duration = Duration::from_secs(5);
/// Requests served at once; more wait in the kernel's queue.
const AT_ONCE: usize = 32;

/// What was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Metrics,
    Health,
    RevokedKeys,
}

/// How long a KRL made for one request is handed to the next ones.
const KRL_REUSE: Duration = Duration::from_secs(1);

/// A request that gets no page: the status and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) u16, pub(crate) &'static str);

/// Reads a request head: the page asked for, and whether only the head of the answer is
/// wanted (`HEAD`). Headers are not interpreted.
pub(crate) fn parse(head: &[u8]) -> Result<(Page, bool), Refused> {
    let line_end = head.iter().position(|&b| b == b'\n').ok_or(Refused(400, "no request line"))?;
    let line =
        std::str::from_utf8(&head[..line_end]).map_err(|_| Refused(400, "the request line is not UTF-8"))?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused(400, "a request line is METHOD TARGET HTTP/1.x"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refused(505, "only HTTP/1.x is served"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Refused(405, "only GET and HEAD are served")),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match path {
        "/metrics" => Ok((Page::Metrics, head_only)),
        "/healthz" => Ok((Page::Health, head_only)),
        "/revoked-keys" => Ok((Page::RevokedKeys, head_only)),
        _ => Err(Refused(404, "this endpoint serves /metrics, /healthz and /revoked-keys")),
    }
}

/// Serves `listener` until the gateway drains or stops (with `reuse_port`, the next gateway
/// on the address answers from then on).
pub(super) async fn serve(listener: TcpListener, gateway: Gateway, stop: Stop) {
    let mut stop = stop;
    let at_once = Arc::new(Semaphore::new(AT_ONCE));
    let mut requests = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop.draining() => break,
            permit = at_once.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        tokio::select! {
            () = stop.draining() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    while requests.try_join_next().is_some() {}
                    let gateway = gateway.clone();
                    requests.spawn(async move {
                        let _ = tokio::time::timeout(DEADLINE, answer(tcp, &gateway)).await;
                        drop(permit);
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    requests.abort_all();
}

/// Reads one request and answers it. Generic over the stream for the fuzz target.
pub(crate) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    gateway: &Gateway,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let asked = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(()); // closed before asking
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break parse(&head);
        }
        if head.len() > MAX_HEAD {
            break Err(Refused(431, "the request head is longer than 8 KiB"));
        }
    };
    let (status, reason, content_type, body, head_only) = match asked {
        Ok((Page::Metrics, head_only)) => (
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            gateway.metrics_text().into_bytes(),
            head_only,
        ),
        Ok((Page::Health, head_only)) if gateway.ready() => (200, "OK", TEXT, b"ready\n".to_vec(), head_only),
        Ok((Page::RevokedKeys, head_only)) => match revoked_keys(gateway).await {
            Ok(krl) => (200, "OK", "application/octet-stream", krl, head_only),
            Err(err) => {
                tracing::info!(%err, "the KRL could not be made");
                let why = "the session store does not answer: no KRL (keep the last one)\n";
                (503, "Service Unavailable", TEXT, why.as_bytes().to_vec(), head_only)
            }
        },
        Ok((Page::Health, head_only)) => {
            let why = if gateway.shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
                "not ready: draining\n"
            } else {
                "not ready: the session store does not answer (logins are refused)\n"
            };
            (503, "Service Unavailable", TEXT, why.as_bytes().to_vec(), head_only)
        }
        Err(Refused(status, why)) => {
            (status, status_text(status), TEXT, format!("{why}\n").into_bytes(), false)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    tcp.write_all(&out).await?;
    tcp.shutdown().await
}

/// The fleet's KRL, made again only when the last is older than [`KRL_REUSE`]; requests that
/// arrive while it is made wait for it.
async fn revoked_keys(gateway: &Gateway) -> crate::error::Result<Vec<u8>> {
    let mut last = gateway.shared.krl.lock().await;
    if let Some((made, krl)) = last.as_ref()
        && made.elapsed() < KRL_REUSE
    {
        return Ok(krl.clone());
    }
    let krl = Box::pin(gateway.shared.authority.revoked_keys()).await?;
    *last = Some((tokio::time::Instant::now(), krl.clone()));
    Ok(krl)
}

const TEXT: &str = "text/plain; charset=utf-8";

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_the_two_pages_and_everything_else() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Ok((Page::Metrics, false)));
        assert_eq!(parse(b"HEAD /healthz?verbose HTTP/1.0\n\n"), Ok((Page::Health, true)));
        assert_eq!(parse(b"GET /revoked-keys HTTP/1.1\r\n\r\n"), Ok((Page::RevokedKeys, false)));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(Refused(405, "only GET and HEAD are served"))
        );
        assert_eq!(parse(b"GET /admin HTTP/1.1\r\n\r\n").map_err(|r| r.0), Err(404));
        assert_eq!(parse(b"GET /metrics HTTP/2\r\n\r\n").map_err(|r| r.0), Err(505));
        assert_eq!(parse(b"GET  /metrics HTTP/1.1\r\n\r\n").map_err(|r| r.0), Err(400));
        assert_eq!(parse(b"GET /metrics\r\n\r\n").map_err(|r| r.0), Err(400));
        assert_eq!(parse(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n").map_err(|r| r.0), Err(400));
        assert_eq!(parse(b"no newline").map_err(|r| r.0), Err(400));
    }
}
