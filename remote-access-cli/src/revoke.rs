//! `remote-access revoke`: ends a build's access at once, on every gateway of the fleet.

use remote_access_core::{AuthorityOptions, BuildId};

use crate::args::{Args, Spec};
use crate::{Outcome, output, store};

pub(crate) const SUMMARY: &str = "end a build's access now, on every gateway (its connections are cut)";

pub(crate) const USAGE: &str = "usage: remote-access revoke BUILD_ID [--reason TEXT] [--json]\n\n\
     Revokes the build's credentials: every gateway of the fleet refuses them from now on and\n\
     cuts the build's live connections. Exits 0 once the store has recorded it, 4 for a build\n\
     the store does not know.\n\n\
     options:\n\
     \x20 --reason TEXT              why, for the `revoked` event (default \"revoked by an operator\")\n\
     \x20 --json                     print the result as JSON\n";

pub(crate) const SPEC: Spec = Spec { values: &["reason"], switches: &["json"], positional: 1, store: true };

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let build_id = BuildId::new(args.positional(0, "BUILD_ID")?)?;
    let reason = args.value("reason").unwrap_or("revoked by an operator").to_owned();
    crate::runtime()?.block_on(async {
        let authority = store::authority(&args, AuthorityOptions::default())?;
        store::waiting("Redis", authority.revoke(&build_id, &reason)).await?;
        let session = authority.session(&build_id).await?;
        let ended = session.end().map(|(reason, at)| (reason.to_string(), output::time(at)));
        if args.switch("json") {
            output::json(&serde_json::json!({
                "build_id": build_id.as_str(),
                "revoked": true,
                "ended_at": ended.as_ref().map(|(_, at)| at),
                "end_reason": ended.as_ref().map(|(reason, _)| reason),
            }));
        } else {
            let mut rows = vec![("build", build_id.to_string()), ("revoked", reason)];
            if let Some((why, at)) = ended {
                rows.push(("ended", format!("{at} ({why})")));
            }
            output::lines(&rows);
        }
        Ok(())
    })
}
