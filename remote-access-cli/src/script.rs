//! `remote-access script`: what the user gets, from the credentials `issue` wrote and the
//! session in Redis: the connection script (POSIX or PowerShell, holding the private key), the
//! VNC instructions, the connection info as JSON, or the known_hosts lines.

use remote_access_core::{ConnectionInfo, Credentials, HostKey, ScriptOptions, TlsIdentity};

use crate::args::{Args, Spec, Usage};
use crate::{Failure, Outcome, store};

pub(crate) const SUMMARY: &str = "print a build's connection script, VNC instructions or connection info";

pub(crate) const USAGE: &str = "usage: remote-access script --credentials FILE --gateway-host HOST --host-key-file PATH [OPTIONS]\n\n\
     Prints, for the build whose credentials `issue` wrote, what the user needs. The POSIX and\n\
     PowerShell scripts and the VNC instructions hold secrets: redirect them to a file of mode\n\
     600 (`umask 077`) or hand them straight to the user.\n\n\
     options:\n\
     \x20 --credentials FILE         the credentials.json `issue` wrote\n\
     \x20 --gateway-host HOST        the gateway's public host name or address\n\
     \x20 --gateway-port PORT        its public SSH port (default 22)\n\
     \x20 --host-key-file PATH       the fleet's SSH host key (the scripts pin its public half)\n\
     \x20 --format FORMAT            posix (default), powershell, vnc, json, known-hosts\n\
     \x20 --build-dir DIR            where the login shell starts (default $FCI_BUILD_DIR)\n\
     \x20 --vnc-tls-cert PATH        the gateways' VNC certificate: users are told to use VeNCrypt and wss://\n\
     \x20 --vnc-require-encryption   the gateways serve no unencrypted VNC\n\
     \x20 --no-vnc-websocket         the gateways serve no VNC over WebSocket\n\
     \x20 --builder-host-ca FILE     the host CA's public key (`ssh-ed25519 AAAA...`): the scripts trust\n\
     \x20                            builders' host certificates from it instead of pinned keys\n";

pub(crate) const SPEC: Spec = Spec {
    values: &[
        "credentials",
        "gateway-host",
        "gateway-port",
        "host-key-file",
        "format",
        "build-dir",
        "vnc-tls-cert",
        "builder-host-ca",
    ],
    switches: &["vnc-require-encryption", "no-vnc-websocket"],
    positional: 0,
    store: true,
};

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let format = args.value("format").unwrap_or("posix");
    if !matches!(format, "posix" | "powershell" | "vnc" | "json" | "known-hosts") {
        return Err(Usage(format!(
            "--format takes posix, powershell, vnc, json or known-hosts, not {format:?}"
        ))
        .into());
    }
    let read = |flag: &str| -> Result<String, Failure> {
        let path = args.required(flag)?;
        std::fs::read_to_string(path).map_err(|err| Failure::Other(format!("cannot read {path}: {err}")))
    };
    let credentials =
        Credentials::from_bundle(&remote_access_core::Secret::new(read("credentials")?).expose().clone())?;
    let host_key = HostKey::from_openssh(remote_access_core::Secret::new(read("host-key-file")?).expose())?;
    let mut options = ScriptOptions::new(
        args.required("gateway-host")?,
        args.parsed("gateway-port", "a port number")?.unwrap_or(22),
    );
    if let Some(dir) = args.value("build-dir") {
        options.build_dir = dir.to_owned();
    }
    if args.value("vnc-tls-cert").is_some() {
        // The certificate's public half is all this needs; its fingerprint identifies it.
        let pem = read("vnc-tls-cert")?;
        options.vnc_tls_fingerprint = Some(certificate_fingerprint(&pem)?);
    }
    if args.value("builder-host-ca").is_some() {
        let line = read("builder-host-ca")?;
        options.builder_host_ca = Some(line.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    }
    options.vnc_require_encryption = args.switch("vnc-require-encryption");
    options.vnc_websocket = !args.switch("no-vnc-websocket");

    crate::runtime()?.block_on(async {
        let authority = store::authority(&args, remote_access_core::AuthorityOptions::default())?;
        let session = store::waiting("Redis", authority.session(credentials.build_id())).await?;
        if let Some((reason, _)) = session.end() {
            return Err(Failure::Ended(reason.to_string()));
        }
        let info = ConnectionInfo::new(&credentials, &session, &host_key, &options)?;
        match format {
            "posix" => print!("{}", info.posix_script(&credentials)?.expose()),
            "powershell" => print!("{}", info.powershell_script(&credentials)?.expose()),
            "vnc" => match info.vnc_instructions(&credentials)? {
                Some(text) => print!("{}", text.expose()),
                None => return Err(Failure::Other("this build has no VNC".into())),
            },
            "json" => println!("{}", info.to_json()),
            _ => print!("{}", info.known_hosts()?),
        }
        Ok(())
    })
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as `TlsIdentity` computes it.
fn certificate_fingerprint(pem: &str) -> Result<String, Failure> {
    TlsIdentity::certificate_fingerprint(pem).map_err(Failure::from)
}
