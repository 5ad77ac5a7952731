//! `remote-access issue`: a build's credentials, issued against the fleet's Redis. The secrets
//! go to files in a private directory, never to stdout: the credentials bundle (for `script`)
//! and the builder's VNC password file; stdout says what to install on the builder.

use std::path::Path;
use std::time::Duration;

use remote_access_core::{AuthorityOptions, BuildId, BuildRequest, Builder, Policy, Trigger};

use crate::args::{Args, Spec, Usage};
use crate::{Outcome, output, store};

pub(crate) const SUMMARY: &str = "issue a build's credentials (secrets to files in --out DIR)";

pub(crate) const USAGE: &str = "usage: remote-access issue BUILD_ID --builder ADDRESS --out DIR [OPTIONS]\n\n\
     Issues credentials for a build started by hand with remote access enabled. Writes, in DIR\n\
     (created mode 700): credentials.json (the bundle `script` reads; it holds the private key)\n\
     and, when the builder has VNC, builder-vnc.passwd (the password file for the builder's VNC\n\
     server). Prints the build's gateway username, key fingerprint, the authorized_keys line to\n\
     install on the builder, the VNC port and when access ends at the latest.\n\n\
     options:\n\
     \x20 --builder ADDRESS          the builder's private IP address\n\
     \x20 --builder-ssh-port PORT    its sshd port (default 22)\n\
     \x20 --builder-user USER        the account users get (default root)\n\
     \x20 --builder-host-key KEY     its host key, `ssh-ed25519 AAAA...`, pinned in the scripts\n\
     \x20 --builder-vnc-port PORT    its VNC server's port, if it has one\n\
     \x20 --trigger NAME             manual (default), webhook, scheduled or api: only manual builds get access\n\
     \x20 --grace-minutes N          access after the steps complete (default 20)\n\
     \x20 --max-build-minutes N      the build's maximum duration (default 120)\n\
     \x20 --reconnect-minutes N      after a lost connection, the time to reconnect (default 2)\n\
     \x20 --vnc-port PORT            a gateway VNC port (repeat; the gateways' list)\n\
     \x20 --user-ca FILE             the fleet's SSH user CA (OpenSSH private key): the build's key\n\
     \x20                            also gets a certificate, for builders with TrustedUserCAKeys\n\
     \x20 --certificate-source ADDR  with --user-ca: an address or CIDR block builders see the\n\
     \x20                            gateways connect from (repeat); the certificate works only from there\n\
     \x20 --host-ca FILE             the fleet's SSH host CA: with --builder-host-key, the builder's\n\
     \x20                            host certificate goes to DIR/builder-host-cert.pub\n\
     \x20 --out DIR                  where the secret files go\n\
     \x20 --json                     print JSON instead of text\n";

pub(crate) const SPEC: Spec = Spec {
    values: &[
        "builder",
        "builder-ssh-port",
        "builder-user",
        "builder-host-key",
        "builder-vnc-port",
        "trigger",
        "grace-minutes",
        "max-build-minutes",
        "reconnect-minutes",
        "vnc-port",
        "user-ca",
        "certificate-source",
        "host-ca",
        "out",
    ],
    switches: &["json"],
    positional: 1,
    store: true,
};

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let build_id = BuildId::new(args.positional(0, "BUILD_ID")?)?;
    let address = args.required("builder")?;
    let address =
        address.parse().map_err(|_| Usage(format!("--builder takes an IP address, not {address:?}")))?;
    let mut builder = Builder::new(address);
    if let Some(port) = args.parsed("builder-ssh-port", "a port number")? {
        builder.ssh_port = port;
    }
    if let Some(user) = args.value("builder-user") {
        builder.user = user.to_owned();
    }
    builder.host_key = args.value("builder-host-key").map(str::to_owned);
    builder.vnc_port = args.parsed("builder-vnc-port", "a port number")?;
    let trigger: Trigger = args.value("trigger").unwrap_or("manual").parse()?;
    let mut policy = Policy::default();
    if let Some(minutes) = args.parsed::<u64>("grace-minutes", "a number of minutes")? {
        policy.grace = Duration::from_secs(minutes * 60);
    }
    if let Some(minutes) = args.parsed::<u64>("max-build-minutes", "a number of minutes")? {
        policy.max_build_duration = Duration::from_secs(minutes * 60);
    }
    if let Some(minutes) = args.parsed::<u64>("reconnect-minutes", "a number of minutes")? {
        policy.reconnect_window = Duration::from_secs(minutes * 60);
    }
    let mut options = AuthorityOptions::default();
    options.user_ca = store::ca(&args, "user-ca")?;
    options.certificate_source_addresses = args.values("certificate-source").to_vec();
    options.host_ca = store::ca(&args, "host-ca")?;
    options.vnc_ports =
        args.values("vnc-port").iter().map(|p| p.parse::<u16>()).collect::<Result<Vec<_>, _>>().map_err(
            |_| Usage(format!("--vnc-port takes a port number, not {:?}", args.values("vnc-port"))),
        )?;
    let out = Path::new(args.required("out")?);
    let mut request = BuildRequest::new(build_id.clone(), trigger, true);
    request.policy = Some(policy);
    request.builder = Some(builder);

    crate::runtime()?.block_on(async {
        let authority = store::authority(&args, options)?;
        // The directory first: no credentials are issued that could not be written.
        output::private_dir(out)?;
        let bundle_path = out.join("credentials.json");
        if bundle_path.exists() {
            return Err(crate::Failure::Other(format!(
                "{} exists: use a new --out directory",
                bundle_path.display()
            )));
        }
        let credentials = store::waiting("Redis", authority.issue(request)).await?;
        output::private_file(&bundle_path, credentials.to_bundle()?.expose().as_bytes())?;
        let vnc_file = match credentials.builder_vnc_password_file() {
            Some(file) => {
                let path = out.join("builder-vnc.passwd");
                output::private_file(&path, file.expose())?;
                Some(path)
            }
            None => None,
        };
        let host_cert_file = match credentials.builder_host_certificate() {
            Some(certificate) => {
                let path = out.join("builder-host-cert.pub");
                output::private_file(&path, format!("{certificate}\n").as_bytes())?;
                Some(path)
            }
            None => None,
        };
        let session = authority.session(&build_id).await?;
        let (deadline, rule) = (output::time(session.deadline()), session.access_rule());
        if args.switch("json") {
            output::json(&serde_json::json!({
                "build_id": build_id.as_str(),
                "gateway_user": credentials.username(),
                "key_fingerprint": credentials.fingerprint(),
                "authorized_keys_line": credentials.authorized_keys_line(),
                "vnc_port": session.vnc_port(),
                "deadline": deadline,
                "max_end": output::time(session.max_end()),
                "access_rule": rule,
                "credentials_file": bundle_path,
                "builder_vnc_password_file": vnc_file,
                "certificate": credentials.certificate(),
                "builder_host_certificate_file": host_cert_file,
            }));
        } else {
            let mut rows = vec![
                ("build", build_id.to_string()),
                ("gateway user", credentials.username().to_owned()),
                ("key fingerprint", credentials.fingerprint().to_owned()),
                (
                    "credentials",
                    format!(
                        "{} (secret: the private key; for `remote-access script`)",
                        bundle_path.display()
                    ),
                ),
                ("access", rule),
            ];
            if let Some(port) = session.vnc_port() {
                rows.push(("gateway vnc port", port.to_string()));
            }
            if let Some(path) = &vnc_file {
                rows.push((
                    "builder vnc file",
                    format!("{} (install as the builder VNC server's password file)", path.display()),
                ));
            }
            if let Some(path) = &host_cert_file {
                rows.push((
                    "builder host cert",
                    format!("{} (install as the builder sshd's HostCertificate)", path.display()),
                ));
            }
            output::lines(&rows);
            if credentials.certificate().is_some() {
                println!(
                    "the build's key has a certificate: builders that trust the user CA need nothing else"
                );
            } else {
                println!(
                    "install on the builder (~/.ssh/authorized_keys of {}):",
                    session.builder().map(|b| b.user.as_str()).unwrap_or("builder")
                );
                println!("{}", credentials.authorized_keys_line());
            }
        }
        Ok(())
    })
}
