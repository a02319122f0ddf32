//! Per-server pool figures for `/metrics`: one series per database server, labelled with
//! its address (`pool`, without credentials) and its role now. The unlabelled
//! `produto_db_pool_*` series keep describing the primary, as before replicas.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::db::{Db, ServerView};

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
