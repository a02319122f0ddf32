//! Webhook mode: Telegram posts each update to `PRODUTO_BOT_WEBHOOK_URL` (HTTPS, terminated
//! by the ingress), and this server receives it on `PRODUTO_BOT_WEBHOOK_ADDR`. A request without
//! the right `X-Telegram-Bot-Api-Secret-Token` (compared in constant time) is refused and
//! handled not at all. The update is answered 200 once handled, so Telegram resends it if the
//! bot dies on the way.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use teloxide::{
    payloads::SetWebhookSetters,
    prelude::Requester,
    requests::Request,
    types::{AllowedUpdate, Update},
};
use tokio::net::TcpListener;

use super::Telegram;

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

#[derive(Clone)]
struct Hook {
    telegram: Arc<Telegram>,
    secret: SecretString,
}

/// Registers the webhook (`setWebhook` with the secret, retried until it succeeds) and serves
/// it on `listener` until the bot is stopped. The webhook stays registered at stop, so that a
/// rolling update's new pod keeps receiving. Err only when the bot cannot start.
pub async fn run(
    telegram: Arc<Telegram>,
    listener: TcpListener,
    url: url::Url,
    secret: SecretString,
) -> Result<(), String> {
    let router = Router::new()
        .route(url.path(), post(receive))
        .with_state(Hook {
            telegram: telegram.clone(),
            secret: secret.clone(),
        });
    // Serve first: Telegram may post as soon as the webhook is set.
    let stop = telegram.stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let registered = async {
        telegram.start().await?;
        telegram
            .until_stopped("setWebhook", || {
                telegram
                    .api
                    .set_webhook(url.clone())
                    .secret_token(secret.expose_secret())
                    .allowed_updates([AllowedUpdate::Message])
                    .send()
            })
            .await
    };
    match registered.await {
        Ok(_) => {
            tracing::info!(path = url.path(), "webhook registered");
            telegram.state.set_ready(true);
        }
        Err(_) if telegram.stop.is_cancelled() => {}
        Err(e) => {
            telegram.stop.cancel();
            let _ = server.await;
            return Err(e);
        }
    }
    let served = server.await;
    telegram.state.set_ready(false);
    match served {
        Ok(Ok(())) => {
            tracing::info!("webhook server stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(format!("webhook server: {e}")),
        Err(e) => Err(format!("webhook server task: {e}")),
    }
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(given) = headers.get(SECRET_HEADER) else {
        tracing::warn!("webhook request without the secret token; refused");
        return StatusCode::UNAUTHORIZED;
    };
    if !bool::from(
        given
            .as_bytes()
            .ct_eq(hook.secret.expose_secret().as_bytes()),
    ) {
        tracing::warn!("webhook request with a wrong secret token; refused");
        return StatusCode::FORBIDDEN;
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body is not an update");
            return StatusCode::BAD_REQUEST;
        }
    };
    hook.telegram.handle_update(update).await;
    StatusCode::OK
}
