//! Fresh key material for one build, from the operating system's CSPRNG.

use rand_core::Rng;
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Length of the VNC password. VNC Authentication uses at most 8 bytes of a password, so a
/// longer one would only look stronger.
pub(crate) const VNC_PASSWORD_LEN: usize = 8;
/// Random characters after the `ra-` prefix of a username (36^12, about 62 bits).
const USERNAME_RANDOM_LEN: usize = 12;

pub(super) const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The raw material of one build's credentials.
pub(crate) struct Generated {
    pub(crate) username: String,
    pub(crate) key: PrivateKey,
    pub(crate) fingerprint: String,
    pub(crate) vnc_password: Secret<String>,
}

/// A fresh Ed25519 key pair and its `SHA256:` fingerprint.
fn key_pair(rng: &mut impl rand_core::CryptoRng) -> Result<(PrivateKey, String)> {
    let key = PrivateKey::random(rng, Algorithm::Ed25519).map_err(Error::key_material)?;
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    Ok((key, fingerprint))
}

pub(crate) fn generate() -> Result<Generated> {
    let mut rng = russh::keys::key::safe_rng();
    let (key, fingerprint) = key_pair(&mut rng)?;
    let username = format!("ra-{}", random_text(&mut rng, LOWER_ALPHANUMERIC, USERNAME_RANDOM_LEN));
    let vnc_password = Secret::new(random_text(&mut rng, ALPHANUMERIC, VNC_PASSWORD_LEN));
    Ok(Generated { username, key, fingerprint, vnc_password })
}

/// A builder agent's credential: its own key pair and an `rt-` username, distinct from the
/// user's and good only for registering the build's reverse tunnel.
pub(crate) struct GeneratedAgent {
    pub(crate) username: String,
    pub(crate) key: PrivateKey,
    pub(crate) fingerprint: String,
}

pub(crate) fn generate_agent() -> Result<GeneratedAgent> {
    let mut rng = russh::keys::key::safe_rng();
    let (key, fingerprint) = key_pair(&mut rng)?;
    let username = format!("rt-{}", random_text(&mut rng, LOWER_ALPHANUMERIC, USERNAME_RANDOM_LEN));
    Ok(GeneratedAgent { username, key, fingerprint })
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling, so no modulo bias).
pub(super) fn random_text(rng: &mut impl Rng, alphabet: &[u8], len: usize) -> String {
    // The largest multiple of the alphabet's size that fits in a byte; bytes above it are redrawn.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = Zeroizing::new([0u8; 32]);
    while out.len() < len {
        rng.fill_bytes(&mut buf[..]);
        for &b in buf.iter() {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// The index under which a password is kept unique; never the password itself.
pub(crate) fn password_digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn passwords_and_usernames_have_the_promised_shape() -> Result<()> {
        for _ in 0..50 {
            let g = generate()?;
            let password = g.vnc_password.expose();
            assert_eq!(password.len(), VNC_PASSWORD_LEN);
            assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
            let rest = g.username.strip_prefix("ra-").unwrap_or_default();
            assert_eq!(rest.len(), USERNAME_RANDOM_LEN);
            assert!(rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert!(g.fingerprint.starts_with("SHA256:"));
        }
        Ok(())
    }

    #[test]
    fn every_character_is_drawn() {
        // 62 characters, 62,000 draws: each is expected 1,000 times. A biased or truncated
        // alphabet would leave some far below that; 700 is over 9 standard deviations away.
        let mut rng = russh::keys::key::safe_rng();
        let text = random_text(&mut rng, ALPHANUMERIC, 62_000);
        let mut counts: HashMap<char, usize> = HashMap::new();
        for c in text.chars() {
            *counts.entry(c).or_default() += 1;
        }
        assert_eq!(counts.len(), 62);
        assert!(counts.values().all(|&n| n > 700), "{counts:?}");
    }
}
