//! The bot's configuration: one struct, every field a flag with an environment fallback.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

use produto_client::telemetry::LogFormat;

/// produto-bot: a chat bot over the produto service. With a Telegram token it talks Telegram
/// (long polling, or a webhook when PRODUTO_BOT_WEBHOOK_URL is set); without one it reads chat
/// messages from standard input, one per line, and writes each reply to standard output,
/// followed by an empty line. Every secret in it (the caller token, the Telegram token, the
/// webhook secret) is a [`SecretString`], so that its `Debug` shows none of them.
#[derive(Debug, Clone, Parser)]
#[command(name = "produto-bot", version)]
pub struct BotConfig {
    /// Address of the produto service: `host:port` (plaintext), `http://host:port`, or
    /// `https://host:port` for TLS.
    #[arg(long, env = "PRODUTO_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,

    /// PEM CA bundle to verify the service's certificate with (for an `https://` server;
    /// unset: the system's web roots).
    #[arg(long, env = "PRODUTO_BOT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with PRODUTO_BOT_TLS_KEY).
    #[arg(long, env = "PRODUTO_BOT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of PRODUTO_BOT_TLS_CERT.
    #[arg(long, env = "PRODUTO_BOT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Longest wait for a connection to the service (e.g. `3s`, `500ms`).
    #[arg(long, env = "PRODUTO_BOT_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Deadline of each call to the service; past it the chat is told to try again.
    #[arg(long, env = "PRODUTO_BOT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// The bot's caller token (a line of the service's PRODUTO_CALLER_TOKENS_FILE), sent as
    /// `authorization: Bearer <token>` on every call: the service binds each chat's session
    /// to the bot by it. Not needed when the bot connects with a client certificate
    /// (PRODUTO_BOT_TLS_CERT).
    #[arg(long, env = "PRODUTO_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,

    /// File holding the caller token (a mounted Secret); replaces PRODUTO_TOKEN. A trailing
    /// newline is ignored.
    #[arg(long, env = "PRODUTO_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// Deprecated and ignored: the bot acts with each chat user's session, never with the
    /// admin token (a warning is logged when it is set).
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN", hide_env_values = true, hide = true)]
    pub admin_token: Option<SecretString>,

    /// Address of the bot's admin HTTP port (/health, /livez, /readyz, /metrics); empty
    /// switches it off.
    #[arg(long, env = "PRODUTO_BOT_ADMIN_ADDR", default_value = "0.0.0.0:9091")]
    pub admin_addr: String,

    #[command(flatten)]
    pub telegram: crate::telegram::TelegramConfig,

    /// Log format: `text` or `json`. Logs go to stderr (levels from RUST_LOG, default
    /// `info`); stdout carries only replies.
    #[arg(long, env = "PRODUTO_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

impl BotConfig {
    /// Every default, pointed at `server`: for tests and tools that build one in code.
    pub fn for_server(server: impl Into<String>) -> Self {
        let mut config = BotConfig::parse_from(["produto-bot"]);
        config.server = server.into();
        config
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("PRODUTO_BOT_CONNECT_TIMEOUT", self.connect_timeout),
            ("PRODUTO_BOT_TIMEOUT", self.timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret().is_empty())
        {
            return Err("PRODUTO_TOKEN is set but empty; unset it or give a token".into());
        }
        Ok(())
    }

    /// The caller token: PRODUTO_TOKEN, or the contents of PRODUTO_TOKEN_FILE.
    pub fn caller_token(&self) -> Result<Option<SecretString>, String> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("PRODUTO_TOKEN_FILE: cannot read {}: {e}", path.display()))?;
        let token = text.trim_end_matches(['\n', '\r']);
        if token.is_empty() {
            return Err(format!("PRODUTO_TOKEN_FILE {} is empty", path.display()));
        }
        Ok(Some(token.to_owned().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_never_show_in_debug_output() {
        let mut config = BotConfig::for_server("http://127.0.0.1:1");
        config.token = Some("s3cret-token".into());
        config.admin_token = Some("old-admin-token".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-token") && !shown.contains("old-admin"));
    }

    #[test]
    fn the_caller_token_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "bot-token-0123456789\n").unwrap();
        let mut config = BotConfig::for_server("http://127.0.0.1:1");
        config.token_file = Some(path);
        let token = config.caller_token().unwrap().unwrap();
        assert_eq!(token.expose_secret(), "bot-token-0123456789");
    }

    #[test]
    fn zero_timeouts_and_empty_tokens_are_rejected() {
        let mut config = BotConfig::for_server("http://127.0.0.1:1");
        config.token = None;
        assert!(config.validate().is_ok());
        config.timeout = Duration::ZERO;
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("PRODUTO_BOT_TIMEOUT")
        );
        config.timeout = Duration::from_secs(1);
        config.token = Some(String::new().into());
        assert!(config.validate().is_err());
    }
}
