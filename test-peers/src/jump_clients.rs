//! SSH clients other than OpenSSH's, run the way their users reach a builder through a jump
//! host (the gateway): Dropbear's `dbclient` (multihop), PuTTY's `plink` (`-proxycmd "plink
//! -nc ..."`), paramiko (a direct-tcpip channel carrying a second transport), and libssh2 (`curl`
//! over `sftp://`, which cannot jump, and a ProxyCommand written against the system's
//! `libssh2.so.1`). Every client pins the host key of every hop it makes.
//!
//! Each client gets a private `HOME` in the scratch directory, so that nothing from the
//! machine's own `~/.ssh` or `~/.putty` takes part and nothing is written there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::programs::{Run, missing, require};

/// One SSH hop: where, as whom, and the host key to expect (`ssh-ed25519 AAAA...`).
#[derive(Debug, Clone)]
pub struct Hop {
    /// A loopback address, e.g. `127.0.0.1`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The host key to pin, `type base64` (a trailing comment is ignored).
    pub host_key: String,
}

impl Hop {
    /// The host key's `SHA256:...` fingerprint, as OpenSSH and PuTTY print it.
    pub fn fingerprint(&self) -> String {
        let key = russh::keys::PublicKey::from_openssh(&self.host_key).expect("an OpenSSH public key");
        key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
    }

    /// `[host]:port type base64`, a `known_hosts` line as OpenSSH and paramiko read it.
    fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}\n", self.host, self.port, self.key_text())
    }

    /// The host key without a comment.
    fn key_text(&self) -> String {
        self.host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }
}

/// Which paramiko runs [`JumpClients::paramiko`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paramiko {
    /// Debian's `python3-paramiko` (2.12 in Debian 12) under `/usr/bin/python3`.
    Debian,
    /// The current paramiko in the tests' virtual environment (`pip install paramiko==5.1.0`).
    Current,
}

impl Paramiko {
    /// The Python interpreter that has this paramiko; panics, naming what to install, if it is
    /// missing or cannot import paramiko.
    #[track_caller]
    pub fn python(self) -> PathBuf {
        let (python, package) = match self {
            Paramiko::Debian => (PathBuf::from("/usr/bin/python3"), "python3-paramiko"),
            Paramiko::Current => {
                let venv =
                    std::env::var_os("REMOTE_ACCESS_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/remote-access/test-venv")
                    });
                (venv.join("bin/python"), "paramiko")
            }
        };
        let out = Command::new(&python)
            .args(["-c", "import paramiko; print(paramiko.__version__)"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => python,
            Ok(out) => {
                let why = format!(
                    "{} cannot import paramiko: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                panic!("{}", missing(package, &why))
            }
            Err(err) => panic!("{}", missing(package, &format!("{}: {err}", python.display()))),
        }
    }
}

/// The user's side of one build, as each client needs it: the key in the formats the clients
/// read, pinned host keys, and a private `HOME` per client, in a scratch directory.
pub struct JumpClients {
    dir: tempfile::TempDir,
    /// The user's private key, OpenSSH format (mode 600).
    key: PathBuf,
    /// Its public half, `ssh-ed25519 AAAA...` (libssh2 wants it as a file).
    public_key: PathBuf,
    /// The gateway.
    pub gateway: Hop,
    /// The builder, reached from the gateway.
    pub builder: Hop,
}

/// A word `sh -c` reads back as `word`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Runs a helper program to its end; panics with its output unless it succeeds.
#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).finish();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl JumpClients {
    /// Writes the user's key (`private_key_openssh`, and `public_key` as `type base64`) to a new
    /// scratch directory.
    pub fn new(private_key_openssh: &str, public_key: &str, gateway: Hop, builder: Hop) -> JumpClients {
        let dir = tempfile::Builder::new().prefix("ra-clients-").tempdir().unwrap();
        let key = private_file(dir.path(), "user_key", private_key_openssh);
        let public_key = private_file(dir.path(), "user_key.pub", &format!("{public_key}\n"));
        JumpClients { dir, key, public_key, gateway, builder }
    }

    /// The scratch directory (the tests put a file here to let a held command end).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An empty `HOME` for one client.
    fn home(&self, client: &str) -> PathBuf {
        let home = self.dir.path().join(format!("home-{client}"));
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    /// Dropbear's multihop: `dbclient -i KEY gwuser@localhost/GWPORT,user@BUILDER/PORT COMMAND`,
    /// both host keys pinned in `~/.ssh/known_hosts` of a private `HOME`. The key is converted
    /// with `dropbearconvert openssh dropbear`.
    ///
    /// Dropbear 2022.83 looks hosts up in `known_hosts` by name alone, not `[host]:port`, so the
    /// two hops need two names: the gateway is reached as `localhost` (it must listen on
    /// 127.0.0.1) and the builder by its address, which is what the gateway routes.
    pub fn dbclient(&self, command: &str) -> tokio::process::Command {
        assert_eq!(self.gateway.host, "127.0.0.1", "dbclient reaches the gateway as localhost");
        assert_ne!(self.builder.host, "localhost");
        require("/usr/bin/dropbearconvert");
        let key = self.dir.path().join("user_key.dropbear");
        run(Command::new("/usr/bin/dropbearconvert").args(["openssh", "dropbear"]).arg(&self.key).arg(&key));
        let home = self.home("dbclient");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let known = format!(
            "localhost {}\n{} {}\n",
            self.gateway.key_text(),
            self.builder.host,
            self.builder.key_text()
        );
        private_file(&home.join(".ssh"), "known_hosts", &known);
        let hops = format!(
            "{}@localhost/{},{}@{}/{}",
            self.gateway.user, self.gateway.port, self.builder.user, self.builder.host, self.builder.port
        );
        let mut cmd = tokio::process::Command::new("/usr/bin/dbclient");
        cmd.env("HOME", &home).arg("-i").arg(&key).arg(hops).arg(command);
        cmd
    }

    /// PuTTY: `plink -v -load ra-through-gateway -batch -ssh -i KEY.ppk -hostkey BUILDER_FP
    /// -proxycmd "plink -v -batch -ssh -i KEY.ppk -hostkey GW_FP -P GWPORT -nc BUILDER:PORT
    /// gwuser@GW" -P PORT user@BUILDER COMMAND`.
    ///
    /// plink never uses a proxy for a loopback destination unless the session says
    /// `ProxyLocalhost`: the saved session `ra-through-gateway` (in a private `HOME`'s
    /// `~/.putty/sessions`, whose lines are `Key=value`) sets it. With `-v`, plink copies the
    /// proxy command's stderr into its own, prefixed with `proxy: `. The key is converted with
    /// `puttygen KEY -O private -o KEY.ppk`.
    pub fn plink(&self, command: &str) -> tokio::process::Command {
        require("puttygen");
        require("plink");
        let key = self.dir.path().join("user_key.ppk");
        run(Command::new("puttygen").arg(&self.key).args(["-O", "private", "-o"]).arg(&key));
        let home = self.home("plink");
        let sessions = home.join(".putty/sessions");
        std::fs::create_dir_all(&sessions).unwrap();
        private_file(&sessions, "ra-through-gateway", "ProxyLocalhost=1\n");
        let proxy = [
            "plink",
            "-v",
            "-batch",
            "-ssh",
            "-i",
            key.to_str().unwrap(),
            "-hostkey",
            &self.gateway.fingerprint(),
            "-P",
            &self.gateway.port.to_string(),
            "-nc",
            &format!("{}:{}", self.builder.host, self.builder.port),
            &format!("{}@{}", self.gateway.user, self.gateway.host),
        ]
        .map(sh_quote)
        .join(" ");
        let mut cmd = tokio::process::Command::new("plink");
        cmd.env("HOME", &home)
            .args(["-v", "-load", "ra-through-gateway", "-batch", "-ssh", "-i"])
            .arg(&key)
            .args(["-hostkey", &self.builder.fingerprint(), "-proxycmd", &proxy])
            .args(["-P", &self.builder.port.to_string()])
            .arg(format!("{}@{}", self.builder.user, self.builder.host))
            .arg(command);
        cmd
    }

    /// paramiko's jump (`paramiko_jump.py`): a client to the gateway, a `direct-tcpip`
    /// channel to the builder, a second client over that channel; both host keys pinned in a
    /// `known_hosts` file (RejectPolicy). Prints the command's output; exits with its status,
    /// or 255 with the failing hop on stderr.
    #[track_caller]
    pub fn paramiko(&self, which: Paramiko, command: &str) -> tokio::process::Command {
        let python = which.python();
        let script = private_file(self.dir.path(), "paramiko_jump.py", include_str!("paramiko_jump.py"));
        let known_hosts = self.known_hosts("paramiko");
        let mut cmd = tokio::process::Command::new(python);
        cmd.env("HOME", self.home("paramiko"))
            .arg(script)
            .arg(&self.key)
            .arg(known_hosts)
            .args([&self.gateway.host, &self.gateway.port.to_string(), &self.gateway.user])
            .args([&self.builder.host, &self.builder.port.to_string(), &self.builder.user])
            .arg(command);
        cmd
    }

    /// `curl -v --key KEY --pubkey KEY.pub --hostpubsha256 GW_SHA256 sftp://gwuser@GW:PORT/`:
    /// libssh2 (Debian's curl is built on it) against the gateway alone, since curl cannot jump.
    pub fn curl_sftp(&self) -> tokio::process::Command {
        let fingerprint = self.gateway.fingerprint();
        let sha256 = fingerprint.strip_prefix("SHA256:").unwrap();
        let mut cmd = tokio::process::Command::new("curl");
        cmd.env("HOME", self.home("curl"))
            .arg("-v")
            .arg("--key")
            .arg(&self.key)
            .arg("--pubkey")
            .arg(&self.public_key)
            .args(["--hostpubsha256", sha256])
            .arg(format!("sftp://{}@{}:{}/", self.gateway.user, self.gateway.host, self.gateway.port));
        cmd
    }

    /// OpenSSH's `ssh` to the builder with a libssh2 ProxyCommand (`libssh2_proxy.py`, run by
    /// `/usr/bin/python3` through ctypes): libssh2 does the gateway's key exchange (its host key
    /// pinned), the public-key login and the `direct-tcpip` channel, and carries the builder
    /// connection; `ssh` pins the builder's host key.
    pub fn ssh_through_libssh2(&self, command: &str) -> tokio::process::Command {
        require("/usr/bin/python3");
        let script = private_file(self.dir.path(), "libssh2_proxy.py", include_str!("libssh2_proxy.py"));
        let proxy = [
            "/usr/bin/python3",
            script.to_str().unwrap(),
            self.key.to_str().unwrap(),
            self.public_key.to_str().unwrap(),
            &self.gateway.host,
            &self.gateway.port.to_string(),
            &self.gateway.user,
            &self.gateway.key_text(),
            &self.builder.host,
            &self.builder.port.to_string(),
        ]
        .map(sh_quote)
        .join(" ");
        let known_hosts = self.known_hosts("ssh");
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.env("HOME", self.home("ssh"))
            .args(["-F", "/dev/null", "-T", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.key)
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", &format!("ProxyCommand={proxy}")])
            .args(["-p", &self.builder.port.to_string(), "-l", &self.builder.user, &self.builder.host])
            .arg(command);
        cmd
    }

    /// A `known_hosts` file with both hops' keys, `[host]:port` form.
    fn known_hosts(&self, client: &str) -> PathBuf {
        let text = self.gateway.known_hosts_line() + &self.builder.known_hosts_line();
        private_file(self.dir.path(), &format!("known_hosts.{client}"), &text)
    }
}

/// Writes `dir/name` with mode 600.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    path
}
