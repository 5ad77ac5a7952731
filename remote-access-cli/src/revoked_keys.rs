//! `remote-access revoked-keys`: the KRL for builders' sshd (`RevokedKeys`): the keys of every
//! build of the fleet that has ended while its certificate would still be valid.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use remote_access_core::AuthorityOptions;

use crate::args::{Args, Spec};
use crate::{Failure, Outcome, store};

pub(crate) const SUMMARY: &str = "write the KRL of ended builds' keys for builders' sshd (RevokedKeys)";

pub(crate) const USAGE: &str = "usage: remote-access revoked-keys --out FILE\n\n\
     Writes OpenSSH's key revocation list (KRL) of the keys of every build of the fleet that has\n\
     ended (revoked, finished, expired) while its certificate would still be valid. Point the\n\
     builders' sshd at it (`RevokedKeys FILE`); sshd reads it at each login, so run this again\n\
     as builds end (every minute, say). The file is replaced in one step (written beside it,\n\
     then renamed): an sshd never reads half a list, which would refuse every key.\n\n\
     options:\n\
     \x20 --out FILE                 where the KRL goes (mode 644: it holds only key hashes)\n";

pub(crate) const SPEC: Spec = Spec { values: &["out"], switches: &[], positional: 0, store: true };

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let out = Path::new(args.required("out")?);
    crate::runtime()?.block_on(async {
        let authority = store::authority(&args, AuthorityOptions::default())?;
        let krl = store::waiting("Redis", authority.revoked_keys()).await?;
        replace(out, &krl)?;
        eprintln!("remote-access: wrote {} ({} bytes)", out.display(), krl.len());
        Ok(())
    })
}

/// Replaces `path` with `bytes` in one step: a file beside it, synced, then renamed over it.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let name =
        path.file_name().ok_or_else(|| Failure::Other(format!("{} is not a file name", path.display())))?;
    let mut temporary = path.to_path_buf();
    temporary.set_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        // A leftover of an interrupted run would keep its mode: start afresh.
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    written.map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        Failure::Other(format!("cannot write {}: {err}", path.display()))
    })
}
