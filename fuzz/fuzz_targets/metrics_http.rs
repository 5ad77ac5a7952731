//! The gateway's metrics endpoint (`GatewayOptions::metrics_address`), fed arbitrary bytes as
//! the HTTP client: the request head, then whatever follows.
//!
//! One gateway with the in-memory store, made once per thread; each input is one connection.
//! On a paused tokio clock (its 5 s deadline costs no wall time) the endpoint must answer with
//! a well-formed HTTP/1.1 status line, or nothing if the input never finishes a head; serve
//! the metrics only for `GET`/`HEAD /metrics`, and never panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;
use remote_access_core::{Authority, AuthorityOptions, Gateway, GatewayOptions, HostKey};

use common::block_on_paused;

thread_local! {
    static GATEWAY: Gateway = {
        let authority = Authority::new(AuthorityOptions::default()).unwrap();
        let mut options = GatewayOptions::default();
        options.host_key = Some(HostKey::generate().unwrap());
        Gateway::new(authority, options).unwrap()
    };
}

fuzz_target!(|data: &[u8]| {
    let answer = GATEWAY.with(|gateway| block_on_paused(fuzzing::metrics_request(gateway, data)));
    if answer.is_empty() {
        return; // no complete head: closed without an answer
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(..12).unwrap_or_default();
    assert!(
        ["HTTP/1.1 200", "HTTP/1.1 400", "HTTP/1.1 404", "HTTP/1.1 405", "HTTP/1.1 431", "HTTP/1.1 503", "HTTP/1.1 505"]
            .contains(&status),
        "{text:?}"
    );
    assert!(text.contains("\r\nConnection: close\r\n\r\n"), "{text:?}");
    if text.contains("# TYPE remote_access_connections gauge") {
        let request = String::from_utf8_lossy(data);
        assert!(request.starts_with("GET /metrics") || request.starts_with("GET /metrics?"), "{request:?}");
    }
});
