//! `remote-access status`: where a build's access stands, from the fleet's Redis.

use remote_access_core::{AuthorityOptions, BuildId};

use crate::args::{Args, Spec};
use crate::{Failure, Outcome, output, store};

pub(crate) const SUMMARY: &str =
    "show a build's access: phase, deadline, live connections (exit 3 once ended)";

pub(crate) const USAGE: &str = "usage: remote-access status BUILD_ID [--json]\n\n\
     Prints the build's session: its phase, when the steps completed, when access ends at the\n\
     latest, its live connections and, once it has ended, why. Exits 0 while access lasts, 3\n\
     once it has ended, 4 for a build the store does not know.\n\n\
     options:\n\
     \x20 --json                     print the session as JSON\n";

pub(crate) const SPEC: Spec = Spec { values: &[], switches: &["json"], positional: 1, store: true };

pub(crate) fn run(words: &[String]) -> Outcome {
    let args = Args::parse(words, &SPEC)?;
    let build_id = BuildId::new(args.positional(0, "BUILD_ID")?)?;
    crate::runtime()?.block_on(async {
        let authority = store::authority(&args, AuthorityOptions::default())?;
        let session = store::waiting("Redis", authority.session(&build_id)).await?;
        if args.switch("json") {
            output::json(&serde_json::to_value(&session).map_err(|err| Failure::Other(err.to_string()))?);
        } else {
            let connections: Vec<String> = session
                .live_connections()
                .map(|(id, protocol)| format!("{} {id}", protocol.as_str()))
                .collect();
            let mut rows = vec![
                ("build", build_id.to_string()),
                ("phase", session.phase().as_str().to_owned()),
                ("started", output::time(session.started_at())),
            ];
            if let Some(at) = session.steps_completed_at() {
                rows.push(("steps completed", output::time(at)));
            }
            rows.push(("access", session.access_rule()));
            rows.push(("deadline", output::time(session.deadline())));
            if let Some(by) = session.reconnect_by() {
                rows.push(("reconnect by", output::time(by)));
            }
            rows.push((
                "connections",
                if connections.is_empty() { "none".into() } else { connections.join(", ") },
            ));
            if let Some((reason, at)) = session.end() {
                rows.push(("ended", format!("{} ({reason})", output::time(at))));
            }
            output::lines(&rows);
        }
        match session.end() {
            Some((reason, _)) => Err(Failure::Ended(reason.to_string())),
            None => Ok(()),
        }
    })
}
