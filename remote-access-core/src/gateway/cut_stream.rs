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

/// Reads smaller than this go through a buffer of this size (see [`CutStream::ahead`]).
const READ_AHEAD: usize = 4096;

/// `S`, until its [`CutFlag`] is cut.
pub(crate) struct CutStream<S> {
    inner: S,
    flag: Arc<CutFlag>,
    /// What was read from `inner` beyond a small read, served to the next reads: russh reads
    /// each packet in two (its length, then the rest), so without it each small packet (a
    /// transfer brings about 20,000 window adjustments per GiB) cost two or three system
    /// calls. Allocated only while the peer is sending: dropped once a read would wait, so
    /// an idle connection holds none of it.
    ahead: Vec<u8>,
    /// `ahead[start..end]` is read and not yet served.
    start: usize,
    end: usize,
}

impl<S> CutStream<S> {
    pub(crate) fn new(inner: S, flag: Arc<CutFlag>) -> Self {
        Self { inner, flag, ahead: Vec::new(), start: 0, end: 0 }
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
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.start < this.end {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&this.ahead[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            return this.poll_inner(cx, buf);
        }
        let mut ahead = std::mem::take(&mut this.ahead);
        ahead.resize(READ_AHEAD, 0);
        let mut into = ReadBuf::new(&mut ahead);
        match this.poll_inner(cx, &mut into) {
            Poll::Ready(Ok(())) => {
                let read = into.filled().len();
                let n = read.min(buf.remaining());
                buf.put_slice(&ahead[..n]);
                (this.ahead, this.start, this.end) = (ahead, n, read);
                Poll::Ready(Ok(()))
            }
            // Nothing to read (the buffer goes with it), or a failure.
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> CutStream<S> {
    /// Reads from `inner` into `buf`, counting what it reads and how the peer left.
    fn poll_inner(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A socket that hands out its chunks one per read (an empty chunk is the end of the
    /// stream), then has nothing more to read; it counts the reads.
    struct Socket {
        chunks: VecDeque<Vec<u8>>,
        reads: usize,
    }

    impl Socket {
        fn new(chunks: &[&[u8]]) -> Self {
            Self { chunks: chunks.iter().map(|c| c.to_vec()).collect(), reads: 0 }
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let Some(chunk) = self.chunks.front_mut() else { return Poll::Pending };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    fn poll_once(stream: &mut CutStream<Socket>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(buf);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(stream).poll_read(&mut cx, &mut read).map_ok(|()| read.filled().len())
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_read_of_the_socket_and_nothing_is_kept_when_idle() {
        // Two packets as russh reads them: a length, then the rest.
        let packets: Vec<u8> = (0..112u8).collect();
        let flag = Arc::new(CutFlag::default());
        let mut stream = CutStream::new(Socket::new(&[&packets]), flag.clone());
        let mut got = Vec::new();
        for size in [4, 44, 4, 60] {
            let mut part = vec![0; size];
            stream.read_exact(&mut part).await.unwrap();
            got.extend(part);
        }
        assert_eq!(got, packets);
        assert_eq!(stream.inner.reads, 1, "four reads, one read of the socket");
        assert_eq!(flag.bytes_read(), 112);
        assert!(poll_once(&mut stream, &mut [0; 4]).is_pending());
        assert_eq!(stream.ahead.capacity(), 0, "an idle connection holds no buffer");
    }

    #[tokio::test]
    async fn large_reads_go_to_the_socket_after_what_was_read_ahead() {
        let packet: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let flag = Arc::new(CutFlag::default());
        let mut stream = CutStream::new(Socket::new(&[&packet]), flag.clone());
        let mut got = vec![0; 4];
        stream.read_exact(&mut got).await.unwrap();
        let mut rest = vec![0; packet.len() - 4];
        stream.read_exact(&mut rest).await.unwrap();
        got.extend(rest);
        assert_eq!(got, packet);
        assert_eq!(stream.inner.reads, 2, "one read ahead of READ_AHEAD bytes, then the rest at once");
        assert_eq!(flag.bytes_read(), 10_000);
    }

    #[tokio::test]
    async fn the_end_of_the_stream_reaches_the_reader_after_the_bytes_before_it() {
        let flag = Arc::new(CutFlag::default());
        let mut stream = CutStream::new(Socket::new(&[b"abc", b""]), flag.clone());
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
        assert!(flag.closed_by_peer());
        assert!(matches!(poll_once(&mut stream, &mut []), Poll::Ready(Ok(0))), "an empty read reads nothing");
    }

    #[tokio::test]
    async fn a_cut_stream_fails_even_with_bytes_read_ahead() {
        let flag = Arc::new(CutFlag::default());
        let mut stream = CutStream::new(Socket::new(&[b"abcdef"]), flag.clone());
        let mut first = [0; 2];
        stream.read_exact(&mut first).await.unwrap();
        flag.cut();
        let err = stream.read_exact(&mut first).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
