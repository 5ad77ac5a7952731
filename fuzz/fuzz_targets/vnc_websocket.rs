//! The VNC WebSocket (noVNC's carriage), fed arbitrary bytes as the browser: the HTTP upgrade
//! request, then frames.
//!
//! The first input byte picks the rules (an origin list or none; plain `ws://` refused or
//! not). The gateway must never panic, must answer only a well-formed upgrade on its paths
//! with 101, and must hand RFB only the payload of binary messages, never more bytes than the
//! browser sent.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;

use common::{Wire, block_on_paused};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let origins = if selector & 1 == 1 { vec![String::from("https://ci.example.com")] } else { Vec::new() };
    let refuse_unencrypted = selector & 2 == 2;
    let mut wire = Wire::new(input);
    let carried = block_on_paused(fuzzing::websocket_from_browser(&mut wire, &origins, refuse_unencrypted));
    let answer = std::mem::take(&mut wire.written);
    let upgraded = answer.starts_with(b"HTTP/1.1 101");
    if let Ok(carried) = &carried {
        assert!(upgraded, "RFB carried without an upgrade");
        assert!(carried.len() < input.len(), "more RFB bytes than the browser sent");
    }
    if upgraded {
        assert!(!refuse_unencrypted, "ws:// upgraded though refused");
        let request = String::from_utf8_lossy(input);
        assert!(
            request.starts_with("GET /websockify ") || request.starts_with("GET / "),
            "upgraded a request for another path"
        );
        if !origins.is_empty() {
            assert!(request.to_ascii_lowercase().contains("origin: https://ci.example.com"));
        }
    }
});
