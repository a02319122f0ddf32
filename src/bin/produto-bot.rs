//! produto-bot: the chat bot on a terminal. Reads chat messages from stdin, one per line,
//! writes each reply to stdout followed by an empty line, and exits 0 at the end of input.

use std::process::ExitCode;

use clap::Parser;
use produto::{
    bot::{Bot, BotConfig, stdio},
    telemetry,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = BotConfig::parse();
    telemetry::init(config.log_format);
    let bot = match Bot::build(&config) {
        Ok(bot) => bot,
        Err(e) => {
            eprintln!("produto-bot: {e}");
            return ExitCode::FAILURE;
        }
    };
    bot.check_service().await;
    match stdio::run(&bot, tokio::io::stdin(), tokio::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("produto-bot: {e}");
            ExitCode::FAILURE
        }
    }
}
