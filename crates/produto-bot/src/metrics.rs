//! The bot's Prometheus metrics (`prometheus-client`, one registry per [`crate::Bot`], so that
//! tests running side by side each see their own figures): updates received, commands by name
//! and outcome, and how long the service took to answer.

use std::{fmt, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Latency buckets in seconds, 1 ms to 10 s: lookups at the bottom, argon2 logins around tens
/// of milliseconds, timeouts at the top.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What came of a chat command (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Ok,
    /// Not a command, or a malformed one.
    Invalid,
    /// Refused by the bot or the service (wrong password, not an admin, already exists…).
    Refused,
    /// The service was down, unreachable or too slow.
    Unavailable,
    /// Any other failure of the service.
    Failed,
    /// Dropped by the per-user rate limit.
    Limited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Refused => "refused",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "failed",
            Outcome::Limited => "limited",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The bot's counters and histograms, and the registry that exposes them.
pub struct BotMetrics {
    registry: Registry,
    updates: Counter,
    commands: Family<CommandLabels, Counter>,
    service_calls: HistogramFamily<MethodLabels>,
    telegram_retries: Family<MethodLabels, Counter>,
}

impl Default for BotMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("produto_bot");
        let updates = Counter::default();
        registry.register(
            "updates_received",
            "Chat updates received from the transport",
            updates.clone(),
        );
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "commands",
            "Chat commands handled, by command name and outcome",
            commands.clone(),
        );
        let service_calls: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "service_call_duration",
            "Time the produto service took to answer a call, by method",
            Unit::Seconds,
            service_calls.clone(),
        );
        let telegram_retries = Family::<MethodLabels, Counter>::default();
        registry.register(
            "telegram_retries",
            "Bot API calls retried after a 429 (retry_after) or a server or network error",
            telegram_retries.clone(),
        );
        BotMetrics {
            registry,
            updates,
            commands,
            service_calls,
            telegram_retries,
        }
    }
}

impl BotMetrics {
    pub fn update_received(&self) {
        self.updates.inc();
    }

    pub fn command(&self, command: &'static str, outcome: Outcome) {
        self.commands
            .get_or_create(&CommandLabels {
                command,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn service_call(&self, method: &'static str, took: Duration) {
        self.service_calls
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    pub fn telegram_retry(&self, method: &'static str) {
        self.telegram_retries
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric (served as
    /// `produto_client::admin::METRICS_CONTENT_TYPE`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
