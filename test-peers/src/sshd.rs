//! A real OpenSSH `sshd` playing the builder.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::programs::Run;
use crate::server::Server;

/// A real OpenSSH sshd on a loopback port, as the builder. Root logs in with keys from
/// `authorized_keys`; `FCI_BUILD_DIR` is set for every session.
pub struct Sshd {
    /// Its configuration, host key, `authorized_keys` and log.
    pub dir: tempfile::TempDir,
    /// The loopback address it listens on.
    pub address: IpAddr,
    /// The port it listens on.
    pub port: u16,
    /// Its host key, `type base64`.
    pub host_key: String,
    /// The directory `FCI_BUILD_DIR` names.
    pub build_dir: PathBuf,
    server: Server,
}

impl Sshd {
    /// An sshd on 127.0.0.1.
    pub fn start() -> Sshd {
        Self::start_on("127.0.0.1")
    }

    /// An sshd listening on another loopback address (e.g. 127.0.0.2).
    pub fn start_on(address: &str) -> Sshd {
        Self::start_with_env(address, &[])
    }

    /// An sshd on `address` whose sessions also get the variables `env` (`NAME`, `value`; no
    /// `"` or newline in either), as a builder image sets them with sshd's `SetEnv` (sshd
    /// takes only the first `SetEnv` line, so they share it with `FCI_BUILD_DIR`).
    pub fn start_with_env(address: &str, env: &[(&str, &str)]) -> Sshd {
        Self::start_with(address, env, "")
    }

    /// The same with `extra` lines appended to its `sshd_config` (e.g. `Banner FILE\n`).
    pub fn start_with(address: &str, env: &[(&str, &str)], extra: &str) -> Sshd {
        Self::start_inner(address, env, extra, None)
    }

    /// An sshd on `address` with a host certificate: `certify` gets its host public key (`type
    /// base64`) and returns the certificate line, which sshd presents (`HostCertificate`).
    /// `extra` lines are appended to its `sshd_config` (`TrustedUserCAKeys`, `RevokedKeys`).
    pub fn start_certified(address: &str, extra: &str, certify: &dyn Fn(&str) -> String) -> Sshd {
        Self::start_inner(address, &[], extra, Some(certify))
    }

    fn start_inner(
        address: &str,
        env: &[(&str, &str)],
        extra: &str,
        certify: Option<&dyn Fn(&str) -> String>,
    ) -> Sshd {
        let dir = tempfile::Builder::new().prefix("ra-sshd-").tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let build_dir = d.join("build dir");
        std::fs::create_dir_all(&build_dir).unwrap();
        let mut keygen = Command::new("ssh-keygen");
        keygen.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join("host_ed25519"));
        let out = keygen.finish();
        assert!(out.status.success(), "{keygen:?}: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(d.join("authorized_keys"), "").unwrap();
        let mut extra = extra.to_owned();
        if let Some(certify) = certify {
            let public = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
            let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            std::fs::write(d.join("host_ed25519-cert.pub"), format!("{}\n", certify(&public))).unwrap();
            extra.push_str(&format!("HostCertificate {}/host_ed25519-cert.pub\n", d.display()));
        }
        let mut set_env = format!("\"FCI_BUILD_DIR={}\"", build_dir.display());
        for (name, value) in env {
            assert!(!format!("{name}{value}").contains(['"', '\n']), "{name}={value:?} cannot be quoted");
            set_env.push_str(&format!(" \"{name}={value}\""));
        }
        let config = format!(
            "ListenAddress {address}\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n\
             AllowTcpForwarding yes\nSetEnv {set_env}\nLogLevel VERBOSE\n{extra}",
            d = d.display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let host_key = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let log = d.join("sshd.log");
        let (port, server) = Server::on_free_port(
            "sshd",
            |port| {
                let mut cmd = Command::new("/usr/sbin/sshd");
                cmd.args(["-D", "-e", "-f"])
                    .arg(d.join("sshd_config"))
                    .args(["-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap());
                cmd
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        Sshd { dir, address: address.parse().unwrap(), port, host_key, build_dir, server }
    }

    /// Lets `line` (an authorized_keys line) log in.
    pub fn authorize(&self, line: &str) {
        use std::io::Write;
        let mut file =
            std::fs::OpenOptions::new().append(true).open(self.dir.path().join("authorized_keys")).unwrap();
        writeln!(file, "{line}").unwrap();
    }

    /// The listening sshd's process id (its per-connection children are reaped into its
    /// `cutime`/`cstime`).
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}
