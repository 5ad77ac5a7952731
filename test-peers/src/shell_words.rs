//! How a shell reads the words the script generator writes: used by the core's script tests and
//! by the `scripts` fuzz target, so that both check the output with the same independent reading.

/// Reads one POSIX shell word made only of '...' segments and \' escapes; `None` if the word
/// has any other form (which would mean something was left unquoted).
pub fn sh_word(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = word;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("\\'") {
            out.push('\'');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('\'') {
            let end = after.find('\'')?;
            out.push_str(&after[..end]);
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// One of the five single quotes PowerShell reads as `'`.
pub fn is_ps_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// One of the four double quotes PowerShell reads as `"`.
pub fn is_ps_double_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201C}' | '\u{201D}' | '\u{201E}')
}

/// Reads one PowerShell single-quoted string (doubled quotes, typographic ones too, inside).
pub fn ps_word(word: &str) -> Option<String> {
    let mut chars = word.chars().peekable();
    if !chars.next().is_some_and(is_ps_quote) {
        return None;
    }
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if is_ps_quote(c) {
            match chars.peek() {
                Some(&next) if is_ps_quote(next) => {
                    chars.next();
                    out.push(c);
                }
                None => return Some(out),
                Some(_) => return None,
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// `NAME` when the build directory is `$NAME` or `${NAME}`: expanded on the builder.
pub fn env_name(dir: &str) -> Option<&str> {
    let name = dir.strip_prefix("${").and_then(|d| d.strip_suffix('}')).or_else(|| dir.strip_prefix('$'))?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// A `cd` command, as the builder's shell reads it, enters exactly `dir` (or the variable's
/// value).
pub fn check_cd(cd: &str, dir: &str) {
    match env_name(dir) {
        Some(name) => assert_eq!(cd, format!("cd -- \"${{{name}:-$HOME}}\"")),
        None => {
            let word = cd.strip_prefix("cd -- ").unwrap_or_else(|| panic!("not a cd command: {cd:?}"));
            assert_eq!(sh_word(word).as_deref(), Some(dir), "cd word {word:?}");
        }
    }
}
