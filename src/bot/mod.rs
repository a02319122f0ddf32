//! The chat bot: a thin client of the produto service for people in a chat.
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
#[cfg(feature = "bot")]
pub mod telegram;

pub use command::{Command, ParseError, Secret};
pub use config::BotConfig;
pub use handler::{Bot, END_USER_HEADER, Handled, Incoming, ServiceHealth};
pub use metrics::Outcome;

/// Identifies a conversation, so that one handler can serve many chats at once. An `i64`
/// because that is what chat platforms (Telegram, for one) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatId(pub i64);
