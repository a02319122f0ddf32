//! Wiring the bot: the handler, its admin port, and the transport the configuration picks
//! (Telegram long polling or webhook with a token, standard input without), run until `stop`.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Bot, BotConfig,
    admin::{self, TransportState},
    stdio,
};

/// The sockets the bot serves on, bound before it runs (port 0 in tests).
#[derive(Default)]
pub struct Listeners {
    pub admin: Option<TcpListener>,
    pub webhook: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `config` asks for: the admin port unless its address is empty, the webhook's
    /// port in webhook mode.
    pub async fn bind(config: &BotConfig) -> Result<Listeners, String> {
        let admin = match config.admin_addr.trim() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("PRODUTO_BOT_ADMIN_ADDR {addr}: {e}"))?,
            ),
        };
        let webhook = if config.telegram.webhook_url.is_some() && config.telegram.token()?.is_some()
        {
            let addr = config.telegram.webhook_addr;
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("PRODUTO_BOT_WEBHOOK_ADDR {addr}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Listeners { admin, webhook })
    }
}

/// The transport the configuration picks, with the token (and the webhook's secret).
enum Mode {
    Stdin,
    Polling(SecretString),
    Webhook(SecretString, url::Url, SecretString),
}

impl Mode {
    fn of(config: &BotConfig) -> Result<Mode, String> {
        if let Some(token) = config.telegram.token()? {
            return Ok(match config.telegram.webhook()? {
                Some((url, secret)) => Mode::Webhook(token, url, secret),
                None => Mode::Polling(token),
            });
        }
        Ok(Mode::Stdin)
    }

    fn name(&self) -> &'static str {
        match self {
            Mode::Stdin => "stdin",
            Mode::Polling(_) => "polling",
            Mode::Webhook(..) => "webhook",
        }
    }
}

/// Runs the bot until `stop` is cancelled (or, on standard input, until its end). Err: a
/// configuration the bot cannot run with, or a token Telegram refuses.
pub async fn run(
    config: &BotConfig,
    listeners: Listeners,
    stop: CancellationToken,
) -> Result<(), String> {
    let mode = Mode::of(config)?;
    let bot = Arc::new(Bot::build(config).map_err(|e| e.to_string())?);
    let transport = TransportState::new(mode.name());
    let admin = listeners.admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin port listening");
        }
        let router = admin::router(bot.clone(), transport.clone());
        tokio::spawn(admin::serve(listener, router, stop.clone()))
    });
    tracing::info!(transport = mode.name(), "produto-bot starting");
    bot.check_service().await;
    let result = run_transport(config, mode, bot, transport, listeners.webhook, &stop).await;
    stop.cancel();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    result
}

/// Runs the chosen transport until it ends or `stop` is cancelled.
async fn run_transport(
    config: &BotConfig,
    mode: Mode,
    bot: Arc<Bot>,
    transport: Arc<TransportState>,
    webhook: Option<TcpListener>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let telegram = |token| {
        crate::telegram::Telegram::new(
            &config.telegram,
            token,
            bot.clone(),
            transport.clone(),
            stop.clone(),
        )
    };
    match mode {
        Mode::Stdin => {
            let _ = (config, webhook);
            transport.set_ready(true);
            // A person at a terminal is told where to start; a script's pipe gets replies only.
            let greet = std::io::IsTerminal::is_terminal(&std::io::stdin());
            tokio::select! {
                () = stop.cancelled() => Ok(()),
                result = stdio::run(&bot, greet, tokio::io::stdin(), tokio::io::stdout()) => {
                    result.map_err(|e| e.to_string())
                }
            }
        }
        Mode::Polling(token) => crate::telegram::polling::run(&telegram(token)?).await,
        Mode::Webhook(token, url, secret) => {
            let listener = webhook.ok_or("webhook mode without a webhook listener")?;
            let telegram = Arc::new(telegram(token)?);
            crate::telegram::webhook::run(telegram, listener, url, secret).await
        }
    }
}
