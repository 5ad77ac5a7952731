//! What a Redis store hands back for a build's credential: the record (JSON) and its
//! revocation (JSON), as `RedisStore` decodes them. Redis sits on the network; a record written
//! by another program, an older version or an attacker with write access must be an error,
//! never a panic. What decodes must encode back to a record that decodes to the same values.
//!
//! The input is the record, then optionally 0xFF and the revocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_access_core::BuildId;
use remote_access_core::fuzzing::redis_credential;

fuzz_target!(|data: &[u8]| {
    let (record, revoked) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let build_id = BuildId::new("fuzz-1").expect("a valid id");
    let Ok((decoded, encoded, revocation)) = redis_credential(&build_id, record, revoked) else { return };
    assert!(record.len() <= 64 * 1024, "records over the limit are refused");
    assert_eq!(decoded.build_id, build_id, "the build comes from the key, never the record");
    let (again, encoded_again, revocation_again) =
        redis_credential(&build_id, &encoded, revocation.as_deref().map(str::as_bytes)).expect("what we write reads back");
    assert_eq!(encoded, encoded_again, "encoding is stable");
    assert_eq!(revocation, revocation_again);
    assert_eq!(again.username, decoded.username);
    assert_eq!(again.key_fingerprint, decoded.key_fingerprint);
    assert_eq!(again.vnc_password.expose(), decoded.vnc_password.expose());
    assert_eq!(again.password_digest, decoded.password_digest);
    assert_eq!(again.agent_username, decoded.agent_username);
    assert_eq!(again.agent_key_fingerprint, decoded.agent_key_fingerprint);
    assert_eq!(
        again.builder_vnc_password.as_ref().map(|p| p.expose().clone()),
        decoded.builder_vnc_password.as_ref().map(|p| p.expose().clone())
    );
    assert_eq!(again.builder_vnc_username, decoded.builder_vnc_username);
    assert_eq!(again.revoked, decoded.revoked);
});
