//! Tunnels to builders: dialing a builder's private address (forward mode) and splicing a
//! user's channel to it. Reverse tunnels (a builder agent dialing out) come with their issue.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Copy buffers per direction: large enough that a window's worth of data moves in few calls.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Connects to a builder, bounded by `timeout`, with Nagle off (interactive SSH and VNC).
pub(crate) async fn dial(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr} within {timeout:?}"))
    })??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Copies bytes both ways until both sides close, either fails, or `stop` resolves (access
/// ended, or the user's connection is gone). Returns the bytes carried each way.
pub(crate) async fn splice<A, B>(mut a: A, mut b: B, stop: impl Future<Output = ()>) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER) => copied,
        () = stop => Ok((0, 0)),
    }
}
