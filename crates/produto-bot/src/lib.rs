//! produto-bot: the chat bot, a thin client of the produto service for people in a chat. It
//! depends on `produto-client` only (the generated code, the balancing client), never on the
//! server's crate, so that it builds without storage or hashing.
//!
//! [`Bot::handle`] takes one chat message and returns the reply; it parses the command,
//! keeps who is logged in per [`ChatId`], calls the service and words the answer. Transports
//! only move lines: [`stdio`] reads standard input, and a chat platform can be another one.

pub mod admin;
pub mod command;
pub mod config;
mod handler;
pub mod metrics;
pub mod reply;
pub mod run;
pub mod stdio;
pub mod telegram;

pub use command::{Command, ParseError};
pub use config::BotConfig;
pub use handler::{Bot, END_USER_HEADER, Handled, Incoming, ServiceHealth};
pub use metrics::Outcome;

/// Why the bot cannot start: a setting it cannot use (the server's address, a TLS file, the
/// admin token), said in one line. The bot's own, so that it needs none of the server's error
/// (and its storage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Identifies a conversation, so that one handler can serve many chats at once. An `i64`
/// because that is what chat platforms (Telegram, for one) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatId(pub i64);
