//! The background probe's side of the pools: one probe of every server at once, each on a
//! connection of its own (kept between probes, reopened after a failure) and bounded, whose
//! readings drive readiness and the routing of reads (see [`super::replicas`]).

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use sqlx::{Connection, Database, Executor, Pool};

use super::{
    Backend, Db, Server,
    connect::{PING_TIMEOUT, bound_pg_session},
    replicas::{self, Reading},
};

impl Db {
    /// One probe of every server, at once, each on its own connection (opened if needed)
    /// and bounded; then the primary is elected (see [`replicas`]). Kept apart from the pools
    /// so that a saturated pool is not mistaken for a dead database. True when the service
    /// can serve its RPCs: some server is reachable.
    pub async fn probe(&self, slots: &mut ProbeConnection) -> bool {
        let servers = self.servers.all();
        slots.0.resize_with(servers.len(), || ProbeSlot::Unset);
        let session_bounds = !self.transaction_pooling;
        let readings = futures_util::future::join_all(
            servers
                .iter()
                .zip(slots.0.iter_mut())
                .map(|(server, slot)| probe_server(server, slot, session_bounds)),
        )
        .await;
        for (index, reading) in readings.into_iter().enumerate() {
            self.servers.record_probe(index, reading);
        }
        self.servers.elect_primary();
        servers.iter().any(Server::reachable)
    }
}

/// Probes one server and records its latency and time; `None` when it is unreachable.
/// With `session_bounds` its connection is bounded on the server too (not behind
/// transaction pooling, where the bounds would outlive the probe: see [`Db::bounded_begin`](super::Db::bounded_begin);
/// there `PING_TIMEOUT` on our side bounds it, and the probe's query waits on no lock).
async fn probe_server(
    server: &Server,
    slot: &mut ProbeSlot,
    session_bounds: bool,
) -> Option<Reading> {
    let started = Instant::now();
    if !matches!(
        (&server.backend, &*slot),
        (Backend::Postgres(_), ProbeSlot::Postgres(_)) | (Backend::Sqlite(_), ProbeSlot::Sqlite(_))
    ) {
        *slot = match server.backend {
            Backend::Postgres(_) => ProbeSlot::Postgres(None),
            Backend::Sqlite(_) => ProbeSlot::Sqlite(None),
        };
    }
    let reading = match (&server.backend, slot) {
        (Backend::Postgres(pool), ProbeSlot::Postgres(conn)) => {
            let reading = probe_on(
                pool,
                conn,
                |c| {
                    if session_bounds {
                        bound_pg_session(c, PING_TIMEOUT)
                    } else {
                        Box::pin(async { Ok(()) })
                    }
                },
                |c| {
                    Box::pin(async move {
                        let (in_recovery, lag_ms): (bool, Option<f64>) =
                            sqlx::query_as(replicas::PG_PROBE_SQL).fetch_one(c).await?;
                        Ok(Reading {
                            in_recovery,
                            lag: lag_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
                        })
                    })
                },
            )
            .await;
            // A read target found out of recovery: behind a load-balanced read endpoint the
            // probe's connection may sit on a node promoted since; the next probe reconnects
            // and lands where the endpoint routes now.
            if reading.is_some_and(|r| !r.in_recovery) && !server.candidacy.writes {
                *conn = None;
            }
            reading
        }
        (Backend::Sqlite(pool), ProbeSlot::Sqlite(conn)) => {
            probe_on(
                pool,
                conn,
                |_| Box::pin(async { Ok(()) }),
                |c| {
                    Box::pin(async move {
                        c.execute("SELECT 1").await?;
                        Ok(Reading {
                            in_recovery: false,
                            lag: Some(Duration::ZERO),
                        })
                    })
                },
            )
            .await
        }
        _ => None,
    };
    let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    server.stats.probe_latency_us.store(latency, Relaxed);
    server.stats.probe_unix_ms.store(now_ms, Relaxed);
    reading
}

/// The probe's own connections, one per server, kept between probes and reopened after a
/// failure.
#[derive(Debug, Default)]
pub struct ProbeConnection(Vec<ProbeSlot>);

#[derive(Debug, Default)]
enum ProbeSlot {
    #[default]
    Unset,
    Postgres(Option<sqlx::PgConnection>),
    Sqlite(Option<sqlx::SqliteConnection>),
}

async fn probe_on<DB: Database>(
    pool: &Pool<DB>,
    slot: &mut Option<DB::Connection>,
    setup: impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<(), sqlx::Error>>,
    ask: impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<Reading, sqlx::Error>>,
) -> Option<Reading> {
    if slot.is_none() {
        let options = pool.connect_options();
        let connect = async {
            let mut conn = DB::Connection::connect_with(&options).await?;
            setup(&mut conn).await?;
            Ok::<_, sqlx::Error>(conn)
        };
        match tokio::time::timeout(PING_TIMEOUT, connect).await {
            Ok(Ok(conn)) => *slot = Some(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "probe could not connect");
                return None;
            }
            Err(_) => return None,
        }
    }
    let conn = slot.as_mut()?;
    match tokio::time::timeout(PING_TIMEOUT, ask(conn)).await {
        Ok(Ok(reading)) => Some(reading),
        _ => {
            // Broken or half-open: forget it (dropping closes the socket) and reconnect next time.
            *slot = None;
            None
        }
    }
}
