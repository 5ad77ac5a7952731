//! The real test peers (`remote-access-test-peers`) as the library sees them, for the benchmark
//! harness and this crate's tests: the builder route to each, VNC servers reading the library's
//! own password files, a build request on a route. (The core's tests have the same few lines in
//! `remote-access-core/tests/it/builds.rs`; the peers crate does not depend on the core.)
//! Test support: a failed `expect` here is a failed test or benchmark run.
#![allow(clippy::expect_used)]

use remote_access_core::{BuildId, BuildRequest, Builder, Trigger, vnc_password_file};
use remote_access_test_peers::{Sshd, VncServer};

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
        let mut builder = Builder::new([127, 0, 0, 1].into());
        builder.vnc_port = Some(self.port);
        builder
    }
}

/// Xvfb + x11vnc on 127.0.0.1, with a password file written by the library's own helper.
pub fn x11vnc(password: &str) -> VncServer {
    VncServer::x11vnc(password, &vnc_password_file(password))
}

/// Xvfb + x11vnc on `address`, with a password file written by the library's own helper.
pub fn x11vnc_on(password: &str, address: &str) -> VncServer {
    VncServer::x11vnc_on(password, &vnc_password_file(password), address)
}

/// TigerVNC's Xtigervnc, with a password file written by the library's own helper.
pub fn tigervnc(password: &str) -> VncServer {
    VncServer::tigervnc(password, &vnc_password_file(password))
}

/// A manual build with remote access, routed to `builder`.
pub fn request(id: &str, builder: Builder) -> BuildRequest {
    let mut request = BuildRequest::new(BuildId::new(id).expect("a valid build id"), Trigger::Manual, true);
    request.builder = Some(builder);
    request
}
