//! The users feature's figures for `/metrics`, read at scrape time: the users still on an
//! imported legacy password hash, by format (counted by `users`, see `app/supervise.rs`).

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::gauge::ConstGauge,
};

use crate::users::Users;

/// The label of `produto_users_legacy_hash`: a legacy password format.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
}

/// Reads the users on legacy hashes at scrape time; nothing until the first count.
#[derive(Debug)]
pub struct LegacyHashCollector {
    pub users: Users,
}

impl Collector for LegacyHashCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(counts) = self.users.legacy_hashes().get() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "produto_users_legacy_hash",
            "Users still on an imported legacy password hash, by format (each is replaced \
             by argon2id at the user's first login).",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (format, users) in counts {
            ConstGauge::new(users).encode(family.encode_family(&FormatLabels { format })?)?;
        }
        Ok(())
    }
}
