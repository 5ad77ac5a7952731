//! OpenSSH certificates: a certificate authority key that signs a build's user key (so a
//! builder trusts the CA once instead of each build's key) and builders' host keys (so users'
//! scripts trust the CA instead of a builder's key on first use), and the key revocation list
//! (KRL) that makes a builder's sshd refuse the keys of ended builds before their certificates
//! expire.

use std::fmt;
use std::net::IpAddr;

use rand_core::Rng;
use russh::keys::PublicKey;
use russh::keys::ssh_key::certificate::{Builder as CertBuilder, CertType};
use russh::keys::ssh_key::{Certificate, Fingerprint};
use time::OffsetDateTime;

use super::HostKey;
use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// How far before its issue a certificate is already valid: builders' clocks may run behind.
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// An SSH certificate authority key (Ed25519): it signs builds' user keys
/// (`AuthorityOptions::user_ca`) or builders' host keys (`AuthorityOptions::host_ca`). Like the
/// gateway's host key, generate it once and persist [`SshCa::to_openssh`] (a secret: whoever
/// holds it can log in to every builder that trusts it). `Debug` shows only the fingerprint.
///
/// ```
/// use remote_access_core::SshCa;
/// let ca = SshCa::generate()?;
/// let again = SshCa::from_openssh(ca.to_openssh()?.expose())?;
/// assert_eq!(ca.public_key(), again.public_key());
/// // The line for the builder's sshd_config (with the public key in that file):
/// // TrustedUserCAKeys /etc/ssh/remote-access-user-ca.pub
/// # Ok::<(), remote_access_core::Error>(())
/// ```
#[derive(Clone)]
pub struct SshCa(HostKey);

impl SshCa {
    /// A fresh Ed25519 CA key from the CSPRNG.
    pub fn generate() -> Result<Self> {
        HostKey::generate().map(Self)
    }

    /// Loads a CA key from OpenSSH private key text (unencrypted, Ed25519).
    pub fn from_openssh(text: &str) -> Result<Self> {
        let key = HostKey::from_openssh(text)
            .map_err(|_| Error::invalid("CA key", "not an unencrypted OpenSSH private key"))?;
        if key.key.algorithm() != russh::keys::Algorithm::Ed25519 {
            return Err(Error::invalid("CA key", "not an Ed25519 key"));
        }
        Ok(Self(key))
    }

    /// The private key as OpenSSH text, to persist. Zeroized when dropped.
    pub fn to_openssh(&self) -> Result<Secret<String>> {
        self.0.to_openssh()
    }

    /// The public key, `ssh-ed25519 AAAA...`: what builders' `TrustedUserCAKeys` (a user CA)
    /// or users' `@cert-authority` lines (a host CA) hold.
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// The `SHA256:` fingerprint of the public key.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    /// Signs `key` as a certificate of `cert_type` for `principals`, valid from `valid_after`
    /// to `valid_before`, with `extensions` (names, empty values); its key id is `key_id`.
    fn sign(&self, key: &PublicKey, what: &Signed<'_>) -> Result<String> {
        let seconds = |at: OffsetDateTime| u64::try_from(at.unix_timestamp()).unwrap_or(0);
        let mut rng = russh::keys::key::safe_rng();
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let mut builder = CertBuilder::new(
            nonce,
            key.key_data().clone(),
            seconds(what.valid_after),
            seconds(what.valid_before),
        )
        .map_err(|err| Error::invalid("certificate", err.to_string()))?;
        // A random serial: ssh-keygen -L and sshd's log show it, and no two builds share one.
        let serial = rng.next_u64();
        let signed = (|| {
            builder.serial(serial)?.key_id(what.key_id)?.cert_type(what.cert_type)?.comment(what.key_id)?;
            for principal in what.principals {
                builder.valid_principal(principal.as_str())?;
            }
            for extension in what.extensions {
                builder.extension(*extension, "")?;
            }
            if let Some(addresses) = what.source_addresses {
                builder.critical_option("source-address", addresses.join(","))?;
            }
            builder.sign(&self.0.key)
        })()
        .map_err(|err| Error::invalid("certificate", err.to_string()))?;
        signed.to_openssh().map_err(Error::key_material)
    }

    /// A user certificate for a build's key: valid for the builder's login `principal` from
    /// `now` (less the clock skew) to `valid_before`, key id the build id, with `permit-pty`
    /// and, when the build may reach further ports, `permit-port-forwarding`; no agent or X11
    /// forwarding, no `~/.ssh/rc`.
    pub(crate) fn user_certificate(&self, key: &PublicKey, user: &UserCertificate<'_>) -> Result<String> {
        let extensions: &[&str] =
            if user.port_forwarding { &["permit-port-forwarding", "permit-pty"] } else { &["permit-pty"] };
        self.sign(
            key,
            &Signed {
                cert_type: CertType::User,
                key_id: user.build_id.as_str(),
                principals: &[user.principal.to_owned()],
                extensions,
                source_addresses: Some(user.source_addresses),
                valid_after: user.now - CLOCK_SKEW,
                valid_before: user.valid_before,
            },
        )
    }

    /// A host certificate for a builder's host key (`ssh-ed25519 AAAA...`), valid for the
    /// addresses users' scripts dial it at, from `now` (less the clock skew) to `valid_before`.
    pub(crate) fn host_certificate(
        &self,
        host_key: &str,
        addresses: &[IpAddr],
        key_id: &str,
        now: OffsetDateTime,
        valid_before: OffsetDateTime,
    ) -> Result<String> {
        let key = PublicKey::from_openssh(host_key)
            .map_err(|_| Error::invalid("host key", "not an OpenSSH public key line"))?;
        if addresses.is_empty() {
            return Err(Error::invalid("addresses", "a host certificate names at least one address"));
        }
        let principals: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
        self.sign(
            &key,
            &Signed {
                cert_type: CertType::Host,
                key_id,
                principals: &principals,
                extensions: &[],
                source_addresses: None,
                valid_after: now - CLOCK_SKEW,
                valid_before,
            },
        )
    }
}

impl fmt::Debug for SshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshCa").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

/// What a certificate says.
struct Signed<'a> {
    cert_type: CertType,
    key_id: &'a str,
    principals: &'a [String],
    extensions: &'a [&'a str],
    /// The `source-address` critical option, if any.
    source_addresses: Option<&'a [String]>,
    valid_after: OffsetDateTime,
    valid_before: OffsetDateTime,
}

/// What a build's user certificate is for.
pub(crate) struct UserCertificate<'a> {
    pub(crate) build_id: &'a BuildId,
    /// The builder's login user.
    pub(crate) principal: &'a str,
    /// Where the certificate may be used from (`source-address`).
    pub(crate) source_addresses: &'a [String],
    pub(crate) now: OffsetDateTime,
    pub(crate) valid_before: OffsetDateTime,
    pub(crate) port_forwarding: bool,
}

/// Checks `AuthorityOptions::certificate_source_addresses`: addresses or CIDR blocks, at
/// least one when there is a user CA (without them a build's certificate would open every
/// builder that trusts the CA with the same login user).
pub(crate) fn check_source_addresses(user_ca: bool, addresses: &[String]) -> Result<()> {
    const WHAT: &str = "certificate_source_addresses";
    if user_ca && addresses.is_empty() {
        return Err(Error::invalid(
            WHAT,
            "a user CA needs the addresses builders see the gateways connect from: without them a build's certificate opens every builder that trusts the CA",
        ));
    }
    if addresses.len() > 64 {
        return Err(Error::invalid(WHAT, "at most 64 addresses or blocks"));
    }
    for address in addresses {
        let (ip, bits) =
            address.split_once('/').map_or((address.as_str(), None), |(ip, bits)| (ip, Some(bits)));
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| Error::invalid(WHAT, format!("{address:?} is not an address or CIDR block")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(bits) = bits
            && !bits.parse::<u8>().is_ok_and(|bits| bits <= max)
        {
            return Err(Error::invalid(WHAT, format!("{address:?}: the prefix length must be 0 to {max}")));
        }
    }
    Ok(())
}

/// Reads an OpenSSH certificate line (`ssh-ed25519-cert-v01@openssh.com AAAA... [comment]`),
/// as the platform or a test hands it back. At most 16 KiB.
pub(crate) fn parse_certificate(line: &str) -> Result<Certificate> {
    if line.len() > 16 * 1024 {
        return Err(Error::invalid("certificate", "longer than 16 KiB: not an OpenSSH certificate"));
    }
    // The line goes verbatim into certificate files and scripts: its comment must not carry a
    // control character or anything a shell or a terminal could read differently.
    if !line.trim().bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Error::invalid("certificate", "holds characters other than printable ASCII"));
    }
    Certificate::from_openssh(line.trim())
        .map_err(|_| Error::invalid("certificate", "not an OpenSSH certificate line"))
}

/// The magic number and format version that open a KRL (OpenSSH's PROTOCOL.krl).
const KRL_MAGIC: u64 = 0x5353_484b_524c_0a00;
const KRL_FORMAT_VERSION: u32 = 1;
/// The section of keys revoked by the SHA-256 hash of their public key blob: it revokes the
/// key and every certificate on it.
const KRL_SECTION_FINGERPRINT_SHA256: u8 = 5;

/// A KRL (OpenSSH's binary key revocation list, for sshd's `RevokedKeys`) revoking the keys
/// with these `SHA256:` fingerprints, and so every certificate on them. `version` must grow
/// with each list (the time it was made, say); `generated` is when it was made.
pub(crate) fn revoked_keys(
    fingerprints: &[String],
    version: u64,
    generated: OffsetDateTime,
) -> Result<Vec<u8>> {
    let mut hashes = Vec::with_capacity(fingerprints.len());
    for fingerprint in fingerprints {
        let parsed: Fingerprint =
            fingerprint.parse().map_err(|_| Error::invalid("fingerprint", "not a SHA256: fingerprint"))?;
        if parsed.algorithm() != russh::keys::HashAlg::Sha256 {
            return Err(Error::invalid("fingerprint", "not a SHA256: fingerprint"));
        }
        hashes.push(parsed.as_bytes().to_vec());
    }
    // ssh-keygen writes them sorted and once each; so do we.
    hashes.sort();
    hashes.dedup();
    let mut krl = Vec::with_capacity(64 + hashes.len() * 36);
    krl.extend_from_slice(&KRL_MAGIC.to_be_bytes());
    krl.extend_from_slice(&KRL_FORMAT_VERSION.to_be_bytes());
    krl.extend_from_slice(&version.to_be_bytes());
    krl.extend_from_slice(&u64::try_from(generated.unix_timestamp()).unwrap_or(0).to_be_bytes());
    krl.extend_from_slice(&0u64.to_be_bytes()); // flags
    put_string(&mut krl, b""); // reserved
    put_string(&mut krl, b"remote-access: keys of ended builds");
    if !hashes.is_empty() {
        let mut section = Vec::with_capacity(hashes.len() * 36);
        for hash in &hashes {
            put_string(&mut section, hash);
        }
        krl.push(KRL_SECTION_FINGERPRINT_SHA256);
        put_string(&mut krl, &section);
    }
    Ok(krl)
}

/// SSH's `string`: a big-endian u32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_certificate_says_what_the_build_allows() {
        let ca = SshCa::generate().unwrap();
        let user = HostKey::generate().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let end = now + time::Duration::hours(2);
        let build = BuildId::new("b-42").unwrap();
        let sources = ["10.0.0.0/24".to_owned(), "fd00::7".to_owned()];
        let mut what = UserCertificate {
            build_id: &build,
            principal: "builder",
            source_addresses: &sources,
            now,
            valid_before: end,
            port_forwarding: false,
        };
        let line = ca.user_certificate(user.key.public_key(), &what).unwrap();
        let cert = parse_certificate(&line).unwrap();
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.key_id(), "b-42");
        assert_eq!(cert.valid_principals(), ["builder".to_owned()]);
        assert_eq!(cert.valid_after(), 1_800_000_000 - 300);
        assert_eq!(cert.valid_before(), 1_800_000_000 + 7200);
        assert_eq!(cert.extensions().keys().collect::<Vec<_>>(), ["permit-pty"]);
        let options: Vec<(&String, &String)> = cert.critical_options().iter().collect();
        assert_eq!(options, [(&"source-address".to_owned(), &"10.0.0.0/24,fd00::7".to_owned())]);
        let ca_fingerprint = ca.0.key.public_key().fingerprint(russh::keys::HashAlg::Sha256);
        cert.validate_at(1_800_000_100, [&ca_fingerprint]).unwrap();
        assert!(cert.validate_at(1_800_000_000 + 7201, [&ca_fingerprint]).is_err(), "expired");
        what.port_forwarding = true;
        let forwarding = ca.user_certificate(user.key.public_key(), &what).unwrap();
        let cert = parse_certificate(&forwarding).unwrap();
        assert_eq!(cert.extensions().keys().collect::<Vec<_>>(), ["permit-port-forwarding", "permit-pty"]);
        // A valid certificate whose comment was changed to hold a control or non-ASCII
        // character (found by the text_formats fuzz target, in a bundle) is refused.
        let body = line.rsplit_once(' ').map(|(body, _)| body).unwrap();
        for comment in ["builder of b-42\u{93}", "builder\x1b[2J", "a\tb"] {
            let err = parse_certificate(&format!("{body} {comment}")).unwrap_err();
            assert!(err.to_string().contains("printable ASCII"), "{err}");
        }
        assert!(parse_certificate(&format!("{body} builder of b-42")).is_ok());
    }

    #[test]
    fn source_addresses_are_addresses_or_blocks_and_a_user_ca_needs_them() {
        assert!(check_source_addresses(false, &[]).is_ok());
        assert!(check_source_addresses(true, &[]).is_err());
        let ok = ["10.0.0.5", "10.0.0.0/24", "fd00::/64", "0.0.0.0/0"].map(str::to_owned);
        assert!(check_source_addresses(true, &ok).is_ok());
        for bad in ["10.0.0.0/33", "fd00::/129", "gw.example.com", "10.0.0.0/", "10.0.0.1,10.0.0.2", ""] {
            assert!(check_source_addresses(true, &[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_krl_lists_each_key_hash_once_sorted() {
        let a = HostKey::generate().unwrap().fingerprint();
        let b = HostKey::generate().unwrap().fingerprint();
        let krl = revoked_keys(&[a.clone(), b, a], 7, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(&krl[..8], b"SSHKRL\n\0");
        assert_eq!(&krl[12..20], &7u64.to_be_bytes());
        let header = 8 + 4 + 8 + 8 + 8 + 4 + 4 + "remote-access: keys of ended builds".len();
        assert_eq!(krl[header], KRL_SECTION_FINGERPRINT_SHA256);
        assert_eq!(krl.len(), header + 1 + 4 + 2 * (4 + 32));
        assert!(revoked_keys(&["MD5:00".into()], 1, OffsetDateTime::UNIX_EPOCH).is_err());
        let empty = revoked_keys(&[], 1, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(empty.len(), header);
    }
}
