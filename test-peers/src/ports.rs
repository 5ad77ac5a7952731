//! Loopback ports: a free one, waiting until something listens, connecting from a given address.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free loopback port for a server this test starts, and no other test's: outside the
/// kernel's ephemeral range, so no outgoing connection (which takes its local port from that
/// range) can hold it by the time the server binds, and claimed with a file under
/// `$TMPDIR/remote-access-test-ports` naming this process, so that no other test process (Rust,
/// Python or Node: theirs do the same) is given it while this one lives. A claim whose process
/// has gone is cleared. Another program can still take the port: start servers with
/// [`Server::on_free_port`](crate::Server::on_free_port), which retries.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let candidates = ports_outside_the_ephemeral_range();
    let dir = std::env::temp_dir().join("remote-access-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    // A different start in each process, so that processes rarely meet on a claim.
    let start = std::process::id().wrapping_mul(7919) as usize;
    for _ in 0..candidates.len() {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
        let port = candidates[start.wrapping_add(n) % candidates.len()];
        if claim(&dir.join(port.to_string())) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port outside the ephemeral range");
}

/// Ports from 10000 up that the kernel does not hand out to outgoing connections
/// (`net.ipv4.ip_local_port_range`).
fn ports_outside_the_ephemeral_range() -> Vec<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let bounds: Vec<u16> = range.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let (low, high) = match bounds[..] {
        [low, high] => (low, high),
        _ => (32768, 60999), // Linux's default
    };
    (10000..=u16::MAX).filter(|port| *port < low || *port > high).collect()
}

/// Claims a port for this process by creating `file` with its PID in it; clears (without
/// claiming) a claim whose process has gone.
fn claim(file: &Path) -> bool {
    let me = std::process::id().to_string();
    match std::fs::OpenOptions::new().write(true).create_new(true).open(file) {
        Ok(mut claim) => claim.write_all(me.as_bytes()).is_ok(),
        Err(_) => {
            let owner = std::fs::read_to_string(file).unwrap_or_default();
            let owner = owner.trim();
            // An empty file is a claim being written: it is some live process's.
            if !owner.is_empty() && owner != me && !Path::new("/proc").join(owner).exists() {
                let _ = std::fs::remove_file(file);
            }
            false
        }
    }
}

/// Waits until something accepts TCP connections on the loopback port.
pub fn wait_for_port(port: u16) {
    wait_for(("127.0.0.1", port));
}

/// Waits until something accepts TCP connections at the address.
pub fn wait_for(addr: (&str, u16)) {
    wait_for_or(addr, String::new);
}

/// [`wait_for`], showing `log()` if it never comes up.
pub fn wait_for_or(addr: (&str, u16), log: impl Fn() -> String) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {addr:?}: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP connection to `to` from the loopback address `from` (bound first, so that the server
/// sees that address).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Makes sure `net.ipv4.tcp_migrate_req` is 1, as a host that replaces gateways without
/// downtime sets it (`docs/scaling.md`): Linux then hands the connections waiting in a closing
/// `SO_REUSEPORT` listener's queue to another listener on the port, instead of resetting them.
/// Left set: it changes nothing for a socket without `SO_REUSEPORT`.
pub fn requests_migrate() {
    let path = "/proc/sys/net/ipv4/tcp_migrate_req";
    let now = std::fs::read_to_string(path).expect("net.ipv4.tcp_migrate_req exists (Linux 5.14 or later)");
    if now.trim() != "1" {
        std::fs::write(path, "1").expect("sysctl -w net.ipv4.tcp_migrate_req=1 (as root) before these tests");
    }
}
