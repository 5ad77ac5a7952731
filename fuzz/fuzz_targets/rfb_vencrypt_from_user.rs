//! The user's RFB handshake with VeNCrypt on offer, fed arbitrary bytes as the user.
//!
//! The first input byte picks the offer: VeNCrypt alone (encryption required) or VeNCrypt
//! before plain VNC Authentication. The gateway must never panic, must offer exactly those
//! types, VeNCrypt 0.2 and the one sub-type `X509Vnc` (261), and must say "go ahead with TLS"
//! (the byte 1) only after a client chose 19, version 0.2 and sub-type 261, having read
//! exactly those bytes: anything after them belongs to the TLS handshake.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use remote_access_core::fuzzing;

use common::{Wire, block_on};

const OURS: &[u8; 12] = b"RFB 003.008\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let plain = selector & 1 == 1;
    let mut user = Wire::new(input);
    let greeted = block_on(fuzzing::greet_user_vencrypt(&mut user, plain));
    let sent = std::mem::take(&mut user.written);
    assert!(sent.starts_with(OURS), "the gateway speaks first, 3.8");
    let types: &[u8] = if plain { &[2, 19, 2] } else { &[1, 19] };
    match greeted {
        Ok(None) => {
            // TLS next: the client went the whole VeNCrypt way.
            assert!(input.len() >= 12 + 1 + 2 + 4);
            assert_eq!(input[12], 19);
            assert_eq!(&input[13..15], &[0, 2]);
            assert_eq!(&input[15..19], &261u32.to_be_bytes());
            assert_eq!(user.consumed(), 19, "nothing of the TLS handshake was read");
            let expected = [&OURS[..], types, &[0, 2], &[0], &[1, 0, 0, 1, 5], &[1]].concat();
            assert_eq!(sent, expected);
        }
        Ok(Some(hello)) => {
            // Plain VNC Authentication: only when it was offered (3.3 imposes it).
            assert!(plain, "plain VNC Authentication happened though only VeNCrypt was offered");
            if hello.minor != 3 {
                assert_eq!(input[12], 2);
                assert_eq!(&sent[12..12 + types.len()], types);
            }
        }
        Err(err) => {
            assert!(!err.is_empty());
            // Whatever went wrong, TLS was never acknowledged: the last byte sent after the
            // sub-type list is never 1 unless the sub-type was 261.
            let list = [&OURS[..], types, &[0, 2], &[0], &[1, 0, 0, 1, 5]].concat();
            if sent.starts_with(&list) {
                assert_ne!(sent.get(list.len()), Some(&1), "TLS acknowledged for a refused sub-type");
            }
        }
    }
});
