//! Which key exchanges, ciphers and MACs the gateway offers.
//!
//! The defaults let in every current mainstream client and nothing weak. Who needs what
//! (`docs/ssh.md`, "Algorithms", says who each removal would lock out):
//!
//! - ciphers: `chacha20-poly1305` is OpenSSH's first choice; AES-GCM is what PuTTY, paramiko 3.5+
//!   and current OpenSSH take next; AES-CTR is all that Dropbear before 2024, paramiko before
//!   3.5 and libssh2 before 1.11 share with us;
//! - MACs (used with AES-CTR only; the AEAD ciphers carry their own): the encrypt-then-MAC
//!   SHA-2 ones, and the plain SHA-2 ones, which are the only ones Dropbear 2022 and libssh2
//!   1.10 have;
//! - key exchange: `mlkem768x25519-sha256` (post-quantum hybrid, OpenSSH 9.9+) and
//!   `curve25519-sha256` (under both its names), which every client above speaks. No
//!   finite-field Diffie-Hellman: it costs the server a modular exponentiation of up to 8192
//!   bits per connection, and no client above needs it.
//!
//! Compression is never offered (`none` only): the payload is already-encrypted inner SSH, so
//! it gains nothing, and compressing before authentication hands a stranger a decompressor.
//! Strict key exchange (the Terrapin fix) and the `ext-info` extension are always on.

use std::borrow::Cow;

use russh::{cipher, compression, kex, mac};

use crate::error::{Error, Result};

/// The default key exchanges, most preferred first.
pub(crate) const KEX: &[&str] =
    &["mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org"];
/// The default ciphers, most preferred first.
pub(crate) const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];
/// The default MACs, most preferred first.
pub(crate) const MACS: &[&str] =
    &["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512"];

/// Offered only if the operator asks, with a warning: broken, or costly for the server.
const WEAK: &[&str] = &[
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group-exchange-sha1",
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "hmac-sha1",
    "hmac-sha1-etm@openssh.com",
];

/// What russh would offer that is never offered here, whatever the options say.
const NEVER: &[&str] = &["none", "clear"];

/// Picks `wanted` out of what russh implements, in order; refuses an empty list, an unknown
/// name, a name twice, and `none`.
fn pick<N: Copy + AsRef<str>>(what: &'static str, wanted: &[String], known: &[&N]) -> Result<Vec<N>> {
    if wanted.is_empty() {
        return Err(Error::invalid(what, "the list is empty: no client could connect"));
    }
    let mut picked: Vec<N> = Vec::with_capacity(wanted.len());
    for name in wanted {
        let found = known.iter().find(|k| k.as_ref() == name).filter(|_| !NEVER.contains(&name.as_str()));
        let Some(&&found) = found else {
            let supported: Vec<&str> =
                known.iter().map(|k| k.as_ref()).filter(|k| !NEVER.contains(k)).collect();
            return Err(Error::invalid(
                what,
                format!("{name:?} is not supported; choose from {}", supported.join(", ")),
            ));
        };
        if picked.iter().any(|p| p.as_ref() == name) {
            return Err(Error::invalid(what, format!("{name:?} is listed twice")));
        }
        if WEAK.contains(&name.as_str()) {
            tracing::warn!(algorithm = %name, "offering a weak or costly SSH algorithm because the options ask for it");
        }
        picked.push(found);
    }
    Ok(picked)
}

/// The algorithm preferences for russh from the gateway's options.
pub(super) fn preferred(
    kex_algorithms: &[String],
    ciphers: &[String],
    macs: &[String],
) -> Result<russh::Preferred> {
    let mut kex = pick("kex_algorithms", kex_algorithms, kex::ALL_KEX_ALGORITHMS)?;
    // Not algorithms but markers in the same list: ext-info (which lets clients sign with
    // rsa-sha2) and strict key exchange, the Terrapin fix.
    kex.extend([kex::EXTENSION_SUPPORT_AS_SERVER, kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER]);
    Ok(russh::Preferred {
        kex: Cow::Owned(kex),
        cipher: Cow::Owned(pick("ciphers", ciphers, cipher::ALL_CIPHERS)?),
        mac: Cow::Owned(pick("macs", macs, mac::ALL_MAC_ALGORITHMS)?),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..russh::Preferred::default()
    })
}

/// `names` as owned strings, for the options' defaults.
pub(crate) fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_all_supported_and_never_offer_compression_or_finite_field_dh() {
        let preferred = preferred(&owned(KEX), &owned(CIPHERS), &owned(MACS)).unwrap();
        let kex: Vec<&str> = preferred.kex.iter().map(AsRef::as_ref).collect();
        assert!(kex.iter().all(|k| !k.starts_with("diffie-hellman")), "{kex:?}");
        assert!(kex.contains(&"kex-strict-s-v00@openssh.com"));
        let compression: Vec<&str> = preferred.compression.iter().map(AsRef::as_ref).collect();
        assert_eq!(compression, ["none"]);
        assert_eq!(preferred.cipher.len(), CIPHERS.len());
    }

    #[test]
    fn unknown_empty_repeated_and_none_are_refused_with_the_supported_names() {
        let err = preferred(&owned(KEX), &owned(&["aes128-gcm"]), &owned(MACS)).unwrap_err().to_string();
        assert!(
            err.contains("\"aes128-gcm\" is not supported") && err.contains("aes128-gcm@openssh.com"),
            "{err}"
        );
        assert!(preferred(&owned(KEX), &[], &owned(MACS)).is_err());
        assert!(preferred(&owned(KEX), &owned(CIPHERS), &owned(&["none"])).is_err());
        assert!(
            preferred(&owned(&["curve25519-sha256", "curve25519-sha256"]), &owned(CIPHERS), &owned(MACS))
                .is_err()
        );
        // Weak ones are the operator's call, with a warning.
        assert!(
            preferred(&owned(&["diffie-hellman-group14-sha256"]), &owned(&["aes256-cbc"]), &owned(MACS))
                .is_ok()
        );
    }
}
