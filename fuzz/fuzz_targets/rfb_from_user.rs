//! The RFB handshake the gateway's VNC proxy runs with a user, fed arbitrary bytes as the user.
//!
//! The input is everything the user sends. The gateway must never panic, must stop at the end
//! of the input, and must speak exactly the protocol: its version, only VNC Authentication on
//! offer, a challenge; then read exactly the version, the choice and the response. After a
//! complete hello it either refuses (in the form the version calls for) or welcomes the user and
//! forwards ClientInit as shared (one byte, 1) to the builder.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;

use common::{Wire, block_on};

const OURS: &[u8; 12] = b"RFB 003.008\n";

/// `RFB xxx.yyy\n` with digits: the only version lines the gateway may accept.
fn is_version_line(line: &[u8]) -> bool {
    line.len() == 12
        && line.starts_with(b"RFB ")
        && line[11] == b'\n'
        && line[7] == b'.'
        && line[4..7].iter().chain(&line[8..11]).all(u8::is_ascii_digit)
}

/// What a refusal looks like: failed, with a reason only under 3.8.
fn refusal(minor: u8, reason: &str) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1];
    if minor == 8 {
        out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut user = Wire::new(data);
    let hello = block_on(fuzzing::greet_user(&mut user));
    let sent = std::mem::take(&mut user.written);
    assert!(sent.starts_with(OURS), "the gateway speaks first, 3.8");

    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            assert!(!err.is_empty());
            let after = &sent[OURS.len()..];
            let version_ok = data.len() >= 12 && is_version_line(&data[..12]);
            if after.is_empty() {
                // No version line, or not a well-formed one.
                assert!(!version_ok, "refused a well-formed version line {:?}", &data[..12]);
            } else if let Some(challenge) = after.strip_prefix(&[0, 0, 0, 2]) {
                // 3.3: the type is imposed, then the challenge; the response was cut short.
                assert!(version_ok && challenge.len() == 16 && data.len() < 12 + 16);
            } else if let Some(rest) = after.strip_prefix(&[1, 2]) {
                // 3.7 and later: one type on offer, then the choice was cut short, wrong (and
                // refused, with a reason under 3.8 only) or the response was cut short.
                assert!(version_ok);
                let wrong = data.get(12).is_some_and(|&choice| choice != 2);
                let refused = rest == refusal(8, "security type not offered") || rest == refusal(7, "");
                match rest.len() {
                    0 => assert_eq!(data.len(), 12),
                    16 => assert!(!wrong && data.len() < 12 + 1 + 16),
                    _ => assert!(wrong && refused, "unexpected refusal {rest:?}"),
                }
            } else {
                panic!("unexpected output before a failed hello: {after:?}");
            }
            return;
        }
    };

    // A complete hello: the version line was well formed, the choice was VNC Authentication.
    assert!(matches!(hello.minor, 3 | 7 | 8));
    assert!(is_version_line(&data[..12]), "accepted a version line {:?}", &data[..12]);
    let offer: &[u8] = if hello.minor == 3 { &[0, 0, 0, 2] } else { &[1, 2] };
    assert_eq!(sent, [&OURS[..], offer, &hello.challenge].concat());
    let read = 12 + usize::from(hello.minor != 3) + 16;
    assert_eq!(user.consumed(), read, "read exactly the hello, nothing more");
    if hello.minor != 3 {
        assert_eq!(data[12], 2, "only VNC Authentication may be chosen");
    }
    assert_eq!(&data[read - 16..read], &hello.response);

    // What happens next depends on the password, which the fuzzer cannot know: take both
    // branches, chosen by a bit of the response.
    if hello.response[0] & 1 == 0 {
        let reason = "Authentication failed";
        block_on(fuzzing::refuse_user(&mut user, &hello, reason));
        assert_eq!(user.written, refusal(hello.minor, reason));
    } else {
        let mut builder = Vec::new();
        let welcomed = block_on(fuzzing::welcome_user(&mut user, &mut builder));
        assert_eq!(user.written, [0, 0, 0, 0], "SecurityResult OK, then nothing");
        match welcomed {
            Ok(()) => {
                assert_eq!(builder, [1], "ClientInit is forwarded as shared, whatever the user asked");
                assert_eq!(user.consumed(), read + 1);
            }
            Err(_) => assert!(builder.is_empty() && data.len() == read),
        }
    }
});
