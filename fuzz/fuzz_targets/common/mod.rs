//! What the fuzz targets share: one tokio runtime per thread, and an in-memory peer.
#![allow(dead_code)] // each target uses a part

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Runtime;

thread_local! {
    /// Built once: building a runtime per input would dominate the run time.
    static RUNTIME: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    /// The same with tokio's clock paused: timers fire as soon as nothing else can run, so a
    /// generous deadline costs no wall-clock time.
    static PAUSED: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime with a paused clock");
}

/// Runs `future` to completion on this thread's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// Runs `future` on this thread's runtime whose clock is paused.
pub fn block_on_paused<F: Future>(future: F) -> F::Output {
    PAUSED.with(|rt| rt.block_on(future))
}

/// A peer that sends `input`, then end of stream, and records what it is sent. Never pending,
/// so whatever reads it finishes.
pub struct Wire<'a> {
    input: &'a [u8],
    consumed: usize,
    pub written: Vec<u8>,
}

impl<'a> Wire<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, consumed: 0, written: Vec::new() }
    }

    /// How many input bytes the code under test has read.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        let (now, rest) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = rest;
        self.consumed += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
