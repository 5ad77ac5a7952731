//! The SSH gateway's per-connection entry, as its accept loop calls it, fed arbitrary bytes as
//! the client: identification line, binary packets, key exchange, and whatever follows.
//!
//! Per input: a fresh gateway (fresh per-address counters) on a shared in-memory authority with
//! one live build, one connection on one end of `tokio::io::duplex`; the input is written into
//! the other end, which is then closed, and the gateway's output is read to its end. On a
//! paused tokio clock (timers fire as soon as nothing else can run, so deadlines cost no wall
//! time) the gateway must be done within `BOUND`, with its end of the stream closed and its
//! connection counts back to zero. It must never panic, in any task.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;
use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, Gateway, GatewayOptions, HostKey,
    ManualClock, Trigger,
};
use time::macros::datetime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous next to the gateway's own bound on a connection that has not authenticated
/// (`GatewayOptions::pre_auth_timeout`, 30 s by default): exceeding it is a finding.
const BOUND: Duration = Duration::from_secs(120);

struct Fixed {
    authority: Authority,
    host_key: HostKey,
}

thread_local! {
    static FIXED: Fixed = fixed();
}

fn fixed() -> Fixed {
    let clock = ManualClock::new(datetime!(2026-09-09 9:00 UTC));
    let authority =
        Authority::with_clock(AuthorityOptions::default(), Arc::new(clock))
            .expect("authority");
    let mut request = BuildRequest::new(BuildId::new("ssh-fuzz").expect("id"), Trigger::Manual, true);
    request.builder = Some(Builder::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11))));
    common::block_on(authority.issue(request)).expect("a live build");
    Fixed { authority, host_key: HostKey::generate().expect("host key") }
}

fuzz_target!(|data: &[u8]| {
    FIXED.with(|fixed| {
        let mut options = GatewayOptions::default();
        options.host_key = Some(fixed.host_key.clone());
        let gateway = Gateway::new(fixed.authority.clone(), options).expect("gateway");
        common::block_on_paused(serve_one(gateway, data));
    });
});

async fn serve_one(gateway: Gateway, data: &[u8]) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 50_000));
    let served = tokio::spawn({
        let gateway = gateway.clone();
        async move { fuzzing::serve_ssh(&gateway, server, peer).await }
    });
    let (mut from_gateway, mut to_gateway) = tokio::io::split(client);
    let talk = async {
        let write = async {
            // The gateway may hang up first: then the rest of the input is refused, as it
            // would be on a socket.
            let _ = to_gateway.write_all(data).await;
            let _ = to_gateway.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = from_gateway.read_to_end(&mut out).await;
            out
        };
        let ((), out) = tokio::join!(write, read);
        served.await.expect("the connection task ended normally");
        out
    };
    let Ok(out) = tokio::time::timeout(BOUND, talk).await else {
        panic!("the gateway still held the connection {BOUND:?} after the client's input ended");
    };
    assert!(out.starts_with(b"SSH-2.0-remote-access\r\n"), "the gateway identifies itself first");
    let stats = gateway.stats();
    assert_eq!((stats.ssh_connections, stats.unauthenticated), (0, 0), "{stats:?}");
}
