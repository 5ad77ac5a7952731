//! Builds on the real peers (`remote-access-test-peers`), as the tests make them: an authority,
//! a gateway with a short rejection delay, a build request routed to a peer, VNC servers reading
//! the library's own password files, the build's connection script; and waiting for what the
//! library reports (events, the gateway's counters).
//!
//! Also compiled into `tests/attacks.rs` and `tests/adversarial.rs`, the binaries of their own
//! that a counting global allocator needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use remote_access_core::{
    Authority, AuthorityOptions, BuildId, BuildRequest, Builder, ConnectionInfo, Credentials, Event, Gateway,
    GatewayOptions, GatewayStats, HostKey, ScriptOptions, Subscription, Trigger, vnc_password_file,
};
use remote_access_test_peers::{Sshd, VncServer, write_script};

/// The builder route to a peer.
pub trait BuilderRoute {
    /// The builder route for a build served by this peer.
    fn builder(&self) -> Builder;
}

impl BuilderRoute for Sshd {
    /// As root, with the sshd's host key pinned.
    fn builder(&self) -> Builder {
        let mut builder = Builder::new(self.address);
        builder.ssh_port = self.port;
        builder.user = "root".into();
        builder.host_key = Some(self.host_key.clone());
        builder
    }
}

impl BuilderRoute for VncServer {
    /// This VNC server on 127.0.0.1, with no SSH side.
    fn builder(&self) -> Builder {
        let mut builder = Builder::new("127.0.0.1".parse().unwrap());
        builder.vnc_port = Some(self.port);
        builder
    }
}

/// Xvfb + x11vnc, with a password file written by the library's own helper.
pub fn x11vnc(password: &str) -> VncServer {
    VncServer::x11vnc(password, &vnc_password_file(password))
}

/// TigerVNC's Xtigervnc, with a password file written by the library's own helper.
pub fn tigervnc(password: &str) -> VncServer {
    VncServer::tigervnc(password, &vnc_password_file(password))
}

/// Gateway options for tests: a short rejection delay keeps refusal tests quick.
pub fn gateway_options() -> GatewayOptions {
    let mut options = GatewayOptions::default();
    options.auth_rejection_delay = Duration::from_millis(100);
    options
}

/// An authority with `options`, the memory store and the system clock.
pub fn authority(options: AuthorityOptions) -> Authority {
    Authority::new(options).unwrap()
}

/// A gateway with [`gateway_options`].
pub fn gateway(authority: &Authority) -> Gateway {
    Gateway::new(authority.clone(), gateway_options()).unwrap()
}

/// A manual build with remote access, routed to `builder`.
pub fn request(id: &str, builder: Builder) -> BuildRequest {
    let mut request = BuildRequest::new(BuildId::new(id).unwrap(), Trigger::Manual, true);
    request.builder = Some(builder);
    request
}

/// The build's POSIX connection script for a gateway on 127.0.0.1:`port`, written to
/// `dir/name` (mode 600).
pub async fn posix_script(
    authority: &Authority,
    gateway: &Gateway,
    port: u16,
    creds: &Credentials,
    dir: &Path,
    name: &str,
) -> PathBuf {
    posix_script_at(authority, gateway.host_key(), ("127.0.0.1", port), creds, dir, name).await
}

/// The same for a gateway at `address` with `host_key`.
pub async fn posix_script_at(
    authority: &Authority,
    host_key: &HostKey,
    address: (&str, u16),
    creds: &Credentials,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let session = authority.session(creds.build_id()).await.unwrap();
    let options = ScriptOptions::new(address.0, address.1);
    let info = ConnectionInfo::new(creds, &session, host_key, &options).unwrap();
    write_script(dir, name, info.posix_script(creds).unwrap().expose())
}

/// Waits for the next event of `kind`, skipping others; panics after a minute, naming the
/// events it skipped.
pub async fn next_event(events: &mut Subscription, kind: &str) -> Event {
    let mut skipped = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = events.next().await.expect("the authority is alive");
            if event.kind.as_str() == kind {
                return event;
            }
            skipped.push(event.to_string());
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {kind} event; skipped: {skipped:#?}"))
}

/// Polls the gateway's counters until `want` holds (a minute at most).
#[allow(dead_code)] // only the attack binaries use it
pub async fn settle(gateway: &Gateway, want: impl Fn(&GatewayStats) -> bool) -> GatewayStats {
    for _ in 0..600 {
        let stats = gateway.stats();
        if want(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway's counters did not settle: {:?}", gateway.stats());
}

/// A rustls client (aws-lc-rs) that trusts only `identity`'s certificate: what a user's client
/// does once given the gateway's VNC certificate.
pub fn tls_client(identity: &remote_access_core::TlsIdentity) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = identity.certificate_pem();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
