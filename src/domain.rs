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
        Self::parse_login_field(raw, "senha")
    }

    /// A password for a new user: 8 to 1024 bytes, and not one of the most common ones.
    pub fn parse_new(raw: String) -> Result<Self, Error> {
        Self::parse_new_field(raw, "senha")
    }

    /// As [`Senha::parse_login`], for a request whose field has another name
    /// (`AlterarSenhaRequest.senha_atual`): errors name `field`.
    pub fn parse_login_field(raw: String, field: &'static str) -> Result<Self, Error> {
        Self::parse_with_min(raw, 1, field)
    }

    /// As [`Senha::parse_new`], naming `field` in errors (`AlterarSenhaRequest.senha_nova`).
    pub fn parse_new_field(raw: String, field: &'static str) -> Result<Self, Error> {
        let senha = Self::parse_with_min(raw, SENHA_MIN_BYTES_NEW, field)?;
        if is_common_password(senha.0.expose_secret()) {
            return Err(invalid(
                field,
                Rule::TooCommon,
                format!("{field}: too common (found in lists of leaked passwords); choose another"),
            ));
        }
        Ok(senha)
    }

    fn parse_with_min(raw: String, min: usize, field: &'static str) -> Result<Self, Error> {
        let len = raw.len();
        if len < min {
            return Err(if min == 1 {
                invalid(field, Rule::Empty, format!("{field}: must not be empty"))
            } else {
                invalid(
                    field,
                    Rule::TooShort,
                    format!("{field}: must be at least {min} bytes"),
                )
            });
        }
        if len > SENHA_MAX_BYTES {
            return Err(invalid(
                field,
                Rule::TooLong,
                format!("{field}: must be at most {SENHA_MAX_BYTES} bytes"),
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

/// The page size of ListarUsuarios when the request leaves it at 0.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// The largest page of ListarUsuarios; a larger `page_size` is taken as this.
pub const PAGE_SIZE_MAX: usize = 1000;

/// Marks the page tokens of this version of the listing, so that a later change of their
/// layout can tell old tokens apart.
const PAGE_TOKEN_VERSION: &str = "u1";

/// A ListarUsuarios request, checked: which users (those whose name starts with `prefixo`,
/// after `after`) and how many. Names are ordered by code point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    pub size: usize,
    pub prefixo: String,
    /// The last name of the previous page; empty for the first page.
    pub after: String,
}

impl UserPage {
    /// Parses the request's fields. The page token must be one this listing handed out for
    /// the same `prefixo` (INVALID_ARGUMENT otherwise, as AIP-158 asks).
    pub fn parse(page_size: i32, page_token: &str, prefixo: String) -> Result<Self, Error> {
        let size = match usize::try_from(page_size) {
            Ok(0) => PAGE_SIZE_DEFAULT,
            Ok(n) => n.min(PAGE_SIZE_MAX),
            Err(_) => {
                return Err(invalid(
                    "page_size",
                    Rule::Negative,
                    format!("page_size: must be 0 or greater (got {page_size})"),
                ));
            }
        };
        if prefixo.chars().count() > USUARIO_MAX_CHARS {
            return Err(invalid(
                "prefixo",
                Rule::TooLong,
                format!("prefixo: must be at most {USUARIO_MAX_CHARS} characters"),
            ));
        }
        if prefixo.chars().any(char::is_control) {
            return Err(invalid(
                "prefixo",
                Rule::ControlCharacters,
                "prefixo: must not contain control characters",
            ));
        }
        let after = if page_token.is_empty() {
            String::new()
        } else {
            Self::decode_token(page_token, &prefixo)?
        };
        Ok(UserPage {
            size,
            prefixo,
            after,
        })
    }

    /// The token of the page after one that ended with `last`. It holds the prefix and the
    /// last name, readable by whoever holds it: only admins list users, and a forged token
    /// only moves the start of a listing they may read whole.
    pub fn next_token(&self, last: &str) -> String {
        use base64::Engine;
        let raw = format!("{PAGE_TOKEN_VERSION}\n{}\n{last}", self.prefixo);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode_token(token: &str, prefixo: &str) -> Result<String, Error> {
        use base64::Engine;
        let bad = |why: &str| {
            invalid(
                "page_token",
                Rule::InvalidToken,
                format!("page_token: {why}; send the next_page_token of the previous page"),
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| bad("not a token this server handed out"))?;
        // Names and prefixes hold no control characters: the newlines split unambiguously.
        let mut parts = raw.splitn(3, '\n');
        let (Some(PAGE_TOKEN_VERSION), Some(issued_for), Some(after)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a token this server handed out"));
        };
        if issued_for != prefixo {
            return Err(bad("handed out for another prefixo"));
        }
        if after.is_empty() || !after.starts_with(prefixo) {
            return Err(bad("not a token this server handed out"));
        }
        Ok(after.to_owned())
    }

    /// The first name past every name that starts with the prefix, in code point order:
    /// the prefix with its last character replaced by the next one (dropping trailing
    /// U+10FFFF). Without one (an empty prefix), a name longer than any username.
    pub fn until(&self) -> String {
        let mut chars: Vec<char> = self.prefixo.chars().collect();
        while let Some(last) = chars.pop() {
            // The next scalar value: surrogates are no chars, so skip over them.
            let next = match last as u32 + 1 {
                0xD800 => Some('\u{E000}'),
                n => char::from_u32(n),
            };
            if let Some(next) = next {
                chars.push(next);
                return chars.into_iter().collect();
            }
        }
        std::iter::repeat_n(char::MAX, USUARIO_MAX_CHARS + 1).collect()
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
    fn page_tokens_round_trip_and_are_bound_to_their_prefix() {
        let first = UserPage::parse(0, "", "ma".into()).unwrap();
        assert_eq!((first.size, first.after.as_str()), (PAGE_SIZE_DEFAULT, ""));
        let token = first.next_token("maria");
        let next = UserPage::parse(5, &token, "ma".into()).unwrap();
        assert_eq!((next.size, next.after.as_str()), (5, "maria"));
        assert_eq!(
            UserPage::parse(5000, "", String::new()).unwrap().size,
            PAGE_SIZE_MAX
        );
        let rule = |size: i32, token: &str, prefixo: &str| match UserPage::parse(
            size,
            token,
            prefixo.into(),
        ) {
            Err(Error::InvalidArgument { field, rule, .. }) => (field, rule),
            other => panic!("{other:?}"),
        };
        assert_eq!(rule(5, &token, "m"), ("page_token", Rule::InvalidToken));
        assert_eq!(
            rule(5, "not a token!", "ma"),
            ("page_token", Rule::InvalidToken)
        );
        assert_eq!(
            rule(5, "dTEKbWEK", "ma"),
            ("page_token", Rule::InvalidToken)
        );
        assert_eq!(rule(-1, "", ""), ("page_size", Rule::Negative));
        assert_eq!(rule(1, "", "a\nb"), ("prefixo", Rule::ControlCharacters));
    }

    #[test]
    fn the_end_of_a_prefix_is_past_every_name_that_starts_with_it() {
        let until = |p: &str| UserPage::parse(1, "", p.into()).unwrap().until();
        assert_eq!(until("ma"), "mb");
        assert_eq!(until("a\u{D7FF}"), "a\u{E000}");
        assert_eq!(until("a\u{10FFFF}"), "b");
        let past_all = until("");
        assert!(past_all.as_str() > "\u{10FFFF}".repeat(64).as_str());
        assert_eq!(until("\u{10FFFF}"), past_all);
        for name in ["ma", "maria", "ma\u{10FFFF}\u{10FFFF}"] {
            assert!(name < until("ma").as_str() && name >= "ma", "{name}");
        }
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
