// A test binary of its own, not a module of `tests/it`: it installs a counting
// `#[global_allocator]` and checks that the heap is back to its size after the attack, which
// needs the process to itself (a global allocator is per binary, and in `it` every other test
// would allocate meanwhile). It shares the library-side helpers of `tests/it` by path (they are
// this crate's own tests).
//! The gateway under attack, on loopback, with real peers: an OpenSSH sshd and x11vnc as the
//! builder, the real `ssh` client for the legitimate user's session and the library's RFB
//! client code for the user's VNC session.
//!
//! Attackers connect from other loopback networks (127.0.N.1, each a /24 of its own) than the
//! legitimate user (127.0.0.1), as they would from other hosts: the gateway's per-address and
//! per-network limits are part of what is tested. Throughout, the legitimate SSH and VNC sessions must keep working; after,
//! the gateway must hold nothing for the attackers (its own counters) and the heap must be back
//! to its size before the attack (a counting allocator, so the measure is exact).
//!
//! One test, in phases: the heap measure needs the process to itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed test
#![allow(unsafe_code)] // the counting global allocator

#[allow(dead_code)] // each binary uses a part
#[path = "it/builds.rs"]
mod builds;
#[path = "it/vnc_viewer.rs"]
mod vnc_viewer;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use builds::*;
use remote_access_core::{AuthorityOptions, BuildRequest};
use remote_access_test_peers::*;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vnc_viewer::VncViewer;

/// The test gateway's options with the new-connection rate limit out of the way: these
/// attacks come from one address or network on purpose, to test the admission pools and the
/// backoff, which the rate limit in front of them would otherwise hide. The rate limit has
/// its own attack test (`tests/adversarial.rs`).
fn flood_options() -> remote_access_core::GatewayOptions {
    let mut options = gateway_options();
    options.new_connections_per_second = 1_000_000;
    options.new_connections_burst = 1_000_000;
    options
}
/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A cheap, seeded generator for attack bytes (no need for a CSPRNG here).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A TCP connection to `to` from the legitimate user's 127.0.0.1 (`from` 1) or from an
/// attacker's 127.0.`from`.1 (a /24 of its own).
async fn connect_from(from: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let source = if from == 1 { [127, 0, 0, 1] } else { [127, 0, from, 1] };
    remote_access_test_peers::connect_from(IpAddr::from(source), to).await
}

/// Writes `bytes` (ignoring a peer that closes first), then reads until the gateway closes;
/// panics if it does not within a minute.
async fn send_and_wait_for_close(mut tcp: TcpStream, bytes: &[u8]) {
    let _ = tcp.write_all(bytes).await;
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the gateway kept a connection that sent {} hostile bytes", bytes.len());
}

/// An SSH client connection from `from` (see [`connect_from`]), before authentication (None if the gateway
/// closed it at once, as it does for an address it backs off from).
async fn ssh_client(from: u8, to: SocketAddr) -> Option<russh::client::Handle<AnyKey>> {
    let tcp = connect_from(from, to).await.ok()?;
    let config = Arc::new(russh::client::Config::default());
    tokio::time::timeout(Duration::from_secs(30), russh::client::connect_stream(config, tcp, AnyKey))
        .await
        .ok()?
        .ok()
}

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_survives_attack_and_keeps_serving_its_user() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let builder = Sshd::start();
    let screen = x11vnc("builder1");
    let vnc_port = free_port();
    let mut authority_options = AuthorityOptions::default();
    authority_options.vnc_ports = vec![vnc_port];
    let authority = authority(authority_options);
    let mut options = flood_options();
    options.pre_auth_timeout = Duration::from_secs(3);
    let gateway = remote_access_core::Gateway::new(authority.clone(), options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let addr = running.local_addr();
    let mut events = authority.subscribe();

    // The legitimate user: one build with SSH and VNC.
    let mut route = builder.builder();
    route.vnc_port = Some(screen.port);
    let mut request: BuildRequest = request("legit", route);
    request.builder_vnc_password = Some(remote_access_core::Secret::new(screen.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    builder.authorize(&creds.authorized_keys_line());
    let scratch = tempfile::tempdir().unwrap();
    let script = posix_script(&authority, &gateway, addr.port(), &creds, scratch.path(), "legit.sh").await;

    let mut shell = script_command(&script)
        .arg("while :; do echo tick; sleep 0.2; done")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .start();
    let mut ticks = BufReader::new(shell.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), ticks.next_line()).await;
    assert_eq!(first.expect("the legitimate shell runs").unwrap().as_deref(), Some("tick"));
    let mut viewer = VncViewer::connect(vnc_port, creds.vnc_password().expose()).await;
    viewer.refresh().await;
    let legit =
        settle(&gateway, |s| s.ssh_connections == 1 && s.vnc_connections == 1 && s.builder_channels == 1)
            .await;
    assert_eq!(legit.unauthenticated, 0);
    let baseline = live_bytes();

    // 1. Random bytes, of every size up to 256 KiB, at the SSH and the VNC port.
    let mut attacks = Vec::new();
    for i in 0..40u8 {
        let size = [0, 1, 7, 64, 255, 4096, 35_000, 262_144][usize::from(i % 8)];
        let bytes = rng.bytes(size);
        let target = if i % 2 == 0 { addr } else { SocketAddr::from(([127, 0, 0, 1], vnc_port)) };
        attacks.push(tokio::spawn(async move {
            if let Ok(tcp) = connect_from(2 + i % 4, target).await {
                send_and_wait_for_close(tcp, &bytes).await;
            }
        }));
    }
    // 2. Truncated and oversized SSH packets after a valid identification.
    let ssh_messages: Vec<Vec<u8>> = vec![
        [b"SSH-2.0-attacker\r\n".as_slice(), &[0, 0, 3, 232, 4, 20]].concat(), // a KEXINIT cut short
        [b"SSH-2.0-attacker\r\n".as_slice(), &[0xff, 0xff, 0xff, 0xff, 4]].concat(), // 4 GiB packet
        [b"SSH-2.0-attacker\r\n".as_slice(), &[0, 0x10, 0, 0, 4]].concat(),    // 1 MiB packet
        [b"SSH-2.0-".as_slice(), &[b'x'; 100_000]].concat(),                   // endless identification
        b"SSH-1.5-ancient\r\n".to_vec(),
    ];
    // 3. RFB: wrong and oversized versions, a client that stops mid-handshake at every step.
    let rfb_messages: Vec<Vec<u8>> = vec![
        b"RFB 999.999\n".to_vec(),
        b"RFB 003.008".to_vec(),       // no newline, then silence
        b"RFB 003.008\n".to_vec(),     // then silence before choosing a type
        b"RFB 003.008\n\x02".to_vec(), // then silence instead of the response
        [b"RFB 003.008\n\x02".as_slice(), &[0u8; 8]].concat(), // half a response
        b"RFB 003.008\n\x10".to_vec(), // a type that was not offered
        [b"RFB 003.008\n".as_slice(), &[0xff; 4096]].concat(),
    ];
    for (i, message) in ssh_messages.into_iter().enumerate() {
        attacks.push(tokio::spawn(async move {
            if let Ok(tcp) = connect_from(6, addr).await {
                send_and_wait_for_close(tcp, &message).await;
            }
            let _ = i;
        }));
    }
    for message in rfb_messages {
        attacks.push(tokio::spawn(async move {
            if let Ok(tcp) = connect_from(7, SocketAddr::from(([127, 0, 0, 1], vnc_port))).await {
                send_and_wait_for_close(tcp, &message).await;
            }
        }));
    }
    // 4. A slow client: one byte a second; the pre-auth deadline (3 s here) cuts it.
    attacks.push(tokio::spawn(async move {
        let mut tcp = connect_from(8, addr).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_secs(60), async {
            for byte in b"SSH-2.0-one-byte-a-second".iter().cycle() {
                if tcp.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await;
        assert!(cut.is_ok(), "the slow client was cut at the pre-auth deadline");
    }));
    for attack in attacks.drain(..) {
        attack.await.unwrap();
    }

    // 5. One address that keeps failing is backed off: its new connections are closed at once.
    let mut hammered = 0;
    while let Some(mut client) = ssh_client(9, addr).await {
        hammered += 1;
        assert!(hammered <= 10, "an address with {} failed logins is still let in", hammered * 6);
        for _ in 0..6 {
            match client.authenticate_password("root", "hunter2").await {
                Ok(outcome) => assert!(!outcome.success()),
                Err(_) => break,
            }
        }
    }

    //    And 1,000 failed authentication attempts from many connections and addresses at once:
    //    usernames of every length, keys that are nobody's, passwords (not a method here).
    let lengths = [0usize, 1, 8, 63, 64, 65, 255, 1024, 8192, 30_000];
    let mut tasks = Vec::new();
    for task in 0..25usize {
        tasks.push(tokio::spawn(async move {
            // 40 attempts each, on as many connections as it takes: on a busy machine some are
            // cut at the pre-auth deadline (3 s here) before their sixth.
            let mut attempts = 0usize;
            for connection in 0..30usize {
                if attempts >= 40 {
                    break;
                }
                // Each address takes one connection before any takes a second, so that no
                // network reaches the backoff (20 failures) here.
                let from = 10 + ((connection * 25 + task) % 240) as u8;
                let Some(mut client) = ssh_client(from, addr).await else { continue };
                for round in 0..6usize {
                    let user: String = "a".repeat(lengths[(task + connection + round) % lengths.len()]);
                    let result = if round % 2 == 0 {
                        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                            .unwrap();
                        client
                            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
                            .await
                    } else {
                        client.authenticate_password(user, "p".repeat(round * 1000)).await
                    };
                    attempts += 1;
                    match result {
                        Ok(outcome) => assert!(!outcome.success(), "an attacker got in"),
                        Err(_) => break, // the gateway cut the connection
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await.unwrap();
    }
    assert!(attempts >= 1000, "{attempts} attempts");

    // 6. Guessing the legitimate build's VNC password, from one address: the platform hears of
    //    it (after 10 in a row).
    for _ in 0..10 {
        let Ok(mut tcp) = connect_from(251, SocketAddr::from(([127, 0, 0, 1], vnc_port))).await else {
            continue;
        };
        let mut version = [0u8; 12];
        if tcp.read_exact(&mut version).await.is_err() {
            continue;
        }
        let _ = tcp.write_all(b"RFB 003.008\n").await;
        let mut types = [0u8; 2];
        let _ = tcp.read_exact(&mut types).await;
        let _ = tcp.write_all(&[2]).await;
        let mut challenge = [0u8; 16];
        let _ = tcp.read_exact(&mut challenge).await;
        let _ = tcp.write_all(&remote_access_core::vnc_auth_response("guess123", &challenge)).await;
        send_and_wait_for_close(tcp, &[]).await;
    }
    let guessing = next_event(&mut events, "guessing").await;
    assert_eq!(guessing.build_id.as_str(), "legit");
    assert!(guessing.reason.contains("VNC password"), "{}", guessing.reason);

    // 7. The legitimate user, authenticated, asks for what it may not have: forbidden targets,
    //    forwarding, agent, X11, a session on the gateway. Each is refused.
    let key = russh::keys::decode_secret_key(creds.private_key_openssh().unwrap().expose(), None).unwrap();
    let mut user = ssh_client(1, addr).await.expect("the user is not backed off");
    let auth = user.authenticate_publickey(creds.username(), PrivateKeyWithHashAlg::new(Arc::new(key), None));
    assert!(auth.await.unwrap().success());
    let forbidden = [
        ("127.0.0.2", u32::from(builder.port)), // another address
        ("127.0.0.1", u32::from(addr.port())),  // the gateway itself
        ("127.0.0.1", 1),                       // another port on the builder
        ("169.254.169.254", 80),                // cloud metadata
        ("::1", u32::from(builder.port)),
        ("::ffff:127.0.0.1", u32::from(builder.port)),
        ("[::ffff:7f00:1]", u32::from(builder.port)),
        ("localhost", u32::from(builder.port)),
        ("127.1", u32::from(builder.port)),
        ("2130706433", u32::from(builder.port)), // 127.0.0.1 as a number
        ("127.0.0.1", u32::from(builder.port) + 65_536), // a port that wraps
    ];
    for (host, port) in forbidden {
        let opened = user.channel_open_direct_tcpip(host, port, "127.0.0.1", 40000).await;
        assert!(opened.is_err(), "direct-tcpip to {host}:{port} was allowed");
    }
    assert!(user.tcpip_forward("0.0.0.0", 0).await.is_err(), "remote forwarding refused");
    // A session channel (where agent, X11 and commands would be asked for) is refused at once.
    assert!(user.channel_open_session().await.is_err(), "a session channel on the gateway refused");
    // Each refusal is an event for the platform, in order.
    let mut refused = Vec::new();
    while refused.len() < forbidden.len() + 2 {
        refused.push(next_event(&mut events, "refused").await.reason);
    }
    assert!(refused[..forbidden.len()].iter().all(|r| r.starts_with("direct-tcpip to ")), "{refused:?}");
    let rest: Vec<&str> =
        refused[forbidden.len()..].iter().map(|r| r.split(' ').next().unwrap_or("")).collect();
    assert_eq!(rest, ["remote", "a"], "{refused:?}");
    assert_eq!(refused.last().map(String::as_str), Some("a session on the gateway itself refused"));
    drop(user);

    // Through all of it, the user's shell and screen kept working, and a new login works.
    for _ in 0..3 {
        let tick = tokio::time::timeout(Duration::from_secs(30), ticks.next_line()).await;
        assert_eq!(tick.expect("the shell still ticks").unwrap().as_deref(), Some("tick"));
    }
    viewer.refresh().await;
    let out = script_command(&script).arg("echo still-here").stdin(Stdio::null()).finish().await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "still-here",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Afterwards the gateway holds nothing for the attackers, and the heap is back to its size.
    let after = settle(&gateway, |s| {
        s.ssh_connections == 1 && s.vnc_connections == 1 && s.builder_channels == 1 && s.unauthenticated == 0
    })
    .await;
    assert!(after.addresses_with_failures > 0, "the failures are remembered for the backoff");
    let grown = live_bytes() - baseline;
    assert!(grown < 1024 * 1024, "the heap grew by {grown} bytes and stayed so");

    // And when the user leaves, every count returns to zero.
    drop(viewer);
    drop(ticks);
    shell.kill().await.unwrap();
    settle(&gateway, |s| s.ssh_connections == 0 && s.vnc_connections == 0 && s.builder_channels == 0).await;
    running.stop().await.unwrap();
}
