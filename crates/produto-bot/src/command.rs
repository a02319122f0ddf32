//! Parsing a chat message into a [`Command`]. Words are split on whitespace, so neither a
//! username nor a password typed in a chat can contain spaces.

use secrecy::SecretString;

/// What a chat asked for. A password typed in a chat is a [`SecretString`]: its `Debug` never
/// shows it, so it cannot reach a log.
#[derive(Debug, Clone)]
pub enum Command {
    /// `/start`, `/ajuda`, `/help`.
    Ajuda,
    /// `/login <usuario> <senha>`.
    Login {
        usuario: String,
        senha: SecretString,
    },
    /// `/nivel` (the chat's own user) or `/nivel <usuario>`.
    Nivel { usuario: Option<String> },
    /// `/adicionar <usuario> <senha> <nivel>`.
    Adicionar {
        usuario: String,
        senha: SecretString,
        nivel: i32,
    },
    /// `/status`.
    Status,
    /// `/logout`.
    Logout,
}

impl Command {
    /// The command's name, for logs (its arguments may hold a password).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ajuda => "ajuda",
            Command::Login { .. } => "login",
            Command::Nivel { .. } => "nivel",
            Command::Adicionar { .. } => "adicionar",
            Command::Status => "status",
            Command::Logout => "logout",
        }
    }
}

/// Why a message is not a command the bot can run. Never holds what was typed, which may
/// be a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Plain text, not starting with `/`.
    NotACommand,
    /// A `/word` the bot does not know.
    Unknown,
    /// A known command with missing or extra arguments; holds its usage line.
    Usage(&'static str),
    /// `/adicionar` with a level that is not a whole number.
    BadNivel,
}

pub const USAGE_LOGIN: &str = "/login <usuario> <senha>";
pub const USAGE_NIVEL: &str = "/nivel ou /nivel <usuario>";
pub const USAGE_ADICIONAR: &str = "/adicionar <usuario> <senha> <nivel>";
pub const USAGE_STATUS: &str = "/status";
pub const USAGE_LOGOUT: &str = "/logout";

/// Whether a message is a `/login` or `/adicionar`, well formed or not: such a message may
/// hold a password, so a chat transport deletes it (or refuses it where others can read it).
pub fn names_a_password_command(message: &str) -> bool {
    command_name(message).is_some_and(|name| name == "login" || name == "adicionar")
}

/// The `/word` a message starts with, lowercased, without a `@bot` suffix.
fn command_name(message: &str) -> Option<String> {
    let name = message.split_whitespace().next()?.strip_prefix('/')?;
    // In chat groups a command may name its bot: `/nivel@produto_bot`.
    Some(name.split_once('@').map_or(name, |(n, _)| n).to_lowercase())
}

/// Parses one chat message.
pub fn parse(message: &str) -> Result<Command, ParseError> {
    let name = command_name(message).ok_or(ParseError::NotACommand)?;
    let args: Vec<&str> = message.split_whitespace().skip(1).collect();
    match (name.as_str(), args.as_slice()) {
        // `/start` may carry a payload from a chat platform's deep link: ignore arguments.
        ("start" | "ajuda" | "help", _) => Ok(Command::Ajuda),
        ("login", [usuario, senha]) => Ok(Command::Login {
            usuario: (*usuario).to_owned(),
            senha: SecretString::from(*senha),
        }),
        ("login", _) => Err(ParseError::Usage(USAGE_LOGIN)),
        ("nivel" | "nível", []) => Ok(Command::Nivel { usuario: None }),
        ("nivel" | "nível", [usuario]) => Ok(Command::Nivel {
            usuario: Some((*usuario).to_owned()),
        }),
        ("nivel" | "nível", _) => Err(ParseError::Usage(USAGE_NIVEL)),
        ("adicionar", [usuario, senha, nivel]) => Ok(Command::Adicionar {
            usuario: (*usuario).to_owned(),
            senha: SecretString::from(*senha),
            nivel: nivel.parse().map_err(|_| ParseError::BadNivel)?,
        }),
        ("adicionar", _) => Err(ParseError::Usage(USAGE_ADICIONAR)),
        ("status", []) => Ok(Command::Status),
        ("status", _) => Err(ParseError::Usage(USAGE_STATUS)),
        ("logout", []) => Ok(Command::Logout),
        ("logout", _) => Err(ParseError::Usage(USAGE_LOGOUT)),
        _ => Err(ParseError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    // Only the tests compare commands: a secret has no `==` of its own (secrecy leaves that
    // choice to the caller), so compare what each command holds, the password exposed.
    impl PartialEq for Command {
        fn eq(&self, other: &Self) -> bool {
            fn parts(c: &Command) -> (&'static str, Option<&str>, Option<&str>, Option<i32>) {
                match c {
                    Command::Login { usuario, senha } => (
                        "login",
                        Some(usuario.as_str()),
                        Some(senha.expose_secret()),
                        None,
                    ),
                    Command::Nivel { usuario } => ("nivel", usuario.as_deref(), None, None),
                    Command::Adicionar {
                        usuario,
                        senha,
                        nivel,
                    } => (
                        "adicionar",
                        Some(usuario.as_str()),
                        Some(senha.expose_secret()),
                        Some(*nivel),
                    ),
                    other => (other.name(), None, None, None),
                }
            }
            parts(self) == parts(other)
        }
    }

    #[test]
    fn commands_with_their_arguments_are_parsed() {
        assert_eq!(parse("/ajuda"), Ok(Command::Ajuda));
        assert_eq!(parse("/start deep-link-payload"), Ok(Command::Ajuda));
        assert_eq!(parse("/HELP"), Ok(Command::Ajuda));
        assert_eq!(
            parse("  /login   maria   senha-forte-1  "),
            Ok(Command::Login {
                usuario: "maria".into(),
                senha: SecretString::from("senha-forte-1"),
            })
        );
        assert_eq!(parse("/nivel"), Ok(Command::Nivel { usuario: None }));
        assert_eq!(
            parse("/nível joão"),
            Ok(Command::Nivel {
                usuario: Some("joão".into())
            })
        );
        assert_eq!(
            parse("/adicionar bob senha-do-bob -1"),
            Ok(Command::Adicionar {
                usuario: "bob".into(),
                senha: SecretString::from("senha-do-bob"),
                nivel: -1,
            })
        );
        assert_eq!(parse("/status"), Ok(Command::Status));
        assert_eq!(parse("/logout@produto_bot"), Ok(Command::Logout));
    }

    #[test]
    fn missing_or_extra_arguments_give_the_usage() {
        assert_eq!(parse("/login maria"), Err(ParseError::Usage(USAGE_LOGIN)));
        assert_eq!(
            parse("/login maria senha com espaços"),
            Err(ParseError::Usage(USAGE_LOGIN))
        );
        assert_eq!(parse("/nivel a b"), Err(ParseError::Usage(USAGE_NIVEL)));
        assert_eq!(
            parse("/adicionar bob senha"),
            Err(ParseError::Usage(USAGE_ADICIONAR))
        );
        assert_eq!(
            parse("/adicionar bob senha dois"),
            Err(ParseError::BadNivel)
        );
        assert_eq!(parse("/logout agora"), Err(ParseError::Usage(USAGE_LOGOUT)));
        assert_eq!(parse("/status x"), Err(ParseError::Usage(USAGE_STATUS)));
    }

    #[test]
    fn anything_else_is_not_a_command() {
        assert_eq!(parse("olá"), Err(ParseError::NotACommand));
        assert_eq!(parse(""), Err(ParseError::NotACommand));
        assert_eq!(parse("/"), Err(ParseError::Unknown));
        assert_eq!(parse("/sudo rm"), Err(ParseError::Unknown));
    }

    #[test]
    fn password_commands_are_recognised_even_when_malformed() {
        for message in [
            "/login maria s3nha",
            "/LOGIN@produto_bot maria",
            " /adicionar bob s3nha x y",
            "/adicionar",
        ] {
            assert!(names_a_password_command(message), "{message}");
        }
        for message in ["/nivel", "login maria s3nha", "/logout", "", "/"] {
            assert!(!names_a_password_command(message), "{message}");
        }
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let command = parse("/login maria hunter22").unwrap();
        assert!(!format!("{command:?}").contains("hunter22"));
        let command = parse("/adicionar bob hunter22 1").unwrap();
        assert!(!format!("{command:?}").contains("hunter22"));
    }
}
