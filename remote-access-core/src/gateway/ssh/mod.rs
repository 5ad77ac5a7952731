//! The SSH listener: a russh server that lets each build's user ProxyJump to that build's own
//! builder and nowhere else. russh types stay inside this module.

mod algorithms;
mod handler;

pub(super) use algorithms::{CIPHERS, KEX, MACS, owned};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::Config;
use russh::{Disconnect, MethodKind, MethodSet, SshId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use super::listen::Stop;
use super::{CutFlag, CutStream, GatewayOptions, Held, Kind, Pool, Shared};
use crate::authority::End;
use crate::credential::HostKey;
use crate::error::Result;
use crate::tunnel;
use handler::{Channels, Handler, Login};

/// The largest channel packet a peer may send us; a larger one is a protocol violation that
/// cuts the connection (russh itself would take up to 256 KiB).
pub(super) const MAX_PACKET: u32 = 32 * 1024;
/// Packets queued per channel toward its consumer (see the russh `Config` below).
const CHANNEL_QUEUE: usize = 8;
/// Messages queued per connection toward the user.
const SEND_QUEUE: usize = 32;
/// An SSH connection must have sent at least this many bytes by `silent_timeout`: its
/// identification ("SSH-2.0-x" and CRLF, 11 bytes at least) and the start of its KEXINIT (67
/// bytes even with every list empty; real clients send several hundred).
const OPENING_BYTES: u64 = 64;

/// How long a connection's end waits for the VNC sessions inside its channels to record
/// theirs first (one store write each).
const VNC_TASKS_WAIT: Duration = Duration::from_secs(5);

/// How long a polite DISCONNECT may take before the transport is cut underneath it.
const DISCONNECT_GRACE: Duration = Duration::from_millis(250);

/// The russh server configuration for `options`; refuses algorithm lists it cannot offer.
pub(super) fn config(options: &GatewayOptions, host_key: &HostKey) -> Result<Config> {
    let preferred = algorithms::preferred(&options.kex_algorithms, &options.ciphers, &options.macs)?;
    Ok(Config {
        server_id: SshId::Standard("SSH-2.0-remote-access".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: options.auth_rejection_delay,
        // OpenSSH always starts with a "none" probe; answering it at once costs nothing.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key.key.clone()],
        window_size: options.window_size,
        maximum_packet_size: MAX_PACKET,
        // What a connection may hold in russh's queues, whatever its peer does (russh grants
        // window as data arrives, so these queues, not the window, bound memory): a
        // builder channel queues at most this many packets of at most `MAX_PACKET` bytes
        // (larger ones cut the connection) before the connection stops reading...
        channel_buffer_size: CHANNEL_QUEUE,
        // ...and messages to send to the user (builder data among them) queue up to this
        // many.
        event_buffer_size: SEND_QUEUE,
        max_auth_attempts: options.max_auth_attempts,
        // Keepalives keep live clients from reaching this; it only collects dead ones.
        inactivity_timeout: Some(options.keepalive_interval.saturating_mul(4)),
        keepalive_interval: Some(options.keepalive_interval),
        keepalive_max: 3,
        preferred,
        ..Config::default()
    })
}

/// Why an authenticated connection stopped being served.
enum Ending {
    /// The transport ended: by the user's will (`DISCONNECT`, or every channel closed first)
    /// or lost (a reset, a keepalive timeout, a client killed with channels open).
    TransportEnded(End),
    AccessEnded,
    GatewayStopping,
}

/// Serves one connection: pre-auth deadline, admission, then cut on revocation. Generic over
/// the transport only so that the fuzz targets can drive it over an in-memory stream.
pub(super) async fn serve<S>(shared: Arc<Shared>, tcp: S, peer: SocketAddr, mut stop: Stop)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _counted = shared.admission.count(Kind::Ssh);
    let waiting = match shared.admission.admit(Pool::Ssh, peer.ip()) {
        Ok(waiting) => waiting,
        Err(refusal) => {
            shared.metrics.closed_before_login.add("ssh", refusal.code());
            shared.log_limit.log(|| tracing::info!(%peer, %refusal, "closing an SSH connection at once"));
            return;
        }
    };
    let now = tokio::time::Instant::now();
    let (deadline, silent_deadline) =
        (now + shared.options.pre_auth_timeout, now + shared.options.silent_timeout);
    let flag = CutFlag::counting(shared.metrics.traffic.clone());
    let (admitted_tx, mut admitted_rx) = oneshot::channel::<Login>();
    // Set to how the connection ended, which stops its builder splices and tells a VNC
    // connection inside one of its channels how to record its own end; dropped when this
    // function returns.
    let (closed_tx, closed_rx) = watch::channel(None);
    let channels = Arc::new(Channels::default());
    let (vnc_tasks, mut vnc_tasks_done) = mpsc::channel(1);
    let handler = Handler::new(
        shared.clone(),
        Some(peer),
        admitted_tx,
        closed_rx,
        flag.clone(),
        channels.clone(),
        vnc_tasks,
    );
    let stream = CutStream::new(tcp, flag.clone());

    // The identification must come within the silence deadline.
    let started = tokio::time::timeout_at(
        silent_deadline.min(deadline),
        russh::server::run_stream(shared.ssh.clone(), stream, handler),
    );
    let started = tokio::select! {
        started = started => started,
        () = waiting.evicted() => {
            shared.metrics.closed_before_login.add("ssh", "evicted");
            return;
        }
        () = stop.stopped() => return,
    };
    let running = match started {
        Ok(Ok(running)) => running,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "SSH handshake failed");
            return;
        }
        Err(_) => {
            shared
                .log_limit
                .log(|| tracing::info!(%peer, "no SSH identification within the silence deadline; cut"));
            shared.metrics.closed_before_login.add("ssh", "silent");
            shared.failed_here(peer.ip());
            return;
        }
    };
    let handle = running.handle();
    tokio::pin!(running);

    let mut opening_checked = false;
    let login = loop {
        tokio::select! {
            // The login first: a client that logs in and leaves at once (curl, refused a
            // session) has ended its transport by now too, and its end must be recorded from
            // how it ended, not by the connection's guard.
            biased;
            admitted = &mut admitted_rx => match admitted {
                Ok(login) => break login,
                Err(_) => return,
            },
            _ = &mut running => return,
            // By the silence deadline the client must have sent its key exchange's start too.
            () = tokio::time::sleep_until(silent_deadline), if !opening_checked => {
                opening_checked = true;
                if flag.bytes_read() < OPENING_BYTES {
                    shared.log_limit.log(|| tracing::info!(%peer, "no SSH key exchange within the silence deadline; cut"));
                    shared.metrics.closed_before_login.add("ssh", "silent");
                    shared.failed_here(peer.ip());
                    flag.cut();
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                shared.log_limit.log(|| tracing::info!(%peer, "not authenticated before the pre-auth deadline; cut"));
                shared.metrics.closed_before_login.add("ssh", "pre_auth_timeout");
                shared.failed_here(peer.ip());
                flag.cut();
                return;
            }
            () = waiting.evicted() => {
                shared.metrics.closed_before_login.add("ssh", "evicted");
                tracing::debug!(%peer, "evicted before authenticating, for a newcomer");
                flag.cut();
                return;
            }
            () = stop.stopped() => {
                flag.cut();
                return;
            }
        }
    };
    drop(waiting);

    let live = match login {
        Login::User(live) => live,
        Login::Agent(mut cut) => {
            // The agent is no user connection: it ends with the session or the gateway, and its
            // handler unregisters the tunnel when the connection goes.
            let reason = tokio::select! {
                // Gone by itself: nothing to say (and `running` must not be polled again).
                _ = &mut running => return,
                () = cut.cut() => tunnel::ACCESS_ENDED,
                () = stop.stopped() => "the gateway is shutting down",
            };
            say_goodbye(&handle, &mut running, reason).await;
            flag.cut();
            return;
        }
    };
    let authority = &shared.authority;
    let Some(_holding) = shared.admission.hold(live.build_id(), Held::Connection) else {
        // Said before anything else happens on the connection; not a logout.
        let max = shared.admission.max(Held::Connection);
        shared.metrics.logins_refused.add("ssh", "too_many_connections");
        authority.refused(live.build_id(), format!("more than {max} connections at once refused"));
        live.detach_on_drop();
        let reason =
            format!("too many connections to this build at once (at most {max}); close one and retry");
        say_goodbye(&handle, &mut running, &reason).await;
        flag.cut();
        if let Err(err) = live.detach().await {
            tracing::warn!(%peer, %err, "could not record the end of a connection");
        }
        return;
    };
    let mut cut = live.cut_signal();
    let ending = tokio::select! {
        ended = &mut running => Ending::TransportEnded(how_it_ended(&ended, &channels)),
        () = cut.cut() => Ending::AccessEnded,
        () = stop.stopped() => Ending::GatewayStopping,
    };
    let how = match ending {
        Ending::TransportEnded(how) => {
            // VNC sessions in this connection's channels record their ends first, the way this
            // one ended: they are then never the session's last connection, and this end
            // decides between a logout and a loss. (russh has dropped the handler, and with it
            // the other sender.)
            closed_tx.send_replace(Some(how));
            let _ = tokio::time::timeout(VNC_TASKS_WAIT, vnc_tasks_done.recv()).await;
            how
        }
        Ending::AccessEnded => {
            say_goodbye(&handle, &mut running, tunnel::ACCESS_ENDED).await;
            flag.cut();
            if let Some(at) = cut.cut_at() {
                shared.metrics.cut_latency.observe(at.elapsed());
            }
            End::Left
        }
        Ending::GatewayStopping => {
            // Should this task be aborted from here on, the guard must not report a loss.
            live.detach_on_drop();
            closed_tx.send_replace(Some(End::Detached));
            say_goodbye(&handle, &mut running, "the gateway is shutting down").await;
            flag.cut();
            End::Detached
        }
    };
    tracing::debug!(%peer, ?how, "SSH connection ended");
    closed_tx.send_replace(Some(how));
    let outcome = live.end(how).await;
    if let Err(err) = outcome {
        tracing::warn!(%peer, %err, "could not record the end of a connection");
    }
}

/// A logout or a loss, from how russh's loop ended and what the channels did. russh ends
/// without an error only when the client sent DISCONNECT (OpenSSH does when it exits, Ctrl-C
/// included). A client that ended every channel it opened left by its own will (`exit` in the
/// shell) whatever came after. One that never opened a channel left too when its peer closed
/// the connection (a close or a reset: curl closes with bytes unread), but not when the network
/// went silent (keepalives unanswered: a laptop asleep with an idle tunnel). Any other end (a
/// client killed or a network lost with a channel open) is a loss.
fn how_it_ended(ended: &Result<(), russh::Error>, channels: &Channels) -> End {
    let closed_by_peer = matches!(ended, Err(russh::Error::IO(_)));
    if ended.is_ok() || channels.all_closed_by_client() || (channels.none_opened() && closed_by_peer) {
        End::Left
    } else {
        End::Lost
    }
}

/// Serves one connection on any transport, as the accept loop would, with a gateway that is
/// not stopping. Only for the fuzz targets (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) async fn serve_stream<S>(gateway: &super::Gateway, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (_stopping, stop) = Stop::new();
    serve(gateway.shared.clone(), stream, peer, stop).await;
}

/// Sends DISCONNECT with a reason the user's `ssh` prints and waits for the session to finish
/// sending it, bounded: a peer whose window is full must not hold up the cut.
async fn say_goodbye<F: Future + Unpin>(handle: &russh::server::Handle, running: &mut F, reason: &str) {
    let polite = async {
        let _ = handle.disconnect(Disconnect::ByApplication, reason.to_owned(), String::new()).await;
        let _ = running.await;
    };
    let _ = tokio::time::timeout(DISCONNECT_GRACE, polite).await;
}
