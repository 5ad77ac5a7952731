//! The command line's words: `--flag value` and `--switch` options and positional values,
//! checked against what each sub-command takes. A few lines instead of an argument-parsing
//! crate: the commands are few, and their help texts are written out in full anyway.

use std::collections::HashMap;

/// A sub-command's arguments, parsed.
#[derive(Debug, Default)]
pub(crate) struct Args {
    values: HashMap<&'static str, Vec<String>>,
    switches: Vec<&'static str>,
    positional: Vec<String>,
}

/// What a sub-command accepts.
pub(crate) struct Spec {
    /// Options that take a value (`--name VALUE` or `--name=VALUE`); they may repeat.
    pub(crate) values: &'static [&'static str],
    /// Options without a value.
    pub(crate) switches: &'static [&'static str],
    /// How many positional values, at most.
    pub(crate) positional: usize,
    /// Whether it takes the fleet's Redis options too (`store::VALUES`).
    pub(crate) store: bool,
}

/// A usage error: what was wrong, for the user (the caller adds the sub-command's usage).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl Args {
    /// Parses `words` against `spec`. `--` ends the options.
    pub(crate) fn parse(words: &[String], spec: &Spec) -> Result<Args, Usage> {
        let mut args = Args::default();
        let mut words = words.iter();
        let mut options_done = false;
        while let Some(word) = words.next() {
            if options_done || !word.starts_with("--") {
                if args.positional.len() == spec.positional {
                    return Err(Usage(format!("unexpected argument {word:?}")));
                }
                args.positional.push(word.clone());
                continue;
            }
            if word == "--" {
                options_done = true;
                continue;
            }
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (word.as_str(), None),
            };
            let bare = &name[2..];
            if let Some(known) = spec.switches.iter().find(|s| **s == bare) {
                if inline.is_some() {
                    return Err(Usage(format!("--{bare} takes no value")));
                }
                args.switches.push(known);
            } else if let Some(known) = spec
                .values
                .iter()
                .chain(if spec.store { &crate::store::VALUES[..] } else { &[] })
                .find(|s| **s == bare)
            {
                let value = match inline {
                    Some(value) => value,
                    None => words.next().cloned().ok_or_else(|| Usage(format!("--{bare} needs a value")))?,
                };
                args.values.entry(known).or_default().push(value);
            } else {
                return Err(Usage(format!("unknown option --{bare}")));
            }
        }
        Ok(args)
    }

    /// The last value given for `--name`.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value given for `--name`.
    pub(crate) fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether `--name` was given.
    pub(crate) fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// The value of `--name`, which must be given.
    pub(crate) fn required(&self, name: &str) -> Result<&str, Usage> {
        self.value(name).ok_or_else(|| Usage(format!("--{name} is required")))
    }

    /// The value of `--name` parsed as `T`, if given.
    pub(crate) fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Usage> {
        self.value(name)
            .map(|value| value.parse().map_err(|_| Usage(format!("--{name} takes {what}, not {value:?}"))))
            .transpose()
    }

    /// The `n`th positional value, which must be given (`what` names it).
    pub(crate) fn positional(&self, n: usize, what: &str) -> Result<&str, Usage> {
        self.positional.get(n).map(String::as_str).ok_or_else(|| Usage(format!("{what} is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec { values: &["port", "name"], switches: &["json"], positional: 1, store: false };

    fn parse(words: &[&str]) -> Result<Args, Usage> {
        Args::parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>(), &SPEC)
    }

    #[test]
    fn values_switches_and_positionals() {
        let args = parse(&["b-1", "--port", "1", "--port=2", "--json", "--name", "x"]).unwrap();
        assert_eq!(args.positional(0, "BUILD_ID").unwrap(), "b-1");
        assert_eq!(args.values("port"), ["1", "2"]);
        assert_eq!(args.parsed::<u16>("port", "a port").unwrap(), Some(2));
        assert!(args.switch("json"));
        assert_eq!(args.value("name"), Some("x"));
        let args = parse(&["--", "--looks-like-an-option"]).unwrap();
        assert_eq!(args.positional(0, "BUILD_ID").unwrap(), "--looks-like-an-option");
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (words, said) in [
            (&["--nope"][..], "unknown option --nope"),
            (&["--port"], "--port needs a value"),
            (&["--json=1"], "--json takes no value"),
            (&["a", "b"], "unexpected argument \"b\""),
        ] {
            assert_eq!(parse(words).unwrap_err().0, said);
        }
        let args = parse(&["--port", "x"]).unwrap();
        assert_eq!(args.parsed::<u16>("port", "a port").unwrap_err().0, "--port takes a port, not \"x\"");
        assert_eq!(args.required("name").unwrap_err().0, "--name is required");
    }
}
