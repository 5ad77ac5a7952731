//! VNC Authentication (RFB security type 2) and the VNC password file format.
//!
//! Both use single DES with bit-reversed key bytes: only the first 8 bytes of a password count.
//! The crypto is weak by design of the protocol; the gateway uses fresh per-build passwords,
//! fresh challenges, and expires both with the build.

use des::Des;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use subtle::ConstantTimeEq;

/// The fixed key that obfuscates VNC password files (`~/.vnc/passwd`, `tigervncpasswd -f`).
const PASSWORD_FILE_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];

/// The DES key a VNC password stands for: truncated or zero-padded to 8 bytes, each byte's
/// bits reversed (RFB counts the lowest bit first).
fn password_key(password: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    key
}

fn encrypt(key: [u8; 8], data: &mut [u8]) {
    let des = Des::new(&key.into());
    // Callers pass whole blocks (8 or 16 bytes); a remainder, if any, is left as it is.
    for block in data.as_chunks_mut::<8>().0 {
        des.encrypt_block(block.into());
    }
}

/// The response to a VNC Authentication challenge for `password`.
pub(crate) fn vnc_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut out = *challenge;
    encrypt(password_key(password), &mut out);
    out
}

/// What a VNC client answers to a VNC Authentication `challenge` with `password` (only the
/// first 8 bytes count). For clients and test tools; the gateway computes it on both legs.
///
/// ```
/// let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
/// let answer = remote_access_core::vnc_auth_response("secret", &challenge);
/// assert_eq!(answer[..4], [0xee, 0x22, 0x53, 0x9f]);
/// ```
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    vnc_response(password.as_bytes(), challenge)
}

/// Whether `answer` is the right response, compared in constant time.
pub(crate) fn check_vnc_response(password: &[u8], challenge: &[u8; 16], answer: &[u8; 16]) -> bool {
    vnc_response(password, challenge).ct_eq(answer).into()
}

/// The 8 bytes of a standard VNC password file for `password` (the format `x11vnc -rfbauth`,
/// `vncpasswd` and TigerVNC's `-PasswordFile` read). Write them to a file of mode 0600 on the
/// builder, so its VNC server uses the password the gateway injects. Only the first 8 bytes of
/// the password count, as everywhere in VNC.
///
/// ```
/// let file = remote_access_core::vnc_password_file("secret");
/// assert_eq!(file, [0x2e, 0x2d, 0xbf, 0x57, 0x6e, 0xb0, 0x6c, 0x9e]);
/// ```
pub fn vnc_password_file(password: &str) -> [u8; 8] {
    let mut block = [0u8; 8];
    for (b, p) in block.iter_mut().zip(password.as_bytes()) {
        *b = *p;
    }
    encrypt(password_key(&PASSWORD_FILE_KEY), &mut block);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    #[test]
    fn reference_des_vectors() {
        // docs: shared/reference/vnc.md §2
        for (password, key, answer) in [
            ("secret", "cea6c64ea62e0000", "ee22539f33a5983ec12f9c2edbc995dd"),
            ("password", "0e86ceceeef64e26", "b866924125c8eebb9debc1db61c538e2"),
            ("longpassword", "36f676e60e86cece", "5931256585fd62106d317e09fc963baf"),
            ("longpass", "36f676e60e86cece", "5931256585fd62106d317e09fc963baf"),
        ] {
            assert_eq!(hex(&password_key(password.as_bytes())), key, "{password}");
            assert_eq!(hex(&vnc_response(password.as_bytes(), &CHALLENGE)), answer, "{password}");
            let mut right = [0u8; 16];
            right.copy_from_slice(&vnc_response(password.as_bytes(), &CHALLENGE));
            assert!(check_vnc_response(password.as_bytes(), &CHALLENGE, &right));
            right[15] ^= 1;
            assert!(!check_vnc_response(password.as_bytes(), &CHALLENGE, &right));
        }
    }

    #[test]
    fn reference_password_file_vectors() {
        // docs: shared/reference/vnc.md §3
        assert_eq!(hex(&vnc_password_file("secret")), "2e2dbf576eb06c9e");
        assert_eq!(hex(&vnc_password_file("longpassword")), "6b8849b69f4d3f83");
        assert_eq!(hex(&password_key(&PASSWORD_FILE_KEY)), "e84ad660c4721ae0");
    }
}
