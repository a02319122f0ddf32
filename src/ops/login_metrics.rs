//! The login feature's figures for `/metrics`, read at scrape time from its counters
//! (`login::LoginCounters`): throttled logins, passwords verified, attempts counted in memory.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::gauge::ConstGauge,
};

use super::pool_metrics::{encode_counters, encode_one};
use crate::login::LoginCounters;

/// Reads the login counters at scrape time.
#[derive(Debug)]
pub struct LoginCollector {
    pub counters: Arc<LoginCounters>,
}

impl Collector for LoginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.counters.snapshot();
        encode_one(
            &mut encoder,
            "produto_login_throttle_in_memory",
            "1 while login attempts are counted in this instance's memory (throttling table unreachable)",
            None,
            ConstGauge::new(i64::from(s.throttle_in_memory)),
        )?;
        let counters: [(&str, &str, u64); 3] = [
            (
                "produto_logins_throttled",
                "Logins refused unchecked by brute-force throttling",
                s.logins_throttled_total,
            ),
            (
                "produto_password_verifications",
                "Passwords checked against a user's stored hash (the dummy hash not counted)",
                s.password_verifications_total,
            ),
            (
                "produto_login_attempts_in_memory",
                "Login attempts counted in memory because the throttling table could not be written",
                s.logins_counted_in_memory_total,
            ),
        ];
        encode_counters(&mut encoder, &counters)
    }
}
