//! Prometheus metrics (`prometheus-client`, one registry per [`crate::Application`], so that
//! tests running side by side each see their own figures).
//!
//! The registry and what is in it. Counted where things happen: RPCs in the middleware
//! ([`super::rpc_metrics`]), queries and acquire waits in [`crate::db::Db`]. Pool gauges and
//! counters are read from [`crate::db::Db::snapshot`] at scrape time
//! ([`super::pool_metrics`]) instead of being counted twice; so are the features' own
//! figures, added with [`Metrics::with_users`] and [`Metrics::with_login`].

use std::{fmt, sync::Arc};

use prometheus_client::{encoding::text::encode, metrics::info::Info, registry::Registry};

use crate::{
    db::Db,
    login::LoginCounters,
    ops::{
        login_metrics::LoginCollector,
        pool_metrics::{PoolCollector, ServersCollector},
        rpc_metrics::RpcMetrics,
        user_metrics::LegacyHashCollector,
    },
    ready::ReadyFlag,
    users::Users,
};

/// The registry of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc: RpcMetrics,
}

impl Metrics {
    /// Registers every metric of the server over `db` and its readiness.
    pub fn new(db: &Db, ready: ReadyFlag) -> Self {
        let mut registry = Registry::default();
        let rpc = RpcMetrics::default();
        rpc.register(&mut registry);
        db.metrics().register(&mut registry);
        registry.register(
            "produto_build",
            "Version and git commit of the running binary",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_commit", env!("PRODUTO_GIT_COMMIT")),
            ]),
        );
        registry.register_collector(Box::new(PoolCollector {
            db: db.clone(),
            ready,
        }));
        registry.register_collector(Box::new(ServersCollector { db: db.clone() }));
        Metrics { registry, rpc }
    }

    /// Adds the users feature's figures (the users on legacy hashes).
    pub fn with_users(mut self, users: &Users) -> Self {
        self.registry
            .register_collector(Box::new(LegacyHashCollector {
                users: users.clone(),
            }));
        self
    }

    /// Adds the login feature's figures (throttled logins, passwords verified, attempts
    /// counted in memory).
    pub fn with_login(mut self, counters: &Arc<LoginCounters>) -> Self {
        self.registry.register_collector(Box::new(LoginCollector {
            counters: counters.clone(),
        }));
        self
    }

    /// The recorder the RPC middleware writes to.
    pub fn rpc(&self) -> RpcMetrics {
        self.rpc.clone()
    }

    /// The OpenMetrics text exposition of every metric (served as
    /// `produto_client::admin::METRICS_CONTENT_TYPE`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
