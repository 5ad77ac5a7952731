//! Loopback ports: a free one, waiting until something listens, connecting from a given address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A free loopback port (bind :0, read it, close it). Another process can take it before a
/// server binds it: start servers with [`Server::on_free_port`](crate::Server::on_free_port),
/// which retries.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
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
