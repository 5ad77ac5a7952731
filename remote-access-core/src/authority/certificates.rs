//! OpenSSH certificates and the key revocation list, with the authority's CAs
//! (`AuthorityOptions::user_ca`, `AuthorityOptions::host_ca`).

use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use super::Authority;
use crate::build::Builder;
use crate::credential::{self, Credentials};
use crate::error::{Error, Result};
use crate::session::Policy;

impl Authority {
    /// Signs a build's certificates at issue: the user key's, for the builder's login user,
    /// with a user CA; the builder's host key's, for its address, with a host CA. Both are
    /// valid until the build's latest possible end.
    pub(super) fn certify(
        &self,
        credentials: &mut Credentials,
        builder: Option<&Builder>,
        now: OffsetDateTime,
        max_end: OffsetDateTime,
    ) -> Result<()> {
        let Some(builder) = builder else { return Ok(()) };
        if let Some(ca) = &self.inner.options.user_ca {
            let mut sources = self.inner.options.certificate_source_addresses.clone();
            if builder.reverse_tunnel {
                // The agent on the builder dials its sshd over loopback.
                sources.extend(["127.0.0.1/32".to_owned(), "::1/128".to_owned()]);
            }
            let user = credential::UserCertificate {
                build_id: &credentials.build_id,
                principal: &builder.user,
                source_addresses: &sources,
                now,
                valid_before: max_end,
                port_forwarding: !builder.extra_ports.is_empty(),
            };
            credentials.certificate = Some(ca.user_certificate(credentials.key.public_key(), &user)?);
        }
        if let (Some(ca), Some(host_key)) = (&self.inner.options.host_ca, &builder.host_key) {
            let key_id = format!("builder of {}", credentials.build_id);
            credentials.builder_host_certificate =
                Some(ca.host_certificate(host_key, &[builder.address], &key_id, now, max_end)?);
        }
        Ok(())
    }

    /// Signs a builder's host key (`ssh-ed25519 AAAA...`) with the host CA for the addresses
    /// users' scripts dial it at, valid for `valid_for` from now: for a builder's agent to call
    /// at boot, before any build is issued (`issue` signs `Builder::host_key` itself). Install
    /// the text as the builder sshd's `HostCertificate`.
    pub fn certify_host(&self, host_key: &str, addresses: &[IpAddr], valid_for: Duration) -> Result<String> {
        let ca = self.inner.options.host_ca.as_ref().ok_or_else(|| {
            Error::invalid("host_ca", "the authority has no host CA (AuthorityOptions::host_ca)")
        })?;
        if valid_for.is_zero() || valid_for > Policy::MAX_DURATION {
            return Err(Error::invalid("valid_for", "from 1 second to 366 days"));
        }
        let now = self.now();
        let key_id =
            format!("builder {}", addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(","));
        ca.host_certificate(host_key, addresses, &key_id, now, crate::clock::later(now, valid_for))
    }

    /// A key revocation list (OpenSSH's binary KRL, for a builder sshd's `RevokedKeys`) of the
    /// user keys of every ended build whose certificate would still be valid: a revoked or
    /// finished build's certificate is then refused by the builder itself, even through a path
    /// that bypasses the gateway. It revokes those keys in `authorized_keys` lines too. Make it
    /// again whenever builds end (sshd reads the file at each login); an agent on the builder
    /// can fetch it every minute.
    pub async fn revoked_keys(&self) -> Result<Vec<u8>> {
        let now = self.now();
        // One read: the store keeps the list apart from the records it purges.
        let fingerprints = self.inner.store.revoked_fingerprints(now).await?;
        let version = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        credential::revoked_keys(&fingerprints, version, now)
    }
}
