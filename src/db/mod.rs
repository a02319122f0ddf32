//! The shared connection pools (the primary's, and one per read replica, see [`replicas`]):
//! building them for PostgreSQL or SQLite, migrations, pool figures, and the background
//! probe of every server that drives readiness and routing. Every statement runs through
//! [`Db::run`] (`db/query.rs`): acquire, time, classify, retry a read once.
//!
//! The two backends are native sqlx pools behind one enum, so that each gets its own
//! driver's full speed (and PostgreSQL its arrays); a feature writes its SQL once (see
//! [`Conn`] and `per_backend!`). `db` is the storage engine and knows no feature: the
//! features (`users`, `login`) own their SQL and call [`Db::run`].
//!
//! Here the handle ([`Db`]), migrations and the figures; beside it building the pools
//! (`db/connect.rs`), the probe (`db/probe.rs`), the settings, the query path, the
//! replicas' routing, libpq's connection strings (`db/url.rs`) and which hosts take writes
//! or reads (`db/hosts.rs`), the budget and the pool's figures.

pub mod budget;
mod connect;
pub mod diagnose;
mod hosts;
pub mod metrics;
mod named;
mod probe;
pub(crate) mod query;
pub mod replicas;
mod settings;
mod stats;
pub(crate) mod traces;
pub mod url;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use sqlx::migrate::Migrator;

pub use diagnose::Diagnosis;
pub use hosts::check_urls;
pub use named::Query;
pub use probe::ProbeConnection;
pub use query::{Conn, Statement};
pub use replicas::{Access, Backend, Role, Server, Servers};
pub use settings::{DbFlags, DbSettings, default_duration, is_postgres_url};
pub use stats::{PoolSnapshot, PoolStats};

use crate::Error;
use connect::{Scope, pg_bounds_sql, postgres_server, sqlite_server};
use metrics::DbMetrics;

static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The shared database handle: the servers with their pools and figures, and the bounds
/// every wait obeys.
#[derive(Clone, Debug)]
pub struct Db {
    servers: Arc<Servers>,
    migrated: Arc<AtomicBool>,
    metrics: DbMetrics,
    acquire_timeout: Duration,
    query_timeout: Duration,
    /// Statements slower than this are logged.
    slow_query: Duration,
    /// PostgreSQL behind PgBouncer in transaction pooling
    /// (`PRODUTO_PGBOUNCER_TRANSACTION_POOLING`): see [`Db::named_statements`].
    transaction_pooling: bool,
    /// The `BEGIN` of each statement's transaction under transaction pooling, with the
    /// server-side bounds set for that transaction only (see [`pg_bounds_sql`]).
    bounded_begin: Arc<str>,
    /// `PRODUTO_BATCH_NIVEL`'s lanes when lookups may be batched (see [`Db::nivel_batch`]).
    batch_lanes: Option<usize>,
}

impl Db {
    /// Builds the pool without connecting (a database that is down at start is waited for,
    /// not fatal); only a malformed URL fails here.
    pub fn new(config: &DbSettings) -> Result<Self, Error> {
        let url = config.url.as_str();
        if !config.replica_urls.is_empty() && !is_postgres_url(url) {
            return Err(Error::Startup(
                "read replicas need a PostgreSQL DATABASE_URL".into(),
            ));
        }
        let bounds = (config.min_connections, config.max_connections);
        let mut servers = if is_postgres_url(url) {
            postgres_servers(config, url, 0, bounds)?
        } else if url.starts_with("sqlite:") {
            vec![sqlite_server(config, url, bounds)?]
        } else {
            return Err(Error::Startup(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            ));
        };
        let replica_bounds = (
            config
                .replica_min_connections
                .unwrap_or(config.min_connections),
            config
                .replica_max_connections
                .unwrap_or(config.max_connections),
        );
        for (n, url) in (1..).zip(&config.replica_urls) {
            servers.extend(postgres_servers(config, url, n, replica_bounds)?);
        }
        // The same host may be listed in DATABASE_URL and in a replica URL (the multi-host
        // forms often are): each pool keeps a name of its own in PoolStatus, /metrics and
        // /health.
        let mut seen = std::collections::HashSet::new();
        for server in &mut servers {
            if !seen.insert(server.address.clone()) {
                server.address = match server.candidacy.url {
                    0 => format!("{} (DATABASE_URL)", server.address),
                    n => format!("{} (replica URL {n})", server.address),
                };
            }
        }
        Ok(Db {
            servers: Arc::new(Servers::new(servers, config.replica_max_lag)),
            migrated: Arc::new(AtomicBool::new(false)),
            metrics: DbMetrics::default(),
            acquire_timeout: config.acquire_timeout,
            query_timeout: config.query_timeout,
            slow_query: config.slow_query_threshold,
            transaction_pooling: config.pgbouncer_transaction_pooling && is_postgres_url(url),
            bounded_begin: format!(
                "BEGIN; {}",
                pg_bounds_sql(config.query_timeout, Scope::Transaction)
            )
            .into(),
            batch_lanes: config.batch_nivel.then_some(config.batch_nivel_lanes),
        })
    }

    /// The servers: the primary and the replicas, with their pools and what the probe saw.
    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// The primary's pool.
    pub fn backend(&self) -> &Backend {
        &self.servers.primary().backend
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Whether statements may be prepared under a name and cached on their connection
    /// (sqlx's `persistent`). Not behind PgBouncer's transaction pooling: there every
    /// statement is unnamed and runs inside an explicit transaction (see
    /// [`Db::in_transaction`]), because the parse and the execution are two protocol
    /// round trips that, outside a transaction, may land on two different server connections.
    pub fn named_statements(&self) -> bool {
        !self.transaction_pooling
    }

    /// Whether each statement must run inside an explicit transaction (transaction pooling).
    pub fn in_transaction(&self) -> bool {
        self.transaction_pooling
    }

    /// The statement that opens such a transaction: `BEGIN` and the server-side bounds of
    /// the query timeout for this transaction only (`SET LOCAL`), sent as one simple query
    /// (no extra round trip). Under transaction pooling a session's `SET` would land on
    /// whichever server connection PgBouncer lent, stay there for its other clients, and be
    /// missing (or another client's) on the connection our next transaction gets.
    fn bounded_begin(&self) -> sqlx::AssertSqlSafe<Arc<str>> {
        sqlx::AssertSqlSafe(self.bounded_begin.clone())
    }

    /// How many batched lookup queries may be in flight at once on each PostgreSQL server,
    /// when `PRODUTO_BATCH_NIVEL` is on (`users::Levels` batches ObterNivel within it);
    /// `None` when lookups are not batched, and always on SQLite (no arrays to batch with).
    pub fn nivel_batch(&self) -> Option<usize> {
        match self.backend() {
            Backend::Postgres(_) => self.batch_lanes,
            Backend::Sqlite(_) => None,
        }
    }

    /// The figures of `DATABASE_URL`'s pool, which also hold the instance's connection
    /// budget (see [`budget`]).
    pub fn stats(&self) -> &PoolStats {
        &self.servers.get(0).stats
    }

    /// The query and acquire-wait histograms, for the metrics registry.
    pub fn metrics(&self) -> &DbMetrics {
        &self.metrics
    }

    /// With several write candidates and no writable primary known yet, one probe finds
    /// which is the primary (bounded: the probe's own timeouts), so that the schema is not
    /// asked of a standby or a dead host.
    pub async fn find_primary(&self) {
        if self.servers.follows_primary() && !self.servers.primary_writable() {
            self.probe(&mut ProbeConnection::default()).await;
        }
    }

    /// Applies the embedded migrations, on the primary (found first among several hosts:
    /// [`Db::find_primary`]). On PostgreSQL sqlx holds an advisory lock while it migrates,
    /// so several instances starting at once are safe; SQLite locks the file.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        self.find_primary().await;
        match self.backend() {
            Backend::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        self.migrated.store(true, Relaxed);
        Ok(())
    }

    /// Whether the schema is in place (migrations ran in this process, or
    /// [`Db::check_migrated`] found them applied).
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Relaxed)
    }

    /// For a server started without migrating: marks the schema in place once every
    /// migration embedded in this binary is recorded as applied in the database (so a
    /// schema that is absent or older than this binary keeps the server not ready).
    pub async fn check_migrated(&self) -> Result<(), String> {
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
        self.find_primary().await;
        // Inside a transaction: the one statement must survive transaction pooling.
        let named = self.named_statements();
        let (applied, migrator) = match self.backend() {
            Backend::Postgres(pool) => (
                async {
                    let mut tx = pool.begin_with(self.bounded_begin()).await?;
                    let versions = sqlx::query_scalar::<_, i64>(APPLIED)
                        .persistent(named)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(versions)
                }
                .await,
                &PG_MIGRATOR,
            ),
            Backend::Sqlite(pool) => (
                sqlx::query_scalar::<_, i64>(APPLIED).fetch_all(pool).await,
                &SQLITE_MIGRATOR,
            ),
        };
        let applied = applied.map_err(|e| {
            format!(
                "cannot read the applied migrations: {}",
                diagnose::describe(&e)
            )
        })?;
        let missing: Vec<i64> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect();
        if !missing.is_empty() {
            return Err(format!("migrations not applied yet: {missing:?}"));
        }
        self.migrated.store(true, Relaxed);
        Ok(())
    }

    /// Live figures of the primary's pool, from memory.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.server_snapshot(self.servers.primary_index())
    }

    /// Live figures of server `index`'s pool, from memory.
    pub fn server_snapshot(&self, index: usize) -> PoolSnapshot {
        let server = self.servers.get(index);
        let (size, idle, closed, backend) = match &server.backend {
            Backend::Postgres(p) => (p.size(), p.num_idle(), p.is_closed(), "postgres"),
            Backend::Sqlite(p) => (p.size(), p.num_idle(), p.is_closed(), "sqlite"),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        server.stats.snapshot(
            closed,
            (server.min_connections, server.max_connections),
            (size, idle),
            backend,
        )
    }

    /// Every server as PoolStatus, `/metrics` and `/health` show it: `DATABASE_URL` first,
    /// then the replicas in their configured order.
    pub fn server_views(&self) -> Vec<ServerView> {
        let servers = self.servers();
        (0..servers.all().len())
            .map(|index| {
                let server = servers.get(index);
                ServerView {
                    role: servers.role(index),
                    address: server.address.clone(),
                    readable: servers.readable(index),
                    lag: server.lag(),
                    reads_total: server.reads(),
                    pool: self.server_snapshot(index),
                }
            })
            .collect()
    }

    /// Closes the pools: waits (bounded) for checked-out connections to come back, then
    /// closes every connection.
    pub async fn close(&self, within: Duration) {
        let closing = futures_util::future::join_all(self.servers.all().iter().map(|s| async {
            match &s.backend {
                Backend::Postgres(p) => p.close().await,
                Backend::Sqlite(p) => p.close().await,
            }
        }));
        if tokio::time::timeout(within, closing).await.is_err() {
            tracing::warn!(?within, "pool did not close in time; connections dropped");
        }
    }
}

/// The servers of PostgreSQL URL number `n` (0: `DATABASE_URL`, then the replica URLs):
/// one per host, each with what the configuration lets it be (see [`hosts`]).
fn postgres_servers(
    config: &DbSettings,
    url: &str,
    n: usize,
    bounds: (u32, u32),
) -> Result<Vec<Server>, Error> {
    let setting = match n {
        0 => "DATABASE_URL".to_owned(),
        n => format!("PRODUTO_REPLICA_URLS entry {n}"),
    };
    let conn =
        url::ConnString::parse(url).map_err(|e| Error::Startup(format!("{setting}: {e}")))?;
    let candidacies = match n {
        0 => hosts::primary_hosts(&conn),
        n => hosts::replica_hosts(&conn, n, config.replica_failover),
    }
    .map_err(|e| Error::Startup(format!("{setting}: {e}")))?;
    (0..conn.hosts.len())
        .zip(candidacies)
        .map(|(i, candidacy)| {
            let server =
                postgres_server(config, &conn.host_url(i), &setting, bounds, candidacy.attrs)?;
            Ok(server.with_candidacy(candidacy))
        })
        .collect()
}

/// One server's state, for the operator.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub role: Role,
    /// `host:port/database`, without credentials.
    pub address: String,
    /// Whether reads go to it now (a replica that is reachable, in recovery and fresh).
    pub readable: bool,
    /// Replay lag at the last probe (`None`: unknown or unreachable; 0 on a primary).
    pub lag: Option<Duration>,
    /// Reads routed to it since start.
    pub reads_total: u64,
    /// Its pool's figures (`healthy`: reachable at the last probe).
    pub pool: PoolSnapshot,
}
