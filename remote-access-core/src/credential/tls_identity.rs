//! The gateway's TLS certificate for VNC: what VeNCrypt (`X509Vnc`) and `wss://` present to
//! users, supplied by the platform or generated for a quickstart.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Longest PEM text accepted for a chain or a key: far above any real chain, so that a wrong
/// file (a log, a disk image) is refused with a clear message rather than parsed.
const MAX_PEM: usize = 1 << 20;

/// The gateway's TLS certificate chain and private key for its VNC ports. Users check the
/// certificate the way their client does: against the system's trust store (a certificate from
/// a public CA for the gateway's host name), against a CA file they are given (TigerVNC's
/// `-X509CA`), or by its SHA-256 fingerprint, which the connection info carries. `Debug` shows
/// only the fingerprint.
///
/// ```
/// use remote_access_core::TlsIdentity;
/// let generated = TlsIdentity::generate(&["gw.example.com", "127.0.0.1"])?;
/// let again = TlsIdentity::from_pem(&generated.certificate_pem(), generated.private_key_pem().expose())?;
/// assert_eq!(generated.fingerprint(), again.fingerprint());
/// assert_eq!(generated.fingerprint().len(), 32 * 3 - 1); // AB:CD:..., 32 bytes
/// # Ok::<(), remote_access_core::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    /// The private key's DER, as it was supplied, zeroized on drop.
    key: Secret<Vec<u8>>,
    kind: KeyKind,
    fingerprint: String,
    /// Built once, when the identity is read: the gateway's acceptor shares it.
    config: Arc<rustls::ServerConfig>,
}

/// Which DER the key is (PEM labels it).
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Pkcs1,
    Sec1,
    Pkcs8,
}

impl TlsIdentity {
    /// Loads a certificate chain (leaf first, PEM `CERTIFICATE` blocks) and its private key
    /// (PEM, unencrypted PKCS#8, SEC1 or PKCS#1), as a platform stores them. The key must be
    /// the leaf's: a mismatch is refused here, not at the first user's handshake.
    pub fn from_pem(certificate_chain_pem: &str, private_key_pem: &str) -> Result<Self> {
        if certificate_chain_pem.len() > MAX_PEM || private_key_pem.len() > MAX_PEM {
            return Err(Error::invalid("vnc_tls", "PEM text longer than 1 MiB"));
        }
        let chain = CertificateDer::pem_slice_iter(certificate_chain_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::invalid("vnc_tls certificate", format!("not PEM certificates: {err}")))?;
        if chain.is_empty() {
            return Err(Error::invalid("vnc_tls certificate", "no `BEGIN CERTIFICATE` block"));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).map_err(|_| {
            Error::invalid(
                "vnc_tls private key",
                "not an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1)",
            )
        })?;
        let kind = match &key {
            PrivateKeyDer::Pkcs1(_) => KeyKind::Pkcs1,
            PrivateKeyDer::Sec1(_) => KeyKind::Sec1,
            _ => KeyKind::Pkcs8,
        };
        let key = Secret::new(key.secret_der().to_vec());
        // rustls checks that the key is usable and matches the leaf certificate.
        let config = server_config(&chain, der(kind, &key))?;
        Ok(Self { fingerprint: fingerprint(&chain[0]), chain, key, kind, config })
    }

    /// The SHA-256 fingerprint of the first certificate of a PEM chain, as
    /// [`TlsIdentity::fingerprint`] gives it: for `ScriptOptions::vnc_tls_fingerprint` where
    /// only the certificate is at hand.
    pub fn certificate_fingerprint(certificate_chain_pem: &str) -> Result<String> {
        if certificate_chain_pem.len() > MAX_PEM {
            return Err(Error::invalid("vnc_tls", "PEM text longer than 1 MiB"));
        }
        let leaf = CertificateDer::pem_slice_iter(certificate_chain_pem.as_bytes())
            .next()
            .ok_or_else(|| Error::invalid("vnc_tls certificate", "no `BEGIN CERTIFICATE` block"))?
            .map_err(|err| Error::invalid("vnc_tls certificate", format!("not PEM certificates: {err}")))?;
        Ok(fingerprint(&leaf))
    }

    /// A fresh self-signed certificate (ECDSA P-256) for `names` (host names or IP addresses,
    /// as users type them), for a quickstart or a test. Users must be given
    /// [`TlsIdentity::certificate_pem`] (or check the fingerprint); a production gateway should
    /// use a certificate from a CA its users trust.
    pub fn generate(names: &[&str]) -> Result<Self> {
        if names.is_empty() || names.iter().any(|name| name.is_empty() || name.len() > 253) {
            return Err(Error::invalid("names", "give one or more host names or IP addresses"));
        }
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|err| Error::invalid("names", format!("cannot make a certificate for them: {err}")))?;
        let key = Secret::new(generated.signing_key.serialize_pem());
        Self::from_pem(&generated.cert.pem(), key.expose())
    }

    /// The certificate chain as PEM: public, for a user's client to trust (TigerVNC's
    /// `-X509CA` with a self-signed certificate).
    pub fn certificate_pem(&self) -> String {
        self.chain.iter().map(|der| pem_block("CERTIFICATE", der.as_ref())).collect::<Vec<_>>().concat()
    }

    /// The private key as PEM, to persist a generated identity. Zeroized when dropped.
    pub fn private_key_pem(&self) -> Secret<String> {
        let label = match self.kind {
            KeyKind::Pkcs1 => "RSA PRIVATE KEY",
            KeyKind::Sec1 => "EC PRIVATE KEY",
            KeyKind::Pkcs8 => "PRIVATE KEY",
        };
        Secret::new(pem_block(label, self.key.expose()))
    }

    /// The leaf certificate's SHA-256 fingerprint, `AB:CD:...` (as
    /// `openssl x509 -noout -fingerprint -sha256` prints it).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The TLS server configuration the VNC ports use (see [`server_config`]).
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// The key as rustls takes it. rustls keeps its own parsed copy inside the configuration;
/// ours stays in the `Secret`.
fn der(kind: KeyKind, key: &Secret<Vec<u8>>) -> PrivateKeyDer<'static> {
    let bytes = key.expose().clone();
    match kind {
        KeyKind::Pkcs1 => PrivateKeyDer::Pkcs1(bytes.into()),
        KeyKind::Sec1 => PrivateKeyDer::Sec1(bytes.into()),
        KeyKind::Pkcs8 => PrivateKeyDer::Pkcs8(bytes.into()),
    }
}

/// The TLS server configuration of the VNC ports: TLS 1.2 and 1.3 with rustls' safe defaults on
/// aws-lc-rs (named explicitly, so a process that also links ring still works), no client
/// certificates, and no TLS 1.3 session tickets: TigerVNC 1.12's viewer hangs when tickets
/// arrive together with the VNC challenge, and VNC sessions are not resumed anyway.
fn server_config(
    chain: &[CertificateDer<'static>],
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::invalid("vnc_tls", err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain.to_vec(), key)
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => {
                Error::invalid("vnc_tls", "the key does not fit the certificate")
            }
            err => Error::invalid("vnc_tls", format!("cannot use this certificate and key: {err}")),
        })?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// SHA-256 of a certificate's DER, as colon-separated upper-case hex.
fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(der.as_ref());
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// One PEM block (RFC 7468: 64 characters a line).
fn pem_block(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_for_another_certificate_is_refused() {
        let a = TlsIdentity::generate(&["a.example"]).unwrap();
        let b = TlsIdentity::generate(&["b.example"]).unwrap();
        let err = TlsIdentity::from_pem(&a.certificate_pem(), b.private_key_pem().expose()).unwrap_err();
        assert_eq!(err.code(), "invalid_input");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn text_that_is_not_pem_is_refused_with_what_was_expected() {
        let a = TlsIdentity::generate(&["a.example"]).unwrap();
        for (cert, key) in [
            ("", a.private_key_pem().expose().clone()),
            ("hello", a.private_key_pem().expose().clone()),
            (
                a.certificate_pem().as_str(),
                String::from("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ),
        ] {
            let err = TlsIdentity::from_pem(cert, &key).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{err}");
        }
    }
}
