//! The russh client handler of loopback tests.

/// A loopback test client's SSH handler: accepts any host key (the gateway's key is not what
/// such a test checks).
pub struct AnyKey;

impl russh::client::Handler for AnyKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
