//! What the database layer records: query latency by name and the wait for a connection.
//!
//! The histograms live here, below the metrics registry, so that the pool records into them
//! without knowing the registry; [`crate::ops::metrics`] registers them.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Latency buckets in seconds, 0.5 ms to 10 s: cached lookups sit at the bottom, argon2
/// logins around tens of milliseconds, timeouts at the top. Every latency histogram of the
/// server uses them.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A histogram over [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The labels of one named query.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub query: &'static str,
}

/// A family of latency histograms.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The database layer's histograms.
#[derive(Debug, Clone)]
pub struct DbMetrics {
    query_duration: HistogramFamily<QueryLabels>,
    acquire_wait: Histogram,
}

impl Default for DbMetrics {
    fn default() -> Self {
        DbMetrics {
            query_duration: Family::new_with_constructor(latency_histogram),
            acquire_wait: latency_histogram(),
        }
    }
}

impl DbMetrics {
    pub fn observe_query(&self, query: &'static str, took: Duration) {
        self.query_duration
            .get_or_create(&QueryLabels { query })
            .observe(took.as_secs_f64());
    }

    pub fn observe_acquire_wait(&self, took: Duration) {
        self.acquire_wait.observe(took.as_secs_f64());
    }

    /// Adds the histograms to a server's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "produto_db_query_duration",
            "Time a named SQL statement took (acquire wait excluded)",
            Unit::Seconds,
            self.query_duration.clone(),
        );
        registry.register_with_unit(
            "produto_db_pool_acquire_wait",
            "Time spent waiting for a pool connection",
            Unit::Seconds,
            self.acquire_wait.clone(),
        );
    }
}
