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
    /// `/senha <senha_atual> <senha_nova>`: the chat's user changes its own password.
    Senha {
        atual: SecretString,
        nova: SecretString,
    },
    /// `/definirsenha <usuario> <senha_nova>` (admins).
    DefinirSenha { usuario: String, nova: SecretString },
    /// `/alterarnivel <usuario> <nivel>` (admins).
    AlterarNivel { usuario: String, nivel: i32 },
    /// `/remover <usuario>` (admins).
    Remover { usuario: String },
    /// `/usuarios` or `/usuarios <prefixo>` (admins).
    Usuarios { prefixo: Option<String> },
    /// `/status`.
    Status,
    /// `/auditoria` or `/auditoria <usuario>` (admins): the latest audit entries.
    Auditoria { usuario: Option<String> },
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
            Command::Senha { .. } => "senha",
            Command::DefinirSenha { .. } => "definirsenha",
            Command::AlterarNivel { .. } => "alterarnivel",
            Command::Remover { .. } => "remover",
            Command::Usuarios { .. } => "usuarios",
            Command::Status => "status",
            Command::Auditoria { .. } => "auditoria",
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
    /// `/adicionar` or `/alterarnivel` with a level that is not a whole number; holds the
    /// command's usage line.
    BadNivel(&'static str),
}

pub const USAGE_LOGIN: &str = "/login <usuario> <senha>";
pub const USAGE_NIVEL: &str = "/nivel ou /nivel <usuario>";
pub const USAGE_ADICIONAR: &str = "/adicionar <usuario> <senha> <nivel>";
pub const USAGE_SENHA: &str = "/senha <senha_atual> <senha_nova>";
pub const USAGE_DEFINIR_SENHA: &str = "/definirsenha <usuario> <senha_nova>";
pub const USAGE_ALTERAR_NIVEL: &str = "/alterarnivel <usuario> <nivel>";
pub const USAGE_REMOVER: &str = "/remover <usuario>";
pub const USAGE_USUARIOS: &str = "/usuarios ou /usuarios <prefixo>";
pub const USAGE_STATUS: &str = "/status";
pub const USAGE_AUDITORIA: &str = "/auditoria ou /auditoria <usuario>";
pub const USAGE_LOGOUT: &str = "/logout";

/// The commands whose arguments hold a password.
const PASSWORD_COMMANDS: [&str; 4] = ["login", "adicionar", "senha", "definirsenha"];

/// Whether a message is a `/login`, `/adicionar`, `/senha` or `/definirsenha`, well formed or
/// not: such a message may hold a password, so a chat transport deletes it (or refuses it
/// where others can read it).
pub fn names_a_password_command(message: &str) -> bool {
    command_name(message).is_some_and(|name| PASSWORD_COMMANDS.contains(&name.as_str()))
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
            nivel: nivel
                .parse()
                .map_err(|_| ParseError::BadNivel(USAGE_ADICIONAR))?,
        }),
        ("adicionar", _) => Err(ParseError::Usage(USAGE_ADICIONAR)),
        ("senha", [atual, nova]) => Ok(Command::Senha {
            atual: SecretString::from(*atual),
            nova: SecretString::from(*nova),
        }),
        ("senha", _) => Err(ParseError::Usage(USAGE_SENHA)),
        ("definirsenha", [usuario, nova]) => Ok(Command::DefinirSenha {
            usuario: (*usuario).to_owned(),
            nova: SecretString::from(*nova),
        }),
        ("definirsenha", _) => Err(ParseError::Usage(USAGE_DEFINIR_SENHA)),
        ("alterarnivel" | "alterarnível", [usuario, nivel]) => Ok(Command::AlterarNivel {
            usuario: (*usuario).to_owned(),
            nivel: nivel
                .parse()
                .map_err(|_| ParseError::BadNivel(USAGE_ALTERAR_NIVEL))?,
        }),
        ("alterarnivel" | "alterarnível", _) => Err(ParseError::Usage(USAGE_ALTERAR_NIVEL)),
        ("remover", [usuario]) => Ok(Command::Remover {
            usuario: (*usuario).to_owned(),
        }),
        ("remover", _) => Err(ParseError::Usage(USAGE_REMOVER)),
        ("usuarios" | "usuários", []) => Ok(Command::Usuarios { prefixo: None }),
        ("usuarios" | "usuários", [prefixo]) => Ok(Command::Usuarios {
            prefixo: Some((*prefixo).to_owned()),
        }),
        ("usuarios" | "usuários", _) => Err(ParseError::Usage(USAGE_USUARIOS)),
        ("status", []) => Ok(Command::Status),
        ("status", _) => Err(ParseError::Usage(USAGE_STATUS)),
        ("auditoria", []) => Ok(Command::Auditoria { usuario: None }),
        ("auditoria", [usuario]) => Ok(Command::Auditoria {
            usuario: Some((*usuario).to_owned()),
        }),
        ("auditoria", _) => Err(ParseError::Usage(USAGE_AUDITORIA)),
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
                    Command::Senha { atual, nova } => (
                        "senha",
                        Some(atual.expose_secret()),
                        Some(nova.expose_secret()),
                        None,
                    ),
                    Command::DefinirSenha { usuario, nova } => (
                        "definirsenha",
                        Some(usuario.as_str()),
                        Some(nova.expose_secret()),
                        None,
                    ),
                    Command::AlterarNivel { usuario, nivel } => {
                        ("alterarnivel", Some(usuario.as_str()), None, Some(*nivel))
                    }
                    Command::Remover { usuario } => ("remover", Some(usuario.as_str()), None, None),
                    Command::Usuarios { prefixo } => ("usuarios", prefixo.as_deref(), None, None),
                    Command::Auditoria { usuario } => ("auditoria", usuario.as_deref(), None, None),
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
        assert_eq!(
            parse("/auditoria bob"),
            Ok(Command::Auditoria {
                usuario: Some("bob".into())
            })
        );
        assert_eq!(parse("/logout@produto_bot"), Ok(Command::Logout));
        assert_eq!(
            parse("/senha velha-1 nova-senha-2"),
            Ok(Command::Senha {
                atual: SecretString::from("velha-1"),
                nova: SecretString::from("nova-senha-2"),
            })
        );
        assert_eq!(
            parse("/definirsenha bob nova-senha-2"),
            Ok(Command::DefinirSenha {
                usuario: "bob".into(),
                nova: SecretString::from("nova-senha-2"),
            })
        );
        assert_eq!(
            parse("/alterarnível bob 3"),
            Ok(Command::AlterarNivel {
                usuario: "bob".into(),
                nivel: 3
            })
        );
        assert_eq!(
            parse("/remover bob"),
            Ok(Command::Remover {
                usuario: "bob".into()
            })
        );
        assert_eq!(parse("/usuarios"), Ok(Command::Usuarios { prefixo: None }));
        assert_eq!(
            parse("/usuários jo"),
            Ok(Command::Usuarios {
                prefixo: Some("jo".into())
            })
        );
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
            Err(ParseError::BadNivel(USAGE_ADICIONAR))
        );
        assert_eq!(
            parse("/alterarnivel bob alto"),
            Err(ParseError::BadNivel(USAGE_ALTERAR_NIVEL))
        );
        assert_eq!(parse("/senha s3nha"), Err(ParseError::Usage(USAGE_SENHA)));
        assert_eq!(
            parse("/definirsenha bob"),
            Err(ParseError::Usage(USAGE_DEFINIR_SENHA))
        );
        assert_eq!(parse("/remover"), Err(ParseError::Usage(USAGE_REMOVER)));
        assert_eq!(
            parse("/usuarios a b"),
            Err(ParseError::Usage(USAGE_USUARIOS))
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
            "/senha velha nova",
            "/senha",
            "/DefinirSenha@produto_bot bob nova",
        ] {
            assert!(names_a_password_command(message), "{message}");
        }
        for message in [
            "/nivel",
            "login maria s3nha",
            "/logout",
            "",
            "/",
            "/remover bob",
            "/alterarnivel bob 2",
        ] {
            assert!(!names_a_password_command(message), "{message}");
        }
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let command = parse("/login maria hunter22").unwrap();
        assert!(!format!("{command:?}").contains("hunter22"));
        let command = parse("/adicionar bob hunter22 1").unwrap();
        assert!(!format!("{command:?}").contains("hunter22"));
        for message in ["/senha hunter22 hunter33", "/definirsenha bob hunter22"] {
            let command = parse(message).unwrap();
            assert!(!format!("{command:?}").contains("hunter2"), "{message}");
        }
    }
}
