//! Validated request values. A request is parsed into these once, at the edge; everything
//! behind the edge trusts them.

use secrecy::{ExposeSecret, SecretString};

use crate::{Error, error::Rule};

/// Longest username, in characters.
pub const USUARIO_MAX_CHARS: usize = 64;
/// Longest password, in bytes: nothing larger is ever hashed.
pub const SENHA_MAX_BYTES: usize = 1024;
/// Shortest password accepted for a new user, in bytes.
pub const SENHA_MIN_BYTES_NEW: usize = 8;

/// A username: 1 to 64 characters, no control characters, no surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Usuario(String);

impl Usuario {
    /// Parses a username, naming the field in the error.
    pub fn parse(raw: String) -> Result<Self, Error> {
        let chars = raw.chars().count();
        if chars == 0 {
            return Err(invalid(
                "usuario",
                Rule::Empty,
                "usuario: must not be empty",
            ));
        }
        if chars > USUARIO_MAX_CHARS {
            return Err(invalid(
                "usuario",
                Rule::TooLong,
                format!("usuario: must be at most {USUARIO_MAX_CHARS} characters (got {chars})"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid(
                "usuario",
                Rule::ControlCharacters,
                "usuario: must not contain control characters",
            ));
        }
        if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
            return Err(invalid(
                "usuario",
                Rule::SurroundingWhitespace,
                "usuario: must not start or end with whitespace",
            ));
        }
        Ok(Usuario(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Usuario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password. Its `Debug` never shows it, so it cannot reach a log by accident.
#[derive(Clone, Debug)]
pub struct Senha(SecretString);

impl Senha {
    /// A password given at login: 1 to 1024 bytes.
    pub fn parse_login(raw: String) -> Result<Self, Error> {
        Self::parse_with_min(raw, 1)
    }

    /// A password for a new user: 8 to 1024 bytes, and not one of the most common ones.
    pub fn parse_new(raw: String) -> Result<Self, Error> {
        let senha = Self::parse_with_min(raw, SENHA_MIN_BYTES_NEW)?;
        if is_common_password(senha.0.expose_secret()) {
            return Err(invalid(
                "senha",
                Rule::TooCommon,
                "senha: too common (found in lists of leaked passwords); choose another",
            ));
        }
        Ok(senha)
    }

    fn parse_with_min(raw: String, min: usize) -> Result<Self, Error> {
        let len = raw.len();
        if len < min {
            return Err(if min == 1 {
                invalid("senha", Rule::Empty, "senha: must not be empty")
            } else {
                invalid(
                    "senha",
                    Rule::TooShort,
                    format!("senha: must be at least {min} bytes"),
                )
            });
        }
        if len > SENHA_MAX_BYTES {
            return Err(invalid(
                "senha",
                Rule::TooLong,
                format!("senha: must be at most {SENHA_MAX_BYTES} bytes"),
            ));
        }
        Ok(Senha(raw.into()))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

/// An access level, >= 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nivel(i32);

impl Nivel {
    pub fn parse(raw: i32) -> Result<Self, Error> {
        if raw < 0 {
            return Err(invalid(
                "nivel",
                Rule::Negative,
                format!("nivel: must be 0 or greater (got {raw})"),
            ));
        }
        Ok(Nivel(raw))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Whether a password is on the embedded list of the most common ones (case-insensitive).
fn is_common_password(senha: &str) -> bool {
    const LIST: &str = include_str!("common-passwords.txt");
    let senha = senha.to_lowercase();
    LIST.lines()
        .filter(|line| !line.starts_with('#'))
        .any(|common| common == senha)
}

/// A broken rule of a request field; `field` is its name in the proto, and `message`
/// (what callers read) starts with it.
fn invalid(field: &'static str, rule: Rule, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        rule,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usuario_err(raw: &str) -> String {
        Usuario::parse(raw.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn usernames_within_the_rules_are_accepted() {
        for ok in [
            "a",
            "maria",
            "joão da silva",
            &"x".repeat(64),
            &"é".repeat(64),
        ] {
            assert_eq!(Usuario::parse(ok.to_string()).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn bad_usernames_are_rejected_naming_the_field() {
        assert_eq!(usuario_err(""), "usuario: must not be empty");
        assert!(usuario_err(&"x".repeat(65)).contains("at most 64"));
        assert!(usuario_err("a\u{0}b").contains("control"));
        assert!(usuario_err("a\nb").contains("control"));
        assert!(usuario_err(" maria").contains("whitespace"));
        assert!(usuario_err("maria\u{00a0}").contains("whitespace"));
    }

    #[test]
    fn password_lengths_are_checked_in_bytes() {
        assert!(Senha::parse_login("x".into()).is_ok());
        assert!(Senha::parse_login(String::new()).is_err());
        assert!(Senha::parse_new("1234567".into()).is_err());
        assert!(Senha::parse_new("ok 8 byt".into()).is_ok());
        assert!(Senha::parse_new("x".repeat(1024)).is_ok());
        let err = Senha::parse_login("x".repeat(1025))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("senha:"), "{err}");
        // 4 characters of 3 bytes each: 12 bytes, enough for a new password.
        assert!(Senha::parse_new("€€€€".into()).is_ok());
    }

    #[test]
    fn common_passwords_are_refused_for_new_users_only() {
        for common in ["password", "12345678", "Senha123", "QWERTYUIOP", "flamengo"] {
            let err = Senha::parse_new(common.into()).unwrap_err().to_string();
            assert!(err.contains("too common"), "{common}: {err}");
            // A login with one is still checked (the user may predate the policy).
            assert!(Senha::parse_login(common.into()).is_ok());
        }
        assert!(Senha::parse_new("correct horse battery".into()).is_ok());
        // The list's comment lines are not passwords.
        assert!(!is_common_password("# passwords of 8 or more bytes"));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let senha = Senha::parse_login("hunter22".into()).unwrap();
        assert!(!format!("{senha:?}").contains("hunter22"));
    }

    #[test]
    fn negative_levels_are_rejected() {
        assert!(Nivel::parse(0).is_ok());
        assert!(Nivel::parse(i32::MAX).is_ok());
        assert!(
            Nivel::parse(-1)
                .unwrap_err()
                .to_string()
                .starts_with("nivel:")
        );
    }
}
