//! The RFB handshake the gateway runs as a client with a builder's VNC server, fed arbitrary
//! bytes as the server: version, security types, VNC Authentication or Apple's type 30 (ARD,
//! Diffie-Hellman with the server's parameters), SecurityResult and failure reasons.
//!
//! Byte 0 picks the gateway's login (password or not, macOS username or not); the rest is what
//! the server sends. The gateway must never panic and must stop at the end of the input; what it
//! sends must be one attempt in the protocol's own shape: a version no newer than 3.8, a
//! security type the server offered and the gateway may use (None, VNC Authentication, or ARD
//! with a username; never Tight, TLS and the like), then one answer. Its error text, which goes
//! to logs, has no control characters.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;

use common::{Wire, block_on};

const PASSWORD: &str = "builder-pw";

fuzz_target!(|data: &[u8]| {
    let [config, server @ ..] = data else { return };
    let password = match config & 3 {
        0 => None,
        1 => Some(PASSWORD),
        // Too long for an ARD credential field (63 bytes).
        2 => Some("a-macOS-password-that-is-much-longer-than-sixty-three-bytes-allowed"),
        _ => Some("pw\0nul"),
    };
    let ard_username = (config & 4 != 0).then_some("ci");

    let mut builder = Wire::new(server);
    let result = block_on(fuzzing::login_builder(&mut builder, password, ard_username));
    let sent = builder.written;

    if let Err(err) = &result {
        assert!(!err.chars().any(char::is_control), "log text with control characters: {err:?}");
    }
    if let Some(password) = password {
        let leaked = sent.windows(password.len()).any(|w| w == password.as_bytes());
        assert!(!leaked, "the builder password went out in clear");
    }
    if sent.is_empty() {
        assert!(result.is_err(), "logged in without saying anything");
        return;
    }

    // Our version: the server's, at most 3.8.
    let version = &sent[..12];
    assert!(
        [&b"RFB 003.003\n"[..], b"RFB 003.007\n", b"RFB 003.008\n"].contains(&version),
        "sent version {version:?}"
    );
    let their_line = &server[..12];
    assert!(their_line.starts_with(b"RFB ") && their_line[11] == b'\n');
    let rest = &sent[12..];

    // Which security type was used: imposed by a 3.3 server, else chosen from the offer.
    let chosen = if version == b"RFB 003.003\n" {
        assert!(rest.is_empty() || rest.len() == 16, "3.3 gets one answer at most");
        if rest.is_empty() {
            return;
        }
        assert_eq!(server.get(12..16), Some(&[0, 0, 0, 2][..]), "answered a challenge not asked for");
        2
    } else {
        let Some((&chosen, _)) = rest.split_first() else {
            assert!(result.is_err());
            return;
        };
        let count = usize::from(server[12]);
        let offered = &server[13..13 + count];
        assert!(offered.contains(&chosen), "chose {chosen}, not offered in {offered:?}");
        match chosen {
            1 => {}
            2 => assert!(password.is_some(), "VNC Authentication without a password"),
            30 => assert!(password.is_some() && ard_username.is_some(), "ARD without credentials"),
            other => panic!("chose security type {other}"),
        }
        // The most trusted type on offer wins: ARD with a username, then VNC Authentication.
        if ard_username.is_some() && password.is_some() && offered.contains(&30) {
            assert_eq!(chosen, 30);
        } else if password.is_some() && offered.contains(&2) {
            assert_eq!(chosen, 2);
        }
        chosen
    };

    // One answer, nothing else.
    let answer = if version == b"RFB 003.003\n" { rest } else { &rest[1..] };
    match chosen {
        1 => assert!(answer.is_empty()),
        2 => assert!(answer.is_empty() || answer.len() == 16, "one VNC Authentication answer"),
        30 if answer.is_empty() => {}
        30 => {
            // 128 bytes of encrypted credentials, then a public key as long as the prime. The
            // parameters follow the server's type list (the client's choice is not echoed).
            let at = 13 + usize::from(server[12]) + 2;
            let key_length = usize::from(u16::from_be_bytes([server[at], server[at + 1]]));
            assert_eq!(answer.len(), 128 + key_length, "one ARD answer");
        }
        _ => unreachable!(),
    }
    if result.is_ok() {
        assert!(!answer.is_empty() || chosen == 1, "logged in without answering");
    }
});
