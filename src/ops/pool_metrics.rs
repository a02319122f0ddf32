//! The database's figures for `/metrics`, read at scrape time rather than counted twice:
//! [`PoolCollector`] (the unlabelled `produto_db_pool_*` series of the primary, readiness,
//! the connection budget) and [`ServersCollector`] (one series per database server, labelled
//! with its address (`pool`, without credentials) and its role now).

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::{
    db::{Db, ServerView},
    ready::ReadyFlag,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    pool: String,
    role: String,
}

/// Reads every server's figures at scrape time.
#[derive(Debug)]
pub struct ServersCollector {
    pub db: Db,
}

/// A gauge of one server.
type Figure = fn(&ServerView) -> f64;
/// A counter of one server.
type Count = fn(&ServerView) -> u64;

const GAUGES: [(&str, &str, Figure); 6] = [
    (
        "produto_db_server_up",
        "1 if the last probe reached this database server",
        |v| f64::from(u8::from(v.pool.healthy)),
    ),
    (
        "produto_db_server_readable",
        "1 while reads are routed to this replica (reachable, in recovery, within the lag bound)",
        |v| f64::from(u8::from(v.readable)),
    ),
    (
        "produto_db_server_connections_open",
        "Connections this server's pool holds, idle or in use",
        |v| f64::from(v.pool.pool_size),
    ),
    (
        "produto_db_server_connections_idle",
        "Idle connections in this server's pool",
        |v| f64::from(v.pool.idle_connections),
    ),
    (
        "produto_db_server_connections_in_use",
        "Connections of this server's pool checked out by callers",
        |v| f64::from(v.pool.used_connections),
    ),
    (
        "produto_db_server_requests_waiting",
        "Callers waiting for a connection of this server's pool",
        |v| f64::from(v.pool.requests_waiting),
    ),
];

const COUNTERS: [(&str, &str, Count); 3] = [
    (
        "produto_db_server_reads",
        "Read queries routed to this server",
        |v| v.reads_total,
    ),
    (
        "produto_db_server_acquires",
        "Connection acquire attempts on this server's pool",
        |v| v.pool.acquires_total,
    ),
    (
        "produto_db_server_acquire_timeouts",
        "Acquire attempts on this server's pool that found no connection in time",
        |v| v.pool.acquire_timeouts_total,
    ),
];

impl Collector for ServersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let views = self.db.server_views();
        let labels: Vec<ServerLabels> = views
            .iter()
            .map(|v| ServerLabels {
                pool: v.address.clone(),
                role: v.role.as_str().to_owned(),
            })
            .collect();
        for (name, help, figure) in GAUGES {
            let gauge = ConstGauge::new(0.0);
            let mut family =
                encoder.encode_descriptor(name, &format!("{help}."), None, gauge.metric_type())?;
            for (view, labels) in views.iter().zip(&labels) {
                ConstGauge::new(figure(view)).encode(family.encode_family(labels)?)?;
            }
        }
        let lag = ConstGauge::new(0.0);
        let mut family = encoder.encode_descriptor(
            "produto_db_server_replay_lag",
            "Replay lag of this server at the last probe (-1: unknown or unreachable; 0 on the primary).",
            Some(&Unit::Seconds),
            lag.metric_type(),
        )?;
        for (view, labels) in views.iter().zip(&labels) {
            let seconds = view.lag.map_or(-1.0, |l| l.as_secs_f64());
            ConstGauge::new(seconds).encode(family.encode_family(labels)?)?;
        }
        for (name, help, figure) in COUNTERS {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                name,
                &format!("{help}."),
                None,
                counter.metric_type(),
            )?;
            for (view, labels) in views.iter().zip(&labels) {
                ConstCounter::new(figure(view)).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Reads the pool's figures and readiness at scrape time.
#[derive(Debug)]
pub struct PoolCollector {
    pub db: Db,
    pub ready: ReadyFlag,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.db.snapshot();
        let gauges: [(&str, &str, i64); 9] = [
            (
                "produto_db_pool_connections_open",
                "Connections the pool holds, idle or in use",
                s.pool_size.into(),
            ),
            (
                "produto_db_pool_connections_idle",
                "Idle connections in the pool",
                s.idle_connections.into(),
            ),
            (
                "produto_db_pool_connections_in_use",
                "Connections checked out by callers",
                s.used_connections.into(),
            ),
            (
                "produto_db_pool_requests_waiting",
                "Callers waiting for a connection",
                s.requests_waiting.into(),
            ),
            (
                "produto_db_pool_connections_min",
                "Configured minimum of open connections",
                s.min_connections.into(),
            ),
            (
                "produto_db_pool_connections_max",
                "Configured maximum of open connections",
                s.max_connections.into(),
            ),
            (
                "produto_db_up",
                "1 if the last database probe succeeded",
                s.healthy.into(),
            ),
            (
                "produto_db_schema_migrated",
                "1 once every migration this binary knows is applied",
                self.db.is_migrated().into(),
            ),
            (
                "produto_ready",
                "1 while the server is ready (same source as gRPC health and /readyz)",
                self.ready.get().into(),
            ),
        ];
        // The connection budget, once read at start (PostgreSQL only).
        let budget = self.db.budget().map(|(max, available, needed)| {
            [
                (
                    "produto_db_connection_budget_ok",
                    "1 if PostgreSQL had room for this instance's largest pool at start",
                    i64::from(needed <= available),
                ),
                (
                    "produto_db_max_connections",
                    "PostgreSQL's max_connections, read at start",
                    i64::from(max),
                ),
                (
                    "produto_db_connections_available",
                    "Connections ordinary roles had left at start, besides this instance's pool",
                    i64::from(available),
                ),
            ]
        });
        for (name, help, value) in gauges.into_iter().chain(budget.into_iter().flatten()) {
            encode_one(&mut encoder, name, help, None, ConstGauge::new(value))?;
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "produto_db_pool_acquires",
                "Connection acquire attempts",
                s.acquires_total,
            ),
            (
                "produto_db_pool_acquire_timeouts",
                "Acquire attempts that found no connection in time",
                s.acquire_timeouts_total,
            ),
            (
                "produto_db_pool_acquire_errors",
                "Acquire attempts that failed otherwise (e.g. could not connect)",
                s.acquire_errors_total,
            ),
            (
                "produto_db_pool_connections_opened",
                "Connections opened",
                s.connections_opened_total,
            ),
            (
                "produto_db_pool_connections_lost",
                "Connections found broken or discarded mid-statement",
                s.connections_lost_total,
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        let seconds = [
            (
                "produto_db_probe_duration",
                "Round trip of the last database probe",
                s.last_probe_latency_us as f64 / 1e6,
            ),
            (
                "produto_db_probe_last_timestamp",
                "When the last database probe ran (Unix time)",
                s.last_probe_unix_ms as f64 / 1e3,
            ),
        ];
        for (name, help, value) in seconds {
            encode_one(
                &mut encoder,
                name,
                help,
                Some(&Unit::Seconds),
                ConstGauge::new(value),
            )?;
        }
        Ok(())
    }
}

/// Encodes counters read at scrape time, each `(name, help, value)`.
pub(super) fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), fmt::Error> {
    for &(name, help, value) in counters {
        encode_one(encoder, name, help, None, ConstCounter::new(value))?;
    }
    Ok(())
}

/// Encodes one metric read at scrape time, its help text ending in a full stop.
pub(super) fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> Result<(), fmt::Error> {
    metric.encode(encoder.encode_descriptor(
        name,
        &format!("{help}."),
        unit,
        metric.metric_type(),
    )?)
}
