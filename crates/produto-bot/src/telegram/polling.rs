//! Long polling: `getUpdates` in a loop. An update is confirmed (the next poll's `offset`)
//! only after it was handled, so a failed poll or a crash loses nothing; on stop the update in
//! hand is finished, the rest of the batch left for the next start, and the handled ones
//! confirmed with one last short poll.

use std::time::Duration;

use teloxide::{
    RequestError, payloads::GetUpdatesSetters, prelude::Requester, requests::Request,
    types::AllowedUpdate,
};

use super::{MAX_BACKOFF, Telegram};

/// Bound on the last poll that confirms the handled updates at shutdown.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// Polls and handles updates until the bot is stopped. Err only when the bot cannot start
/// (Telegram refuses the token).
pub async fn run(telegram: &Telegram) -> Result<(), String> {
    match telegram.start().await {
        Err(e) if telegram.stop.is_cancelled() => {
            tracing::info!(reason = %e, "stopped before polling started");
            return Ok(());
        }
        result => result?,
    }
    // A webhook left by an earlier deployment makes getUpdates fail with a conflict.
    telegram
        .until_stopped("deleteWebhook", || telegram.api.delete_webhook().send())
        .await
        .ok();
    let timeout_secs = u32::try_from(telegram.poll_timeout.as_secs().max(1)).unwrap_or(u32::MAX);
    let mut offset: Option<i32> = None;
    let mut backoff = telegram.retry_delay;
    tracing::info!("polling Telegram for updates");
    'polling: while !telegram.stop.is_cancelled() {
        let mut request = telegram
            .api
            .get_updates()
            .timeout(timeout_secs)
            .allowed_updates([AllowedUpdate::Message]);
        if let Some(offset) = offset {
            request = request.offset(offset);
        }
        let result = tokio::select! {
            () = telegram.stop.cancelled() => break,
            result = request.send() => result,
        };
        let updates = match result {
            Ok(updates) => updates,
            Err(error) => {
                let wait = match &error {
                    RequestError::RetryAfter(after) => after.duration(),
                    _ => {
                        telegram.state.set_ready(false);
                        backoff
                    }
                };
                tracing::warn!(wait_ms = wait.as_millis() as u64, error = %telegram.scrub(&error), "getUpdates failed; retrying");
                telegram.bot.metrics().telegram_retry("getUpdates");
                if telegram.sleep_unless_stopped(wait).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        telegram.state.set_ready(true);
        backoff = telegram.retry_delay;
        for update in updates {
            let next = i32::try_from(update.id.0).map_or(i32::MAX, |id| id.saturating_add(1));
            telegram.handle_update(update).await;
            offset = Some(next);
            if telegram.stop.is_cancelled() {
                break 'polling;
            }
        }
    }
    telegram.state.set_ready(false);
    if let Some(offset) = offset {
        let confirm = telegram
            .api
            .get_updates()
            .offset(offset)
            .timeout(0)
            .limit(1);
        match tokio::time::timeout(CONFIRM_WITHIN, confirm.send()).await {
            Ok(Ok(_)) => tracing::info!(offset, "handled updates confirmed"),
            _ => tracing::warn!(
                offset,
                "could not confirm the handled updates; Telegram may send the last ones again"
            ),
        }
    }
    tracing::info!("polling stopped");
    Ok(())
}
