//! Tunnels to builders: dialing a builder's private address (forward mode), routing over a
//! builder agent's connection (reverse mode), splicing bytes, and the agent itself.

mod agent;

pub(crate) use agent::{ACCESS_ENDED, REPLACED};
pub use agent::{AgentExit, AgentOptions, run_agent};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::build::{BuildId, Builder};

/// The copy buffer from a VNC user to the builder: keys and pointer moves, a few bytes each.
pub(crate) const SOCKET_BUFFER: usize = 64 * 1024;
/// The copy buffer from the builder's screen to a VNC user. A full frame is megabytes (1.9 MB
/// at 800x600), asked for only once the last has arrived, so each frame's time through the
/// relay counts: with 1 MiB, TigerVNC's full frames through the gateway went from 0.70 to 0.86
/// of a direct connection against 64 KiB (and 256 KiB gave 0.71; `docs/benchmarks.md`, "VNC").
/// It costs a VNC connection up to 1 MiB while a viewer is connected; SSH connections, whose
/// memory is counted in tens of KiB, do not use it.
pub(crate) const SCREEN_BUFFER: usize = 1024 * 1024;
/// Copy buffers per direction between an SSH channel and a socket: a channel's packets are at
/// most 32 KiB either way, so a larger buffer would only hold memory.
pub(crate) const CHANNEL_BUFFER: usize = 32 * 1024;

/// Connects to a builder, bounded by `timeout`, with Nagle off (interactive SSH and VNC) and
/// TCP keepalive on.
pub(crate) async fn dial(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr} within {timeout:?}"))
    })??;
    tcp.set_nodelay(true)?;
    keep_alive(&tcp)?;
    Ok(tcp)
}

/// Probes an idle TCP peer after 30 s, every 10 s, three times: a peer that vanished (a laptop
/// asleep, a dropped network) is noticed within a minute, even on a connection that carries
/// nothing (a still VNC screen) or whose SSH session is not reading.
pub(crate) fn keep_alive(tcp: &TcpStream) -> io::Result<()> {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&probes)
}

/// Copies bytes both ways until both sides close, either fails, or `stop` resolves (access
/// ended, or the user's connection is gone), with copy buffers of `buffers` bytes (`a` to `b`,
/// `b` to `a`). Returns the bytes carried each way.
///
/// `b` is the builder's side. If a write to it has waited longer than `stall` (the builder
/// reads nothing), the splice ends with `TimedOut`: an SSH connection stops reading all its
/// channels while one channel's queue is full, so a builder port that never reads would
/// otherwise hold the user's whole connection, even after the user left.
pub(crate) async fn splice<A, B>(
    mut a: A,
    b: B,
    stop: impl Future<Output = ()>,
    buffers: (usize, usize),
    stall: Duration,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let waiting_since = Arc::new(Mutex::new(None));
    let mut b = Watched { inner: b, waiting_since: waiting_since.clone() };
    let stalled = stalled(&waiting_since, stall);
    tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, buffers.0, buffers.1) => copied,
        () = stop => Ok((0, 0)),
        () = stalled => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the builder read nothing for {stall:?}; closed"),
        )),
    }
}

/// The smallest and largest reads from a builder into a user's SSH channel. A read that fills
/// the buffer doubles the next one, a read under a quarter of it halves it: an idle or
/// interactive tunnel holds 16 KiB, a bulk transfer reads 256 KiB at a time. russh cuts each
/// read into packets without copying it, and the session writes them to the user's socket in
/// one batch: a quarter of the system calls and wake-ups of 32 KiB copies (`docs/benchmarks.md`,
/// "Per cipher").
const CHANNEL_READ: (usize, usize) = (16 * 1024, 256 * 1024);

/// [`splice`] between a user's SSH channel (its two halves, `user` its reader) and a builder
/// stream: the same ends, `stop` and `stall` rules, but builder data goes to the channel as
/// owned buffers ([`russh::ChannelWriteHalf::data_bytes`]) read in sizes that follow the flow
/// (`CHANNEL_READ`). The channel's window bounds what is queued, as with its `AsyncWrite`.
/// Returns the bytes carried each way (user to builder, builder to user).
pub(crate) async fn splice_channel<R, B>(
    user: R,
    channel: &russh::ChannelWriteHalf<russh::server::Msg>,
    builder: B,
    stop: impl Future<Output = ()>,
    stall: Duration,
) -> io::Result<(u64, u64)>
where
    R: AsyncRead + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let waiting_since = Arc::new(Mutex::new(None));
    let (mut from_builder, mut to_builder) =
        tokio::io::split(Watched { inner: builder, waiting_since: waiting_since.clone() });
    let up = async {
        let mut user = tokio::io::BufReader::with_capacity(CHANNEL_BUFFER, user);
        let copied = tokio::io::copy_buf(&mut user, &mut to_builder).await?;
        to_builder.shutdown().await?;
        Ok::<_, io::Error>(copied)
    };
    let down = async {
        let (mut size, mut copied) = (CHANNEL_READ.0, 0u64);
        // A few buffers taken in turn, each reused once russh has sent (and dropped) what was
        // split off it: a fresh buffer per read cost page faults and zeroed pages on every read
        // (7 % of the gateway's CPU in a bulk transfer).
        let mut buffers: [bytes::BytesMut; 3] = Default::default();
        let mut at = 0;
        loop {
            let count = buffers.len();
            if let Some(free) = (0..count).map(|i| (at + i) % count).find(|&i| buffers[i].try_reclaim(size)) {
                at = free;
            }
            let buffer = &mut buffers[at];
            buffer.reserve(size);
            let read = from_builder.read_buf(buffer).await?;
            if read == 0 {
                channel.eof().await.map_err(channel_gone)?;
                return Ok::<_, io::Error>(copied);
            }
            copied += read as u64;
            size = if read >= size {
                (size * 2).min(CHANNEL_READ.1)
            } else if read < size / 4 {
                (size / 2).max(CHANNEL_READ.0)
            } else {
                size
            };
            channel.data_bytes(buffer.split().freeze()).await.map_err(channel_gone)?;
            at = (at + 1) % buffers.len();
        }
    };
    let stalled = stalled(&waiting_since, stall);
    tokio::select! {
        copied = async { tokio::try_join!(up, down) } => copied,
        () = stop => Ok((0, 0)),
        () = stalled => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the builder read nothing for {stall:?}; closed"),
        )),
    }
}

/// The session behind a channel is gone (the user's connection ended).
fn channel_gone(err: russh::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, format!("the user's channel is gone: {err}"))
}

/// Resolves once a write watched through `waiting_since` has waited `stall` or longer.
async fn stalled(waiting_since: &Mutex<Option<Instant>>, stall: Duration) {
    loop {
        tokio::time::sleep((stall / 4).max(Duration::from_millis(100))).await;
        let since = *waiting_since.lock().unwrap_or_else(PoisonError::into_inner);
        if since.is_some_and(|since: Instant| since.elapsed() >= stall) {
            return;
        }
    }
}

/// A stream whose writes are watched: since when one has been waiting, if one is.
struct Watched<S> {
    inner: S,
    waiting_since: Arc<Mutex<Option<Instant>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        let mut since = self.waiting_since.lock().unwrap_or_else(PoisonError::into_inner);
        match polled {
            Poll::Pending => {
                since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => *since = None,
        }
        drop(since);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A byte stream to a builder: a TCP connection (forward mode) or a channel over the builder
/// agent's connection (reverse mode).
pub(crate) trait BuilderStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> BuilderStream for T {}

/// The live agent connection of a build.
struct AgentLink {
    handle: russh::server::Handle,
    generation: u64,
    /// Cuts the agent's connection (when a newer agent replaces it).
    cut: std::sync::Arc<dyn Fn() + Send + Sync>,
}

/// Where users' connections to builders go: dialed directly, or over a builder's agent.
///
/// Rule for a second agent of the same build: the newer one replaces the older, whose
/// connection is cut. An agent that reconnects after a network failure must not be locked out
/// by its own half-dead previous connection; only the holder of the build's agent credential
/// can register at all.
#[derive(Default)]
pub(crate) struct Router {
    agents: std::sync::Mutex<std::collections::HashMap<BuildId, AgentLink>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Router {
    /// Registers a build's agent connection; returns its generation for [`Router::unregister`].
    pub(crate) fn register(
        &self,
        build_id: &BuildId,
        handle: russh::server::Handle,
        cut: std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> u64 {
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let old = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(build_id.clone(), AgentLink { handle, generation, cut });
        if let Some(old) = old {
            tracing::info!(%build_id, "a new agent connection replaces the previous one");
            (old.cut)();
        }
        generation
    }

    /// Forgets an agent connection that ended, unless a newer one replaced it already.
    pub(crate) fn unregister(&self, build_id: &BuildId, generation: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if agents.get(build_id).is_some_and(|link| link.generation == generation) {
            agents.remove(build_id);
        }
    }

    /// Opens a stream to `port` on the build's builder, by whichever route it has.
    pub(crate) async fn open(
        &self,
        build_id: &BuildId,
        builder: &Builder,
        port: u16,
        timeout: Duration,
    ) -> io::Result<Box<dyn BuilderStream>> {
        if !builder.reverse_tunnel {
            let tcp = dial(SocketAddr::new(builder.address, port), timeout).await?;
            return Ok(Box::new(tcp));
        }
        let handle = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(build_id)
            .map(|link| link.handle.clone());
        let Some(handle) = handle else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the builder's agent is not connected; try again shortly",
            ));
        };
        let opened =
            handle.channel_open_forwarded_tcpip(builder.address.to_string(), u32::from(port), "gateway", 0);
        match tokio::time::timeout(timeout, opened).await {
            Ok(Ok(channel)) => Ok(Box::new(channel.into_stream())),
            Ok(Err(err)) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the builder's agent refused: {err}"),
            )),
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "the builder's agent did not answer in time"))
            }
        }
    }
}
