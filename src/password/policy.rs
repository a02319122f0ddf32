//! The policy for new passwords (AdicionarUsuario, AlterarSenha, `adicionar-usuario`):
//! zxcvbn's strength score at least a minimum, and never the username. Imported passwords
//! are kept as they are; logins check any stored password.

use crate::{
    Error,
    domain::{Senha, Usuario},
    error::Rule,
};

/// Characters scored: zxcvbn's matching grows fast with length, and a password longer than
/// this is not made weak by what follows.
const SCORED_CHARS: usize = 100;

/// The lowest zxcvbn score by default, written once (the flag and [`PasswordPolicy::default`]).
pub const DEFAULT_MIN_SCORE: u8 = 3;

/// The flags of the password policy, flattened into the server's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyFlags {
    /// Lowest zxcvbn score (0-4) a new password must reach (AdicionarUsuario, AlterarSenha,
    /// `adicionar-usuario`); 0 turns the strength check off (the length, common-password and
    /// username rules stay). 3 is "safely unguessable" (Authelia's default).
    #[arg(long, env = "PRODUTO_PASSWORD_MIN_SCORE", default_value_t = DEFAULT_MIN_SCORE, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub password_min_score: u8,
}

impl PolicyFlags {
    pub fn settings(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_score: self.password_min_score,
        }
    }
}

/// The policy as the server takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// 0 to 4; 0: no strength check.
    pub min_score: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_score: DEFAULT_MIN_SCORE,
        }
    }
}

impl PasswordPolicy {
    /// Checks a new password of `usuario` (given in request field `field`): INVALID_ARGUMENT
    /// naming the rule, with zxcvbn's hint when too weak. CPU work of a millisecond or so:
    /// run on the blocking pool.
    pub async fn check(
        &self,
        senha: &Senha,
        usuario: &Usuario,
        field: &'static str,
    ) -> Result<(), Error> {
        let policy = *self;
        let (senha, usuario) = (senha.clone(), usuario.clone());
        tokio::task::spawn_blocking(move || policy.check_now(&senha, &usuario, field))
            .await
            .map_err(|e| Error::Internal(format!("password policy task: {e}")))?
    }

    fn check_now(
        &self,
        senha: &Senha,
        usuario: &Usuario,
        field: &'static str,
    ) -> Result<(), Error> {
        let text = String::from_utf8_lossy(senha.expose());
        if text.to_lowercase() == usuario.as_str().to_lowercase() {
            return Err(Error::InvalidArgument {
                field,
                rule: Rule::SameAsUsername,
                message: format!("{field}: must not be the username"),
            });
        }
        if self.min_score == 0 {
            return Ok(());
        }
        let scored: String = text.chars().take(SCORED_CHARS).collect();
        let entropy = zxcvbn::zxcvbn(&scored, &[usuario.as_str()]);
        let score = u8::from(entropy.score());
        if score >= self.min_score {
            return Ok(());
        }
        let hint = entropy
            .feedback()
            .map(|f| {
                let mut hints: Vec<String> =
                    f.warning().map(|w| w.to_string()).into_iter().collect();
                hints.extend(f.suggestions().iter().map(ToString::to_string));
                hints.join(" ")
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "Add another word or two. Uncommon words are better.".into());
        Err(Error::InvalidArgument {
            field,
            rule: Rule::TooWeak,
            message: format!(
                "{field}: too weak (strength {score} of 4, at least {} needed). {hint}",
                self.min_score
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(min_score: u8, senha: &str, usuario: &str) -> Result<(), Error> {
        PasswordPolicy { min_score }.check_now(
            &Senha::parse_login(senha.into()).unwrap(),
            &Usuario::parse(usuario.into()).unwrap(),
            "senha",
        )
    }

    #[test]
    fn weak_passwords_are_refused_naming_the_rule_and_a_hint() {
        let err = check(3, "maria2024", "maria").unwrap_err();
        let Error::InvalidArgument {
            field,
            rule,
            message,
        } = err
        else {
            panic!()
        };
        assert_eq!((field, rule), ("senha", Rule::TooWeak));
        assert!(
            message.starts_with("senha: too weak (strength"),
            "{message}"
        );
        assert!(message.len() > 50, "a hint follows: {message}");
        assert!(check(3, "correto cavalo bateria grampo", "maria").is_ok());
        // Off: only the username rule stays.
        assert!(check(0, "maria2024", "maria").is_ok());
    }

    #[test]
    fn the_username_is_never_the_password() {
        for min in [0, 3] {
            let err = check(min, "Joaquim.Silva", "joaquim.silva").unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidArgument {
                    rule: Rule::SameAsUsername,
                    ..
                }
            ));
        }
    }
}
