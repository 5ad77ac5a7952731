//! Credentials as one secret text, for a platform that issues in one process and hands the
//! user their script from another (the `remote-access` command line does: `issue`, then
//! `script`). The store keeps only public halves, so this text is the only other place a
//! build's private key can live: it is a [`Secret`], and whoever holds it can log in as the
//! build's user until the build ends.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::{Credentials, Generated, GeneratedAgent};
use crate::build::BuildId;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// What the text says it is; a later format gets a new name.
const FORMAT: &str = "remote-access-credentials/1";
/// Longer texts are not credentials (two Ed25519 keys and a few names take about 1 KiB).
const MAX_BUNDLE: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    format: String,
    build_id: String,
    username: String,
    private_key: String,
    vnc_password: String,
    builder_vnc_password: Option<String>,
    builder_vnc_account: bool,
    agent: Option<AgentBundle>,
    /// Public, but part of what the scripts need; absent in bundles from before certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    builder_host_certificate: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBundle {
    username: String,
    private_key: String,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        self.private_key.zeroize();
        self.vnc_password.zeroize();
        self.builder_vnc_password.zeroize();
        if let Some(agent) = &mut self.agent {
            agent.private_key.zeroize();
        }
    }
}

impl Credentials {
    /// The credentials as one JSON text, private keys and passwords included: store it as you
    /// would the private key itself, and read it back with [`Credentials::from_bundle`].
    ///
    /// ```
    /// # use remote_access_core::*;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let authority = Authority::new(AuthorityOptions::default())?;
    /// let credentials = authority.issue(BuildRequest::new(BuildId::new("b-1")?, Trigger::Manual, true)).await?;
    /// let again = Credentials::from_bundle(credentials.to_bundle()?.expose())?;
    /// assert_eq!(again.fingerprint(), credentials.fingerprint());
    /// assert_eq!(again.vnc_password().expose(), credentials.vnc_password().expose());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_bundle(&self) -> Result<Secret<String>> {
        let agent = match (&self.agent, self.agent_private_key_openssh()?) {
            (Some(agent), Some(key)) => {
                Some(AgentBundle { username: agent.username.clone(), private_key: key.expose().clone() })
            }
            _ => None,
        };
        let bundle = Bundle {
            format: FORMAT.to_owned(),
            build_id: self.build_id.to_string(),
            username: self.username.clone(),
            private_key: self.private_key_openssh()?.expose().clone(),
            vnc_password: self.vnc_password.expose().clone(),
            builder_vnc_password: self.builder_vnc_password.as_ref().map(|p| p.expose().clone()),
            builder_vnc_account: self.builder_vnc_account,
            agent,
            certificate: self.certificate.clone(),
            builder_host_certificate: self.builder_host_certificate.clone(),
        };
        serde_json::to_string_pretty(&bundle)
            .map(Secret::new)
            .map_err(|err| Error::invalid("credentials", err.to_string()))
    }

    /// Reads credentials written by [`Credentials::to_bundle`], checking every field: the
    /// build id, the generated usernames, the keys (Ed25519, unencrypted) and the VNC password.
    pub fn from_bundle(text: &str) -> Result<Self> {
        if text.len() > MAX_BUNDLE {
            return Err(Error::invalid("credentials", "longer than 64 KiB: not a credentials bundle"));
        }
        let bundle: Bundle = serde_json::from_str(text).map_err(|err| {
            // serde's message quotes no input values for these errors, only positions and names.
            Error::invalid("credentials", format!("not a credentials bundle: {err}"))
        })?;
        if bundle.format != FORMAT {
            return Err(Error::invalid(
                "credentials",
                format!("format {:?}, expected {FORMAT:?}", bundle.format),
            ));
        }
        let build_id = BuildId::new(bundle.build_id.as_str())?;
        let key = read_key("private_key", &bundle.private_key)?;
        let username = checked_username("username", &bundle.username, "ra-")?;
        if bundle.vnc_password.chars().count() != 8
            || !bundle.vnc_password.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(Error::invalid("vnc_password", "not a generated 8-character VNC password"));
        }
        let fingerprint = key.public_key().fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let generated =
            Generated { username, key, fingerprint, vnc_password: Secret::new(bundle.vnc_password.clone()) };
        let mut credentials = Credentials::new(build_id, generated)?;
        credentials.builder_vnc_password = bundle.builder_vnc_password.clone().map(Secret::new);
        credentials.builder_vnc_account = bundle.builder_vnc_account;
        if let Some(line) = &bundle.certificate {
            let certificate = super::parse_certificate(line)?;
            if certificate.public_key() != credentials.key.public_key().key_data() {
                return Err(Error::invalid("certificate", "certifies another key than the bundle's"));
            }
            credentials.certificate = Some(line.trim().to_owned());
        }
        if let Some(line) = &bundle.builder_host_certificate {
            super::parse_certificate(line)?;
            credentials.builder_host_certificate = Some(line.trim().to_owned());
        }
        if let Some(agent) = &bundle.agent {
            let key = read_key("agent.private_key", &agent.private_key)?;
            let fingerprint = key.public_key().fingerprint(russh::keys::HashAlg::Sha256).to_string();
            let username = checked_username("agent.username", &agent.username, "rt-")?;
            credentials.agent = Some(GeneratedAgent { username, key, fingerprint });
        }
        Ok(credentials)
    }
}

/// An unencrypted Ed25519 private key in OpenSSH format.
fn read_key(what: &'static str, text: &str) -> Result<russh::keys::PrivateKey> {
    let key = russh::keys::decode_secret_key(text, None)
        .map_err(|_| Error::invalid(what, "not an unencrypted OpenSSH private key"))?;
    if key.algorithm() != russh::keys::Algorithm::Ed25519 {
        return Err(Error::invalid(what, "not an Ed25519 key: credentials hold only generated keys"));
    }
    Ok(key)
}

/// A generated username: `prefix` then lower-case letters and digits.
fn checked_username(what: &'static str, name: &str, prefix: &str) -> Result<String> {
    let rest = name.strip_prefix(prefix).unwrap_or_default();
    if rest.is_empty()
        || rest.len() > 60
        || !rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::invalid(what, format!("not a generated username ({prefix}...)")));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        let generated = crate::credential::generate().unwrap();
        Credentials::new(BuildId::new("bundle-1").unwrap(), generated).unwrap()
    }

    #[test]
    fn a_bundle_reads_back_the_same_credentials() {
        let mut original = credentials();
        original.builder_vnc_password = Some(Secret::new("builder1".into()));
        original.agent = Some(crate::credential::generate_agent().unwrap());
        let again = Credentials::from_bundle(original.to_bundle().unwrap().expose()).unwrap();
        assert_eq!(again.build_id(), original.build_id());
        assert_eq!(again.username(), original.username());
        assert_eq!(again.public_key(), original.public_key());
        assert_eq!(again.fingerprint(), original.fingerprint());
        assert_eq!(again.vnc_password().expose(), original.vnc_password().expose());
        assert_eq!(again.builder_vnc_password().map(|p| p.expose().clone()), Some("builder1".into()));
        assert_eq!(again.agent_fingerprint(), original.agent_fingerprint());
        assert_eq!(again.agent_username(), original.agent_username());
    }

    #[test]
    fn edited_bundles_are_refused_with_the_field() {
        let text = credentials().to_bundle().unwrap().expose().clone();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (field, value, what) in [
            ("format", serde_json::json!("remote-access-credentials/9"), "credentials"),
            ("build_id", serde_json::json!("b\nid"), "build id"),
            ("username", serde_json::json!("root"), "username"),
            ("private_key", serde_json::json!("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA"), "private_key"),
            ("vnc_password", serde_json::json!("short"), "vnc_password"),
            ("extra", serde_json::json!(1), "credentials"),
        ] {
            let mut edited = json.clone();
            edited[field] = value;
            let err = Credentials::from_bundle(&edited.to_string()).expect_err("refused");
            assert_eq!(err.code(), "invalid_input", "{field}: {err}");
            assert!(err.to_string().contains(what), "{field}: {err}");
        }
        assert!(Credentials::from_bundle(&"x".repeat(MAX_BUNDLE + 1)).is_err());
    }
}
