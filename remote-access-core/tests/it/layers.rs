//! The dependency rule of `docs/architecture.md`, checked on the source: each top-level module
//! of `remote-access-core/src` may use only the modules below it, so data walks down the layers
//! once per login and nothing calls back up.
//!
//! ```text
//! gateway → authority → {script, store, events, session, credential, tunnel, throttle} → {build, error, secret, clock}
//! gateway, authority → metrics (a leaf: counters and their text format)
//! script → {credential, session, build, clock}
//! ```
//!
//! A module names what it uses by its defining module (`crate::build::BuildId`), never through
//! the crate root's re-exports (`crate::BuildId`), so that every dependency is visible here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use besides itself. A new module must be placed here.
const RULE: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("secret", &[]),
    ("clock", &[]),
    ("build", &["error", "secret"]),
    ("throttle", &[]),
    ("metrics", &[]),
    ("session", &["build", "error", "secret", "clock"]),
    ("credential", &["build", "error", "secret", "clock"]),
    ("tunnel", &["build", "error", "secret", "clock"]),
    ("events", &["session", "build", "error", "secret", "clock"]),
    ("store", &["session", "throttle", "build", "error", "secret", "clock"]),
    ("script", &["credential", "session", "build", "error", "secret", "clock"]),
    (
        "authority",
        &[
            "script",
            "store",
            "events",
            "session",
            "credential",
            "tunnel",
            "throttle",
            "metrics",
            "build",
            "error",
            "secret",
            "clock",
        ],
    ),
    (
        "gateway",
        &[
            "authority",
            "session",
            "credential",
            "tunnel",
            "throttle",
            "metrics",
            "build",
            "error",
            "secret",
            "clock",
        ],
    ),
];

fn allowed(module: &str) -> Option<&'static [&'static str]> {
    RULE.iter().find(|(name, _)| *name == module).map(|(_, uses)| *uses)
}

/// The source with comments, string and character literals blanked out: a path in a doc
/// comment or a message is no dependency, and a `'"'` must not start a string.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("/*") {
            rest = rest.find("*/").map_or("", |end| &rest[end + 2..]);
        } else if c == '"' {
            let mut escaped = false;
            let end = rest[1..].find(|c: char| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            });
            rest = end.map_or("", |end| &rest[end + 2..]);
            out.push_str("\"\"");
        } else if let Some(after) = char_literal(rest) {
            rest = after;
            out.push_str("' '");
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// What follows a character literal at the start of `text` (`'a'`, `'"'`, `'\''`, `'\u{1F600}'`),
/// or `None` if it starts with something else, such as a lifetime (`'a`).
fn char_literal(text: &str) -> Option<&str> {
    let body = text.strip_prefix('\'')?;
    let len = if let Some(escaped) = body.strip_prefix('\\') {
        1 + escaped.find('\'')?
    } else {
        body.chars().next()?.len_utf8()
    };
    body[len..].strip_prefix('\'')
}

fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The first path segment of every `crate::...` in `code` (spaces and line breaks around
/// `::` allowed), grouped imports included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate") {
        let word_start = !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$');
        let Some(after) = code[at + "crate".len()..].trim_start().strip_prefix("::") else { continue };
        if !word_start {
            continue;
        }
        let after = after.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: `{build::BuildId, error::{Error, Result}}`.
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(ident(group[start..i].trim()).to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(ident(group[start..i].trim()).to_owned());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(after).to_owned());
        }
    }
    found.retain(|segment| !segment.is_empty() && segment != "self");
    found
}

/// The rule's breaches in one file of `module`, nested `depth` modules below it (`super`
/// chains that climb out of `module` reach the crate root).
fn breaches(module: &str, depth: usize, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let uses = allowed(module).unwrap_or(&[]);
    for segment in crate_paths(code) {
        if segment == module || uses.contains(&segment.as_str()) {
            continue;
        }
        if segment.starts_with(|c: char| c.is_ascii_uppercase()) || allowed(&segment).is_none() {
            found.push(format!("uses crate::{segment} (a root re-export: name the defining module instead)"));
        } else {
            found.push(format!("uses crate::{segment}, which the rule does not allow"));
        }
    }
    let climb = format!("{}super::", "super::".repeat(depth));
    if code.contains(&climb) {
        found.push("climbs out of its module with `super::`".to_owned());
    }
    // An alias of the crate root would hide every path through it; so would `#[path]`.
    if code.contains("crate as ") || code.contains("crate self") || code.contains("#[path") {
        found.push("aliases the crate root or includes a file by path".to_owned());
    }
    found
}

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut modules = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let parts: Vec<_> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
        if parts == ["lib.rs"] {
            continue; // the root: its re-exports and the `unstable`/`fuzzing` modules
        }
        let module = parts[0].trim_end_matches(".rs").to_owned();
        // `a/b/c.rs` is module `a::b::c`; `a/b/mod.rs` is `a::b`.
        let depth = parts.len() - 1 - usize::from(parts.last().is_some_and(|last| last == "mod.rs"));
        if allowed(&module).is_none() {
            problems.push(format!("{}: module `{module}` has no place in the rule", relative.display()));
        }
        modules.insert(module.clone());
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        // Unit tests (`mod tests` at a file's end) may use anything.
        let code = code.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
        for breach in breaches(&module, depth, code) {
            problems.push(format!("{} ({module}) {breach}", relative.display()));
        }
    }
    assert!(problems.is_empty(), "the dependency rule is broken:\n{}", problems.join("\n"));
    let ruled: BTreeSet<_> = RULE.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(ruled, modules, "the rule names exactly the modules that exist");
}

#[test]
fn the_rule_has_no_circle() {
    // Peel off modules whose every use is already peeled: all of them go only if no circle.
    let mut left: BTreeMap<&str, &[&str]> = RULE.iter().copied().collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !left.contains_key(u)))
            .map(|(m, _)| *m)
            .collect();
        assert!(!ready.is_empty(), "the rule has a circle among {:?}", left.keys().collect::<Vec<_>>());
        for module in ready {
            left.remove(module);
        }
    }
}

/// The check itself can fail: comments and strings are ignored, grouped and root paths are not.
#[test]
fn the_check_catches_what_breaks_the_rule() {
    let code = code_only(
        "use crate::gateway::Gateway; // crate::authority\n\
         /* crate::store */ let s = \"crate::tunnel \\\" crate::events\";\n\
         let q = '\"'; let r = '\\''; fn f<'a>(x: &'a str) {}\n\
         use crate::{self, build::BuildId, error::{Error, Result}, script::ConnectionInfo};\n\
         fn f() -> crate\n    ::Result<()> { super::super::x() }\n\
         use crate as root;",
    );
    let found = breaches("session", 1, &code);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found[0].contains("crate::gateway,"));
    assert!(found[1].contains("crate::script,"));
    assert!(found[2].contains("crate::Result (a root re-export"));
    assert!(found[3].contains("climbs out"));
    assert!(found[4].contains("aliases the crate root"));
    assert_eq!(char_literal("'\"' rest"), Some(" rest"));
    assert_eq!(char_literal("'a str"), None);
    assert!(breaches("gateway", 0, &code_only("use crate::authority::Authority;")).is_empty());
}
