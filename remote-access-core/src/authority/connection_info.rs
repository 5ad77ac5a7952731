//! The connection details of an issued build, from what the authority keeps.

use super::Authority;
use crate::build::BuildId;
use crate::credential::HostKey;
use crate::error::Result;
use crate::script::{ConnectionInfo, ScriptOptions};

impl Authority {
    /// Everything a client needs to connect to the build, without secrets, as of now: the
    /// phase, the deadline (the actual one once the steps completed), a reconnect window, the
    /// end. One call for a web UI, at issue or at any time after (call it again to refresh,
    /// or [`ConnectionInfo::refresh`] with a session read meanwhile). The scripts also need
    /// the build's [`crate::credential::Credentials`], which only `issue` returns.
    pub async fn connection_info(
        &self,
        build_id: &BuildId,
        gateway_host_key: &HostKey,
        options: &ScriptOptions,
    ) -> Result<ConnectionInfo> {
        let session = self.session(build_id).await?;
        let record = self.credential_of(build_id).await?;
        ConnectionInfo::from_parts(
            &record.username,
            &record.key_fingerprint,
            &session,
            gateway_host_key,
            options,
        )
    }
}
