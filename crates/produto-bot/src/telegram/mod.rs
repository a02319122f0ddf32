//! The Telegram transport: updates arrive by long polling ([`polling`]) or by webhook
//! ([`webhook`]); each message goes through [`Bot::handle_incoming`] and its reply back with
//! `sendMessage`. teloxide supplies the Bot API's types and requests; the loop is ours, so that
//! an update is confirmed only once handled, 429s wait their `retry_after`, and SIGTERM
//! finishes the update in hand before stopping.

pub mod limit;
pub mod polling;
pub mod webhook;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use teloxide::{
    ApiError, RequestError,
    prelude::Requester,
    requests::{Output, Request},
    types::{BotCommand, ChatId as TgChatId, Message, MessageId, Update, UpdateKind},
};
use tokio_util::sync::CancellationToken;

use crate::{Bot, ChatId, Incoming, Outcome, admin::TransportState, reply};
use limit::{Decision, RateLimiter};

/// Telegram's limit on one message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Attempts of one Bot API call (sendMessage, deleteMessage…) before its reply is given up.
const ATTEMPTS: u32 = 6;

/// The longest wait between two attempts after an error without `retry_after`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The Telegram settings, flattened into [`crate::BotConfig`]. The token and the webhook
/// secret are [`SecretString`]s: `Debug` shows neither.
#[derive(Debug, Clone, clap::Args)]
pub struct TelegramConfig {
    /// Bot API token from BotFather. Set (or PRODUTO_BOT_TELEGRAM_TOKEN_FILE): the bot talks
    /// Telegram; unset: it reads standard input.
    #[arg(long, env = "PRODUTO_BOT_TELEGRAM_TOKEN", hide_env_values = true)]
    pub telegram_token: Option<SecretString>,

    /// File holding the Bot API token (e.g. a mounted Kubernetes Secret).
    #[arg(
        long,
        env = "PRODUTO_BOT_TELEGRAM_TOKEN_FILE",
        conflicts_with = "telegram_token"
    )]
    pub telegram_token_file: Option<PathBuf>,

    /// The Bot API's address: Telegram's, a local Bot API server, or a test stand-in.
    #[arg(
        long,
        env = "PRODUTO_BOT_TELEGRAM_API_URL",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_url: String,

    /// How long one getUpdates long poll waits for updates (long polling mode).
    #[arg(long, env = "PRODUTO_BOT_POLL_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub poll_timeout: Duration,

    /// First wait after a failed Bot API call without `retry_after`; doubles up to 30 s.
    #[arg(long, env = "PRODUTO_BOT_RETRY_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,

    /// Public HTTPS URL Telegram posts updates to. Set: webhook mode; unset: long polling.
    #[arg(long, env = "PRODUTO_BOT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Where the webhook listens (behind the ingress that terminates TLS).
    #[arg(long, env = "PRODUTO_BOT_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,

    /// Secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (1–256 of A-Z a-z 0-9 _ -);
    /// required in webhook mode.
    #[arg(long, env = "PRODUTO_BOT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,

    /// File holding the webhook secret.
    #[arg(
        long,
        env = "PRODUTO_BOT_WEBHOOK_SECRET_FILE",
        conflicts_with = "webhook_secret"
    )]
    pub webhook_secret_file: Option<PathBuf>,

    /// Commands a minute each Telegram user may send, on average (0: no limit).
    #[arg(long, env = "PRODUTO_BOT_USER_RATE", default_value_t = 20)]
    pub user_rate_per_minute: u32,

    /// Commands a Telegram user may send at once before the rate applies.
    #[arg(long, env = "PRODUTO_BOT_USER_BURST", default_value_t = 5)]
    pub user_burst: u32,
}

impl TelegramConfig {
    /// The token, from the variable or the file; `None`: no Telegram.
    pub fn token(&self) -> Result<Option<SecretString>, String> {
        secret(
            self.telegram_token.as_ref(),
            self.telegram_token_file.as_deref(),
            "PRODUTO_BOT_TELEGRAM_TOKEN",
        )
    }

    /// The webhook's URL and secret, when webhook mode is configured.
    pub fn webhook(&self) -> Result<Option<(url::Url, SecretString)>, String> {
        let Some(raw) = self.webhook_url.as_deref() else {
            return Ok(None);
        };
        let url = url::Url::parse(raw).map_err(|e| format!("PRODUTO_BOT_WEBHOOK_URL: {e}"))?;
        let secret = secret(
            self.webhook_secret.as_ref(),
            self.webhook_secret_file.as_deref(),
            "PRODUTO_BOT_WEBHOOK_SECRET",
        )?
        .ok_or("webhook mode needs PRODUTO_BOT_WEBHOOK_SECRET (or _FILE)")?;
        let text = secret.expose_secret();
        let valid = (1..=256).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err("PRODUTO_BOT_WEBHOOK_SECRET must be 1-256 of A-Z a-z 0-9 _ -".into());
        }
        Ok(Some((url, secret)))
    }
}

/// A secret from its variable or its file (trimmed); an empty one is an error.
fn secret(
    value: Option<&SecretString>,
    file: Option<&std::path::Path>,
    name: &str,
) -> Result<Option<SecretString>, String> {
    let value = match (value, file) {
        (Some(v), _) => v.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("{name}_FILE {}: {e}", path.display()))?
            .trim()
            .into(),
        (None, None) => return Ok(None),
    };
    if value.expose_secret().is_empty() {
        return Err(format!("{name} is set but empty"));
    }
    Ok(Some(value))
}

/// The commands shown in Telegram's menu (`setMyCommands`).
fn command_menu() -> Vec<BotCommand> {
    [
        (
            "login",
            "entrar: /login <usuario> <senha> (só em conversa privada)",
        ),
        ("nivel", "o seu nível de acesso, ou o de outro usuário"),
        ("senha", "trocar a sua senha (só em conversa privada)"),
        (
            "adicionar",
            "criar um usuário (administradores, conversa privada)",
        ),
        (
            "definirsenha",
            "definir a senha de um usuário (administradores, conversa privada)",
        ),
        (
            "alterarnivel",
            "mudar o nível de um usuário (administradores)",
        ),
        ("remover", "remover um usuário (administradores)"),
        ("usuarios", "listar os usuários (administradores)"),
        ("status", "a saúde do serviço e do pool de conexões"),
        ("logout", "sair"),
        ("ajuda", "a lista de comandos"),
    ]
    .into_iter()
    .map(|(command, description)| BotCommand::new(command, description))
    .collect()
}

/// The transport's shared part: the Bot API client and what every update needs.
pub struct Telegram {
    api: teloxide::Bot,
    /// Kept only to scrub it from error messages (reqwest's include the URL, token and all).
    token: SecretString,
    bot: Arc<Bot>,
    state: Arc<TransportState>,
    limiter: RateLimiter,
    poll_timeout: Duration,
    retry_delay: Duration,
    stop: CancellationToken,
}

impl Telegram {
    /// The Bot API client for `token`; `stop` ends polling (or the webhook) and retry waits.
    pub fn new(
        config: &TelegramConfig,
        token: SecretString,
        bot: Arc<Bot>,
        state: Arc<TransportState>,
        stop: CancellationToken,
    ) -> Result<Telegram, String> {
        let api_url = url::Url::parse(&config.telegram_api_url)
            .map_err(|e| format!("PRODUTO_BOT_TELEGRAM_API_URL: {e}"))?;
        if config.poll_timeout.is_zero() || config.retry_delay.is_zero() {
            return Err("PRODUTO_BOT_POLL_TIMEOUT and PRODUTO_BOT_RETRY_DELAY must be > 0".into());
        }
        // The HTTP timeout must outlast a long poll, or every quiet poll would be an error.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(config.poll_timeout + Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let api = teloxide::Bot::with_client(token.expose_secret(), client).set_api_url(api_url);
        Ok(Telegram {
            api,
            token,
            bot,
            state,
            limiter: RateLimiter::new(config.user_rate_per_minute, config.user_burst),
            poll_timeout: config.poll_timeout,
            retry_delay: config.retry_delay,
            stop,
        })
    }

    /// Checks the token (getMe, retried until it answers or the bot stops) and sets the
    /// command menu. Err: the token is refused, or the bot was stopped first.
    pub async fn start(&self) -> Result<(), String> {
        let me = self
            .until_stopped("getMe", || self.api.get_me().send())
            .await?;
        let username = me.username.as_deref().unwrap_or("?");
        tracing::info!(bot = %username, id = me.id.0, "Telegram bot identified");
        if let Err(e) = self
            .retrying("setMyCommands", &self.api.set_my_commands(command_menu()))
            .await
        {
            tracing::warn!(error = %self.scrub(&e), "cannot set the command menu");
        }
        Ok(())
    }

    /// Handles one update: a text message becomes a command and a reply; anything else is
    /// counted and ignored.
    pub async fn handle_update(&self, update: Update) {
        self.bot.metrics().update_received();
        let UpdateKind::Message(message) = update.kind else {
            tracing::debug!(update = update.id.0, "not a message; ignored");
            return;
        };
        let (Some(text), Some(user)) = (message.text(), message.from.as_ref()) else {
            return;
        };
        let user_id = user.id.0;
        let private = message.chat.is_private();
        let mut held_password = crate::command::names_a_password_command(text);
        let reply = match self.limiter.check(user_id) {
            Decision::Allow => {
                let end_user = format!("telegram:{user_id}");
                let handled = self
                    .bot
                    .handle_incoming(Incoming {
                        // Per user, not per chat: see docs/bot.md, "Who is logged in".
                        session: ChatId(user_id as i64),
                        end_user: Some(&end_user),
                        shared_chat: !private,
                        text,
                    })
                    .await;
                held_password = handled.held_password;
                Some(handled.reply)
            }
            decision => {
                self.bot.metrics().command("none", Outcome::Limited);
                tracing::info!(user = user_id, "rate limited");
                (decision == Decision::DenyAndWarn).then(|| reply::RATE_LIMITED.to_string())
            }
        };
        let mut reply = reply;
        if held_password {
            let deleted = self.delete(&message).await;
            if private && let Some(text) = reply.as_mut() {
                text.push('\n');
                text.push_str(if deleted {
                    reply::PASSWORD_DELETED
                } else {
                    reply::PASSWORD_NOT_DELETED
                });
            }
        }
        if let Some(text) = reply {
            self.send(message.chat.id, &text).await;
        }
    }

    /// Deletes a message that holds a password; true when it is gone.
    async fn delete(&self, message: &Message) -> bool {
        let request = self.api.delete_message(message.chat.id, message.id);
        match self.retrying("deleteMessage", &request).await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageToDeleteNotFound)) => true,
            Err(e) => {
                let MessageId(id) = message.id;
                tracing::warn!(chat = message.chat.id.0, message = id, error = %self.scrub(&e), "cannot delete a message holding a password");
                false
            }
        }
    }

    /// Sends a reply, split at Telegram's length limit, each part retried.
    async fn send(&self, chat: TgChatId, text: &str) {
        for part in split(text, MAX_MESSAGE_CHARS) {
            let request = self.api.send_message(chat, part);
            if let Err(e) = self.retrying("sendMessage", &request).await {
                tracing::error!(chat = chat.0, error = %self.scrub(&e), "reply lost");
                return;
            }
        }
    }

    /// Sends `request` until it succeeds, for at most [`ATTEMPTS`]: a 429 waits its
    /// `retry_after`; a server or network error waits a doubling backoff; any other API error
    /// (chat not found, bot blocked…) is final.
    async fn retrying<R>(
        &self,
        method: &'static str,
        request: &R,
    ) -> Result<Output<R>, RequestError>
    where
        R: Request<Err = RequestError>,
    {
        let mut backoff = self.retry_delay;
        let mut attempt = 1;
        loop {
            let error = match request.send_ref().await {
                Ok(output) => return Ok(output),
                Err(e) => e,
            };
            let wait = match &error {
                RequestError::RetryAfter(after) => after.duration(),
                e if retryable(e) => backoff,
                _ => return Err(error),
            };
            if attempt >= ATTEMPTS {
                return Err(error);
            }
            tracing::warn!(method, attempt, wait_ms = wait.as_millis() as u64, error = %self.scrub(&error), "Bot API call failed; retrying");
            self.bot.metrics().telegram_retry(method);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// Calls `call` until it succeeds, waiting between failures, until the bot is stopped. A
    /// refused token is final.
    async fn until_stopped<T, F>(
        &self,
        method: &'static str,
        mut call: impl FnMut() -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<T, RequestError>>,
    {
        let mut backoff = self.retry_delay;
        loop {
            let result = tokio::select! {
                () = self.stop.cancelled() => return Err("stopped".into()),
                result = call() => result,
            };
            let error = match result {
                Ok(output) => return Ok(output),
                Err(RequestError::Api(ApiError::InvalidToken)) => {
                    return Err("Telegram refused the bot token".into());
                }
                Err(e) => e,
            };
            let wait = match &error {
                RequestError::RetryAfter(after) => after.duration(),
                _ => backoff,
            };
            tracing::warn!(method, wait_ms = wait.as_millis() as u64, error = %self.scrub(&error), "Bot API call failed; retrying");
            self.bot.metrics().telegram_retry(method);
            if self.sleep_unless_stopped(wait).await {
                return Err("stopped".into());
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps for `wait`; true if the bot was stopped meanwhile.
    async fn sleep_unless_stopped(&self, wait: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// An error's text with the token taken out (reqwest's errors carry the request URL).
    fn scrub(&self, error: &RequestError) -> String {
        error.to_string().replace(self.token.expose_secret(), "***")
    }
}

/// Whether an error may go away by itself: the network, a server error (teloxide already
/// waited 10 s on a 5xx before returning it), a body that is not the Bot API's JSON.
fn retryable(error: &RequestError) -> bool {
    match error {
        RequestError::Network(_) | RequestError::InvalidJson { .. } | RequestError::Io(_) => true,
        // A description teloxide does not know: what Telegram's 5xx answers carry.
        RequestError::Api(ApiError::Unknown(_)) => true,
        _ => false,
    }
}

/// Splits `text` into parts of at most `max` characters, at line ends where it can.
pub fn split(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        // The byte offset just past the `max`th character.
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let cut = match rest[..limit].rfind('\n') {
            Some(newline) if newline > 0 => newline + 1,
            _ => limit,
        };
        parts.push(rest[..cut].trim_end_matches('\n'));
        rest = &rest[cut..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_are_split_at_line_ends_within_the_limit() {
        assert_eq!(split("curta", 10), ["curta"]);
        assert_eq!(
            split("linha um\nlinha dois", 10),
            ["linha um", "linha dois"]
        );
        // No line end in reach: cut at the limit, on a character boundary.
        let long = "ção".repeat(5);
        let parts = split(&long, 4);
        assert!(parts.iter().all(|p| p.chars().count() <= 4), "{parts:?}");
        assert_eq!(parts.concat(), long);
        let text = "x".repeat(MAX_MESSAGE_CHARS * 2 + 1);
        let parts = split(&text, MAX_MESSAGE_CHARS);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn webhook_mode_needs_a_valid_secret() {
        use clap::Parser;
        let mut config = crate::BotConfig::parse_from(["produto-bot"]).telegram;
        assert!(config.webhook().unwrap().is_none());
        config.webhook_url = Some("https://bot.example.com/telegram".into());
        assert!(config.webhook().unwrap_err().contains("SECRET"));
        config.webhook_secret = Some("não vale".into());
        assert!(config.webhook().is_err());
        config.webhook_secret = Some("s3cret_-X".into());
        let (url, secret) = config.webhook().unwrap().unwrap();
        assert_eq!(url.path(), "/telegram");
        assert_eq!(secret.expose_secret(), "s3cret_-X");
    }

    #[test]
    fn the_token_and_the_webhook_secret_never_show_in_debug_output() {
        use clap::Parser;
        let mut config = crate::BotConfig::parse_from(["produto-bot"]);
        config.telegram.telegram_token = Some("123456:telegram-token".into());
        config.telegram.webhook_secret = Some("webhook-s3cret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("telegram-token"), "{shown}");
        assert!(!shown.contains("webhook-s3cret"), "{shown}");
    }
}
