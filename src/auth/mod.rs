//! Who may call: caller authentication (a bearer token per calling service, or its client
//! certificate) for every RPC but health and reflection, and the admin token that guards
//! the admin operations (AdicionarUsuario, AlterarSenha by an admin, AlterarNivel,
//! RemoverUsuario, ListarUsuarios).

mod admin;
mod caller;

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

pub use admin::{ADMIN_TOKEN_KEY, AdminToken};
pub use caller::{ANONYMOUS, Caller, CallerAuth, UNKNOWN, Via, caller};

/// Who may call, as flags (flattened into the server's command line by `config.rs`): the
/// admin token and caller authentication. The TLS files that name callers by certificate are
/// the serving flags' (`config.rs`).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthFlags {
    /// Bearer token that AdicionarUsuario requires. Unset: AdicionarUsuario is refused.
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Require every RPC but health and reflection to name its caller: a token of
    /// PRODUTO_CALLER_TOKENS_FILE in `authorization: Bearer <token>`, or a client certificate
    /// (PRODUTO_TLS_CLIENT_CA). Calls without one get UNAUTHENTICATED. Off: callers that do
    /// present an identity are still named in logs and metrics.
    #[arg(long, env = "PRODUTO_CALLER_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub caller_auth: bool,

    /// File of caller tokens (a mounted Secret): one `name token` per line, `#` comments.
    #[arg(long, env = "PRODUTO_CALLER_TOKENS_FILE")]
    pub caller_tokens_file: Option<PathBuf>,

    /// File holding the admin token (a mounted Secret); replaces PRODUTO_ADMIN_TOKEN. A
    /// trailing newline is ignored.
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
}

impl AuthFlags {
    /// Checks what clap cannot: a set admin token is not empty.
    pub fn validate(&self) -> Result<(), String> {
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().is_empty())
        {
            return Err("PRODUTO_ADMIN_TOKEN is set but empty; unset it or give a token".into());
        }
        Ok(())
    }
}

/// The token of an `authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110: `bearer`, `BEARER` too), followed by one or more spaces.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
