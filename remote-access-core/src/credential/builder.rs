//! The builder-side secret the gateway logs in to a builder's VNC server with: generated per
//! build, or supplied by the platform and then watched for reuse across builds.
//!
//! Why per build: the build's user has a shell (and sudo) on the builder, so can stop the real
//! VNC server and listen on its port. The gateway then answers a challenge the impostor chose
//! (an offline dictionary search recovers the password), or, with Apple's type 30, hands it the
//! macOS account's username and password in plaintext. A password shared by several builders
//! (one image for the fleet) would then open every other user's builder; a per-build one opens
//! only the builder its user already has.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, OnceLock, PoisonError};

use rand_core::Rng;
use sha2::{Digest, Sha256};

use crate::build::BuildId;
use crate::error::Result;
use crate::secret::Secret;

use super::generate::{ALPHANUMERIC, VNC_PASSWORD_LEN, random_text};

/// A macOS account password for Apple's type 30 (which carries up to 63 bytes; no 8-byte limit
/// as in VNC Authentication): 20 alphanumeric characters, about 119 bits.
pub(crate) const ACCOUNT_PASSWORD_LEN: usize = 20;

/// A fresh builder VNC password (8 alphanumeric characters: VNC Authentication uses no more),
/// or, for a macOS account logged in to with Apple's type 30, a longer account password.
pub(crate) fn generate_builder_password(macos_account: bool) -> Result<Secret<String>> {
    let len = if macos_account { ACCOUNT_PASSWORD_LEN } else { VNC_PASSWORD_LEN };
    let mut rng = russh::keys::key::safe_rng();
    Ok(Secret::new(random_text(&mut rng, ALPHANUMERIC, len)))
}

/// How many supplied passwords are remembered: enough to see a fleet reuse one, while the
/// memory stays bounded (32 bytes each) however many builds are issued.
const REMEMBERED: usize = 4096;

/// Supplied builder passwords seen, as keyed digests, oldest first; and those already warned
/// about.
struct Seen {
    /// A random key per process, so a digest is no unsalted hash of the password that a
    /// dictionary could be run against.
    key: [u8; 32],
    order: VecDeque<[u8; 32]>,
    known: HashSet<[u8; 32]>,
    warned: HashSet<[u8; 32]>,
}

/// Process-wide on purpose: the warning is about the platform's configuration, which is the
/// same for every authority it creates, and one line per reused password is enough.
fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let mut key = [0u8; 32];
        russh::keys::key::safe_rng().fill_bytes(&mut key);
        Mutex::new(Seen { key, order: VecDeque::new(), known: HashSet::new(), warned: HashSet::new() })
    })
}

/// Notes a platform-supplied builder password and logs a warning, once per password, the
/// first time it is used for a second build. Neither the password nor its digest is logged.
pub(crate) fn note_supplied(build_id: &BuildId, password: &Secret<String>) {
    let mut seen = seen().lock().unwrap_or_else(PoisonError::into_inner);
    let digest: [u8; 32] =
        Sha256::new().chain_update(seen.key).chain_update(password.expose().as_bytes()).finalize().into();
    if seen.known.contains(&digest) {
        if seen.warned.insert(digest) {
            tracing::warn!(
                %build_id,
                "the builder VNC password supplied for this build was already used for another build: \
                 a build's user controls its builder's VNC port and can capture that password, then \
                 open every builder that shares it. Leave BuildRequest::builder_vnc_password unset \
                 to have one generated per build (docs/vnc.md)"
            );
        }
        return;
    }
    if seen.order.len() >= REMEMBERED
        && let Some(oldest) = seen.order.pop_front()
    {
        seen.known.remove(&oldest);
        seen.warned.remove(&oldest);
    }
    seen.order.push_back(digest);
    seen.known.insert(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_have_the_promised_shape() -> Result<()> {
        for (macos, len) in [(false, VNC_PASSWORD_LEN), (true, ACCOUNT_PASSWORD_LEN)] {
            let a = generate_builder_password(macos)?;
            let b = generate_builder_password(macos)?;
            assert_eq!(a.expose().len(), len);
            assert!(a.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_ne!(a.expose(), b.expose());
        }
        Ok(())
    }

    #[test]
    fn memory_stays_bounded() {
        let build = BuildId::new("bounded").unwrap();
        for i in 0..REMEMBERED + 10 {
            note_supplied(&build, &Secret::new(format!("bounded-{i}")));
        }
        let seen = seen().lock().unwrap();
        assert!(seen.order.len() <= REMEMBERED && seen.known.len() <= REMEMBERED);
        assert!(seen.warned.len() <= REMEMBERED);
    }
}
