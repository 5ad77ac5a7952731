//! OpenSSH certificates against the real `sshd` as the builder: it trusts the authority's user
//! CA (`TrustedUserCAKeys`, no `authorized_keys` line for any build), presents a host
//! certificate from the host CA (`HostCertificate`), and reads the authority's KRL
//! (`RevokedKeys`). The users are the real `ssh` (the generated script, and direct logins that
//! bypass the gateway); `ssh-keygen` reads the certificates and the KRL and signs what the
//! authority would never sign.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::builds::*;
use remote_access_core::{
    Authority, AuthorityOptions, BuildRequest, ConnectionInfo, Credentials, Policy, ScriptOptions, SshCa,
};
use remote_access_test_peers::*;

struct Fixture {
    user_ca: SshCa,
    host_ca: SshCa,
    authority: Authority,
    builder: Sshd,
    /// The builder's `RevokedKeys` file.
    krl: PathBuf,
    scratch: tempfile::TempDir,
}

/// An authority with both CAs, and a builder sshd trusting the user CA, presenting a host
/// certificate for 127.0.0.1 and reading the authority's KRL.
async fn fixture() -> Fixture {
    let (user_ca, host_ca) = (SshCa::generate().unwrap(), SshCa::generate().unwrap());
    let mut options = AuthorityOptions::default();
    options.user_ca = Some(user_ca.clone());
    // The gateway (and the tests' direct logins, "a misrouted network") reach the builder from
    // 127.0.0.1; another loopback address plays another builder.
    options.certificate_source_addresses = vec!["127.0.0.1".to_owned()];
    options.host_ca = Some(host_ca.clone());
    let authority = authority(options);
    let scratch = tempfile::tempdir().unwrap();
    let ca_file = write(scratch.path(), "user-ca.pub", format!("{}\n", user_ca.public_key()).as_bytes());
    let krl = write(scratch.path(), "revoked.krl", &authority.revoked_keys().await.unwrap());
    let extra = format!(
        "TrustedUserCAKeys {}\nRevokedKeys {}\nAuthorizedKeysFile none\n",
        ca_file.display(),
        krl.display()
    );
    let signer = authority.clone();
    let certify = move |host_key: &str| {
        signer.certify_host(host_key, &["127.0.0.1".parse().unwrap()], Duration::from_secs(3600)).unwrap()
    };
    let builder = Sshd::start_certified("127.0.0.1", &extra, &certify);
    Fixture { user_ca, host_ca, authority, builder, krl, scratch }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    path
}

/// The build's key and certificate, written for a direct login.
fn key_files(creds: &Credentials, dir: &Path) -> (PathBuf, PathBuf) {
    let name = creds.build_id().as_str();
    let key = write(dir, &format!("{name}.key"), creds.private_key_openssh().unwrap().expose().as_bytes());
    let cert = write(dir, &format!("{name}.cert"), format!("{}\n", creds.certificate().unwrap()).as_bytes());
    (key, cert)
}

/// `ssh` straight to the builder, bypassing the gateway (a misrouted network): the exit code and
/// what it said.
async fn direct(builder: &Sshd, user: &str, key: &Path, cert: &Path) -> (i32, String) {
    direct_from("127.0.0.1", builder, user, key, cert).await
}

/// The same from the loopback address `from` (as from another machine).
async fn direct_from(from: &str, builder: &Sshd, user: &str, key: &Path, cert: &Path) -> (i32, String) {
    let (code, _, stderr) = output_of(
        tokio::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-b", from, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .arg("-i")
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args(["-p", &builder.port.to_string(), &format!("{user}@127.0.0.1"), "true"]),
    )
    .await;
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_that_trusts_the_ca_lets_the_build_in_through_the_gateway_and_shows_the_fields() {
    let f = fixture().await;
    let metrics_port = free_port();
    let mut options = gateway_options();
    options.metrics_address = Some(([127, 0, 0, 1], metrics_port).into());
    let gateway = remote_access_core::Gateway::new(f.authority.clone(), options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    let creds = f.authority.issue(request("certified", f.builder.builder())).await.unwrap();
    // No authorized_keys line anywhere: the builder has `AuthorizedKeysFile none`.
    let session = f.authority.session(creds.build_id()).await.unwrap();
    let mut options = ScriptOptions::new("127.0.0.1", running.local_addr().port());
    options.builder_host_ca = Some(f.host_ca.public_key());
    let info = ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
    let script = info.posix_script(&creds).unwrap();
    assert!(!script.expose().contains("accept-new"), "no first-use trust anywhere");
    assert!(script.expose().contains(&format!("@cert-authority 127.0.0.1,[127.0.0.1]:{} ", f.builder.port)));
    let path = write_script(f.scratch.path(), "certified.sh", script.expose());
    let (code, stdout, stderr) = run_script(&path, &["echo", "in-by-certificate"]).await;
    assert_eq!(code, 0, "{stderr}\n{}", f.builder.log());
    assert!(stdout.contains("in-by-certificate"), "{stdout}");
    assert!(f.builder.log().contains("Accepted publickey for root"), "{}", f.builder.log());
    assert!(f.builder.log().contains("ID certified (serial"), "the builder logged the certificate");
    // What ssh-keygen reads in it: the fields docs/ssh.md promises.
    let (_, cert) = key_files(&creds, f.scratch.path());
    let (code, shown, stderr) =
        output_of(tokio::process::Command::new("ssh-keygen").env("TZ", "UTC").arg("-L").arg("-f").arg(&cert))
            .await;
    assert_eq!(code, 0, "{stderr}");
    let shown: Vec<&str> = shown.lines().map(str::trim).collect();
    for line in [
        "Type: ssh-ed25519-cert-v01@openssh.com user certificate",
        "Key ID: \"certified\"",
        "Critical Options:",
        "source-address 127.0.0.1",
        "permit-pty",
    ] {
        assert!(shown.contains(&line), "{line:?} in {shown:#?}");
    }
    let principals = shown.iter().position(|l| *l == "Principals:").unwrap();
    assert_eq!(shown[principals + 1], "root");
    assert!(!shown.iter().any(|l| l.contains("agent") || l.contains("X11") || l.contains("user-rc")));
    // Valid until the build's latest possible end (ssh-keygen prints local time: TZ=UTC).
    let valid = shown.iter().find(|l| l.starts_with("Valid: from ")).unwrap();
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let until = session.max_end().format(&format).unwrap();
    assert!(valid.ends_with(&format!(" to {until}")), "{valid} (max end {until})");
    assert!(
        shown.contains(
            &format!("Signing CA: ED25519 {} (using ssh-ed25519)", f.user_ca.fingerprint()).as_str()
        )
    );
    // From anywhere but the gateways' address (another builder on the network, trusting the same
    // CA with the same login user), the live build's certificate opens nothing.
    let (key, cert) = key_files(&creds, f.scratch.path());
    let (code, stderr) = direct_from("127.0.0.5", &f.builder, "root", &key, &cert).await;
    assert_eq!(code, 255, "the certificate worked from another address: {stderr}");
    // The build ends; an agent on the builder fetches the KRL from the gateway's metrics
    // address (curl), and the builder refuses the certificate even to a direct login.
    assert_eq!(direct(&f.builder, "root", &key, &cert).await.0, 0);
    f.authority.revoke(creds.build_id(), "the test ends it").await.unwrap();
    let url = format!("http://127.0.0.1:{metrics_port}/revoked-keys");
    let (code, _, stderr) =
        output_of(tokio::process::Command::new("curl").args(["-fsS", "-o"]).arg(&f.krl).arg(&url)).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = direct(&f.builder, "root", &key, &cert).await;
    assert_eq!(code, 255, "the certificate of a build that ended got in: {stderr}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_itself_refuses_another_principal_an_expired_certificate_and_a_revoked_build() {
    let f = fixture().await;
    let dir = f.scratch.path();
    // A certificate the CA signed for another principal (ssh-keygen, with the CA's key): the
    // builder refuses root with it.
    let creds = f.authority.issue(request("principal", f.builder.builder())).await.unwrap();
    let (key, _) = key_files(&creds, dir);
    let ca_key = write(dir, "user-ca", f.user_ca.to_openssh().unwrap().expose().as_bytes());
    let public = write(dir, "other.pub", format!("{}\n", creds.public_key()).as_bytes());
    let (code, _, stderr) = output_of(
        tokio::process::Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca_key)
            .args(["-I", "other", "-n", "someone-else", "-V", "-5m:+1h"])
            .arg(&public),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = direct(&f.builder, "root", &key, &dir.join("other-cert.pub")).await;
    assert_eq!(code, 255, "another principal got in: {stderr}");
    // The build's own certificate works directly, until it expires: a build started almost
    // its maximum duration ago has 15 s left, and then the builder refuses it.
    let mut request = request("expiring", f.builder.builder());
    let mut policy = Policy::default();
    policy.max_build_duration = Duration::from_secs(3600);
    request.policy = Some(policy);
    request.started_at = Some(time::OffsetDateTime::now_utc() - Duration::from_secs(3600 - 15));
    let expiring = f.authority.issue(request).await.unwrap();
    let (key, cert) = key_files(&expiring, dir);
    let (code, stderr) = direct(&f.builder, "root", &key, &cert).await;
    assert_eq!(code, 0, "the certificate is valid for now: {stderr}\n{}", f.builder.log());
    let valid_before = f.authority.session(expiring.build_id()).await.unwrap().max_end();
    let left = valid_before - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(2)).await;
    let (code, stderr) = direct(&f.builder, "root", &key, &cert).await;
    assert_eq!(code, 255, "an expired certificate got in: {stderr}");
    assert!(f.builder.log().contains("expired"), "{}", f.builder.log());
    // A revoked build: in until the KRL lists it, refused by the builder after.
    let revoked = f.authority.issue(request_for(&f, "revoked")).await.unwrap();
    let (key, cert) = key_files(&revoked, dir);
    assert_eq!(direct(&f.builder, "root", &key, &cert).await.0, 0);
    f.authority.revoke(revoked.build_id(), "the test revokes it").await.unwrap();
    let krl = f.authority.revoked_keys().await.unwrap();
    std::fs::write(&f.krl, &krl).unwrap();
    let (code, stderr) = direct(&f.builder, "root", &key, &cert).await;
    assert_eq!(code, 255, "a revoked build's certificate got in: {stderr}");
    // ssh-keygen reads the KRL as OpenSSH's: the revoked key is in it, a live build's is not.
    let live = f.authority.issue(request_for(&f, "live")).await.unwrap();
    for (creds, want) in [(&revoked, "REVOKED"), (&live, "ok")] {
        let public = write(dir, "query.pub", format!("{}\n", creds.public_key()).as_bytes());
        let (_, out, stderr) = output_of(
            tokio::process::Command::new("ssh-keygen").arg("-Q").arg("-f").arg(&f.krl).arg(&public),
        )
        .await;
        assert!(out.contains(want), "{} in the KRL: {out} {stderr}", creds.build_id());
    }
    let (key, cert) = key_files(&live, dir);
    assert_eq!(direct(&f.builder, "root", &key, &cert).await.0, 0, "the KRL holds back only the revoked");
}

fn request_for(f: &Fixture, id: &str) -> BuildRequest {
    request(id, f.builder.builder())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_refuses_a_builder_whose_host_certificate_another_ca_signed() {
    let f = fixture().await;
    let gateway = gateway(&f.authority);
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    // A builder at the same address whose host certificate another CA signed: an impostor.
    let stranger = SshCa::generate().unwrap();
    let mut options = AuthorityOptions::default();
    options.host_ca = Some(stranger);
    let other = authority(options);
    let certify = move |host_key: &str| {
        other.certify_host(host_key, &["127.0.0.1".parse().unwrap()], Duration::from_secs(3600)).unwrap()
    };
    let ca_file = f.scratch.path().join("user-ca.pub");
    let impostor =
        Sshd::start_certified("127.0.0.1", &format!("TrustedUserCAKeys {}\n", ca_file.display()), &certify);
    let creds = f.authority.issue(request("impostor", impostor.builder())).await.unwrap();
    let session = f.authority.session(creds.build_id()).await.unwrap();
    let mut options = ScriptOptions::new("127.0.0.1", running.local_addr().port());
    options.builder_host_ca = Some(f.host_ca.public_key());
    let info = ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
    let path = write_script(f.scratch.path(), "impostor.sh", info.posix_script(&creds).unwrap().expose());
    let (code, _, stderr) = run_script(&path, &["true"]).await;
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(!impostor.log().contains("Accepted publickey"), "{}", impostor.log());
    running.stop().await.unwrap();
}
