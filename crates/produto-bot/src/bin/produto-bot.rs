//! produto-bot: the chat bot. With a Telegram token it talks Telegram until SIGTERM or Ctrl-C
//! (then exits 0); without one it reads chat messages from stdin, one per line, writes each
//! reply to stdout followed by an empty line, and exits 0 at the end of input.

use std::process::ExitCode;

use produto_bot::{
    BotConfig,
    run::{self, Listeners},
};
use produto_client::telemetry;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    // A bad value names the environment variable it came from, when it did.
    let config: BotConfig = produto_client::cli::parse();
    // Kept to the end: dropping it flushes the last spans.
    let _traces = match telemetry::init(config.log_format, "produto-bot") {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("produto-bot: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            produto_client::signal::shutdown().await;
            tracing::info!("shutdown signal received; finishing the update in hand");
            stop.cancel();
        }
    });
    let result = match Listeners::bind(&config).await {
        Ok(listeners) => run::run(&config, listeners, stop).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("produto-bot: {e}");
            ExitCode::FAILURE
        }
    }
}
