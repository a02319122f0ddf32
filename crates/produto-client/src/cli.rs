//! Parsing a binary's command line so that a bad value names what the user set: clap names
//! the flag (`--query-timeout <QUERY_TIMEOUT>`), but a value that came from the environment
//! was set as `PRODUTO_QUERY_TIMEOUT`, and that is the name the user looks for.

use std::ffi::OsStr;

use clap::{
    Parser,
    error::{ContextKind, ContextValue, ErrorKind},
};

/// `P::parse()`, but a bad value taken from an environment variable is reported under that
/// variable's name. Exits as clap does (2 on an error, 0 for `--help` and `--version`).
pub fn parse<P: Parser>() -> P {
    let mut command = P::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| P::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let e = e.format(&mut command);
            match from_environment(&e, &command, |name| std::env::var_os(name).is_some()) {
                Some((flag, env)) => {
                    let rendered = e.render().to_string();
                    eprint!(
                        "{}",
                        rendered.replacen(&flag, &format!("{env} ({})", long_of(&flag)), 1)
                    );
                    std::process::exit(e.exit_code());
                }
                None => e.exit(),
            }
        }
    }
}

/// For a bad value whose flag was not on the command line but whose environment variable is
/// set: the flag as clap's message shows it, and the variable's name.
fn from_environment(
    e: &clap::Error,
    command: &clap::Command,
    is_set: impl Fn(&OsStr) -> bool,
) -> Option<(String, String)> {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = long_of(flag).strip_prefix("--")?;
    let on_command_line = std::env::args().any(|a| {
        a.strip_prefix("--")
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if on_command_line {
        return None;
    }
    let env = find_env(command, long)?;
    is_set(OsStr::new(&env)).then(|| (flag.clone(), env))
}

/// `--query-timeout` of `--query-timeout <QUERY_TIMEOUT>`.
fn long_of(flag: &str) -> &str {
    flag.split([' ', '=']).next().unwrap_or(flag)
}

/// The environment variable of the flag `--long`, in the command or its subcommands.
fn find_env(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_env(sub, long))
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long, env = "TEST_CLI_TIMEOUT", default_value = "1s", value_parser = humantime_like)]
        timeout: Duration,
    }

    fn humantime_like(value: &str) -> Result<Duration, String> {
        value
            .strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| "expected a number of seconds, like 5s".into())
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let mut command = Flags::command();
        let e = command
            .try_get_matches_from_mut(["test", "--timeout", "abc"])
            .unwrap_err()
            .format(&mut command);
        let (flag, env) = from_environment(&e, &command, |_| true).expect("an env flag");
        assert_eq!(env, "TEST_CLI_TIMEOUT");
        assert!(e.render().to_string().contains(&flag), "{flag}");
        assert_eq!(long_of(&flag), "--timeout");
        assert_eq!(from_environment(&e, &command, |_| false), None);
    }
}
