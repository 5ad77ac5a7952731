//! A transport wrapper that fails all I/O once cut.
//!
//! russh runs each connection in a task of its own that a dropped handle does not stop, and a
//! polite DISCONNECT can wait behind a full peer window. Cutting the transport underneath ends
//! the connection for certain: the session loop's next read fails and it drops the socket.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Traffic;

/// Shared between a [`CutStream`] and whoever may cut it.
#[derive(Debug, Default)]
pub(crate) struct CutFlag {
    cut: AtomicBool,
    /// Bytes read so far: whether a peer has said anything yet.
    read: AtomicU64,
    /// Set when a read found the peer's end of the stream before any read failed: the peer
    /// closed it (a logout, where the close is the user's), rather than the network failing.
    peer_closed: AtomicBool,
    /// Set when a read failed (a reset, a keepalive timeout) before any end of stream.
    peer_failed: AtomicBool,
    reader: Mutex<Option<Waker>>,
    /// The gateway's byte counters, if this connection counts in them.
    traffic: Option<Arc<Traffic>>,
}

impl CutFlag {
    /// A flag for one connection, whose stream also adds what it carries to `traffic`.
    pub(crate) fn counting(traffic: Arc<Traffic>) -> Arc<Self> {
        Arc::new(Self { traffic: Some(traffic), ..Self::default() })
    }

    /// Fails the stream's I/O from now on and wakes its reader.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(waker) = self.reader.lock().unwrap_or_else(PoisonError::into_inner).take() {
            waker.wake();
        }
    }

    /// Bytes the stream has read so far.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Whether the peer closed the stream cleanly (end of stream, no read error first).
    pub(crate) fn closed_by_peer(&self) -> bool {
        self.peer_closed.load(Ordering::SeqCst) && !self.peer_failed.load(Ordering::SeqCst)
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "remote access ended")
}

/// `S`, until its [`CutFlag`] is cut.
pub(crate) struct CutStream<S> {
    inner: S,
    flag: Arc<CutFlag>,
}

impl<S> CutStream<S> {
    pub(crate) fn new(inner: S, flag: Arc<CutFlag>) -> Self {
        Self { inner, flag }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CutStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Register before checking, so a cut between the two still wakes us.
        *self.flag.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let (before, room) = (buf.filled().len(), buf.remaining());
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.flag.read.fetch_add(read, Ordering::Relaxed);
        if let Some(traffic) = &self.flag.traffic {
            traffic.from_users.fetch_add(read, Ordering::Relaxed);
        }
        // Whichever came first, an end of stream or a failure, is how the peer left.
        let (closed, failed) = (&self.flag.peer_closed, &self.flag.peer_failed);
        match &polled {
            Poll::Ready(Ok(())) if read == 0 && room > 0 && !failed.load(Ordering::SeqCst) => {
                closed.store(true, Ordering::SeqCst);
            }
            Poll::Ready(Err(_)) if !closed.load(Ordering::SeqCst) => failed.store(true, Ordering::SeqCst),
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CutStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(traffic)) = (&written, &self.flag.traffic) {
            traffic.to_users.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
