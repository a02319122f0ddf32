//! The shared connection pools (the primary's, and one per read replica, see [`replicas`]):
//! building them for PostgreSQL or SQLite, migrations, pool figures, and the background
//! probe of every server that drives readiness and routing. Every statement runs through
//! [`Db::run`] (`db/query.rs`): acquire, time, classify, retry a read once.
//!
//! The two backends are native sqlx pools behind one enum, so that each gets its own
//! driver's full speed (and PostgreSQL its arrays); the queries in [`users`] are written once
//! (see [`Conn`]).

pub mod batch;
pub mod budget;
pub mod metrics;
mod query;
pub mod replicas;
mod settings;
mod stats;
pub mod users;

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use sqlx::{
    Connection, Database, Executor, Pool,
    migrate::Migrator,
    pool::{PoolConnectionMetadata, PoolOptions},
    postgres::{PgConnectOptions, Postgres},
    sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

pub use batch::NivelBatcher;
pub use query::{Conn, Statement};
pub use replicas::{Access, Role, Server, Servers};
pub use settings::{DbFlags, DbSettings, is_postgres_url};
pub use stats::{LegacyHashCounts, PoolSnapshot, PoolStats};

use crate::Error;
use metrics::DbMetrics;
use replicas::Reading;

static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A connection idle longer than this is pinged before it is handed out; younger ones are
/// trusted, unless a connection was found dead while they sat idle (then they may have died
/// with it, as when the database restarts or the network drops every connection at once).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(2);
/// Bound on that ping and on each probe: a half-open connection must not stall a caller.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool of one backend.
#[derive(Clone, Debug)]
pub enum Backend {
    Postgres(Pool<Postgres>),
    Sqlite(Pool<Sqlite>),
}

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
        let primary = if is_postgres_url(url) {
            postgres_server(config, url, "DATABASE_URL", bounds)?
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| {
                    Error::Startup(format!("DATABASE_URL is not a valid SQLite URL: {e}"))
                })?
                .create_if_missing(true)
                // WAL lets readers run beside the writer; busy_timeout makes writers queue
                // instead of failing with SQLITE_BUSY.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(config.query_timeout);
            let stats = Arc::new(PoolStats::default());
            let opened = stats.clone();
            let pool = pool_options::<Sqlite>(config, bounds, &stats)
                .after_connect(move |_conn, _meta| {
                    opened.opened.fetch_add(1, Relaxed);
                    Box::pin(async { Ok(()) })
                })
                .connect_lazy_with(options);
            Server::new(Backend::Sqlite(pool), url.to_owned(), bounds, stats, None)
        } else {
            return Err(Error::Startup(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            ));
        };
        let mut servers = vec![primary];
        let replica_bounds = (
            config
                .replica_min_connections
                .unwrap_or(config.min_connections),
            config
                .replica_max_connections
                .unwrap_or(config.max_connections),
        );
        for (n, url) in (1..).zip(&config.replica_urls) {
            let name = format!("PRODUTO_REPLICA_URLS entry {n}");
            servers.push(postgres_server(config, url, &name, replica_bounds)?);
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

    /// The primary's ObterNivel batcher, when lookups are batched.
    pub fn nivel_batch(&self) -> Option<&Arc<NivelBatcher>> {
        self.servers.primary().nivel_batch.as_ref()
    }

    /// The figures of `DATABASE_URL`'s pool, which also hold the service-wide counters
    /// (throttled logins).
    pub fn stats(&self) -> &PoolStats {
        &self.servers.get(0).stats
    }

    /// The query and acquire-wait histograms, for the metrics registry.
    pub fn metrics(&self) -> &DbMetrics {
        &self.metrics
    }

    /// Applies the embedded migrations. On PostgreSQL sqlx holds an advisory lock while it
    /// migrates, so several instances starting at once are safe; SQLite locks the file.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
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
        let applied = applied.map_err(|e| format!("cannot read the applied migrations: {e}"))?;
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

    /// Live figures of the primary's pool, from memory (the throttled-login count is the
    /// service's, whichever server is the primary).
    pub fn snapshot(&self) -> PoolSnapshot {
        let mut snapshot = self.server_snapshot(self.servers.primary_index());
        let service = self.stats();
        snapshot.logins_throttled_total = service.logins_throttled.load(Relaxed);
        snapshot.logins_counted_in_memory_total = service.logins_counted_in_memory.load(Relaxed);
        snapshot.throttle_in_memory = service.throttle_in_memory.load(Relaxed);
        snapshot
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
/// transaction pooling, where the bounds would outlive the probe: see [`Db::bounded_begin`];
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
            probe_on(
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
            .await
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

/// Bounds every statement of a PostgreSQL session on the server itself (see
/// [`pg_bounds_sql`]). `SET` statements after connecting rather than the startup `options`
/// parameter, which PgBouncer refuses. Not behind transaction pooling: there each
/// transaction sets them for itself ([`Db::bounded_begin`]).
fn bound_pg_session(
    conn: &mut sqlx::PgConnection,
    query_timeout: Duration,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    let sql = pg_bounds_sql(query_timeout, Scope::Session);
    Box::pin(async move {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(conn)
            .await
            .map(|_| ())
    })
}

/// How long a server-side bound lasts: the session, or the current transaction.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Session,
    Transaction,
}

/// The `SET`s that bound statements on the server itself, so that a statement our side has
/// given up on does not keep running (and holding a backend) after its connection is gone:
/// `statement_timeout` at the query timeout, `lock_timeout` likewise (a lock wait says so in
/// its own SQLSTATE), and `idle_in_transaction_session_timeout` at twice it (a transaction
/// left open ends its session instead of holding its locks).
fn pg_bounds_sql(query_timeout: Duration, scope: Scope) -> String {
    let ms = query_timeout.as_millis().max(1);
    let idle_ms = ms.saturating_mul(2);
    let set = match scope {
        Scope::Session => "SET",
        Scope::Transaction => "SET LOCAL",
    };
    // Only integers are formatted into the statement.
    format!(
        "{set} statement_timeout = {ms}; {set} lock_timeout = {ms}; \
         {set} idle_in_transaction_session_timeout = {idle_ms}"
    )
}

/// Pool settings shared by both backends, with the hook that finds dead connections (each
/// backend adds its own `after_connect`, which counts the connection and sets it up).
fn pool_options<DB: Database>(
    config: &DbSettings,
    (min, max): (u32, u32),
    stats: &Arc<PoolStats>,
) -> PoolOptions<DB> {
    let lost = stats.clone();
    PoolOptions::<DB>::new()
        .min_connections(min)
        .max_connections(max)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        // Pinging on every acquire costs a round trip per query; ping only connections that
        // sat idle long enough to have been cut (see before_acquire).
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| ping_if_idle::<DB>(conn, meta, lost.clone()))
}

fn ping_if_idle<DB: Database>(
    conn: &mut DB::Connection,
    meta: PoolConnectionMetadata,
    stats: Arc<PoolStats>,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for < PING_IF_IDLE_FOR && !stats.idle_since_last_loss(meta.idle_for) {
            return Ok(true);
        }
        match tokio::time::timeout(PING_TIMEOUT, conn.ping()).await {
            Ok(Ok(())) => Ok(true),
            outcome => {
                stats.record_lost();
                tracing::info!(
                    idle_for = ?meta.idle_for,
                    timed_out = outcome.is_err(),
                    "idle connection found dead; replacing it"
                );
                Ok(false)
            }
        }
    })
}

/// A PostgreSQL server's pool (built lazily), its figures and, with batching on, its
/// ObterNivel batcher. `setting` names the URL's origin in errors.
fn postgres_server(
    config: &DbSettings,
    url: &str,
    setting: &str,
    bounds: (u32, u32),
) -> Result<Server, Error> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Startup(format!("{setting} is not a valid PostgreSQL URL: {e}")))?
        .application_name("produto")
        // sqlx sends `extra_float_digits` at startup by default; PgBouncer refuses every
        // connection that carries a parameter it does not know unless told to ignore it. No
        // column here is a float, and PostgreSQL 12+ sends floats exactly anyway: do not send it.
        .extra_float_digits(None);
    // Transaction pooling hands each transaction any server connection: a statement named on
    // one is missing (or taken) on the next, so nothing is cached.
    let options = if config.pgbouncer_transaction_pooling {
        options.statement_cache_capacity(0)
    } else {
        options
    };
    let address = replicas::address_of(&options);
    let stats = Arc::new(PoolStats::default());
    let batch = config
        .batch_nivel
        .then(|| Arc::new(NivelBatcher::new(config.batch_nivel_lanes)));
    let query_timeout = config.query_timeout;
    let session_bounds = !config.pgbouncer_transaction_pooling;
    let opened = stats.clone();
    let pool = pool_options::<Postgres>(config, bounds, &stats)
        .after_connect(move |conn, _meta| {
            opened.opened.fetch_add(1, Relaxed);
            if session_bounds {
                bound_pg_session(conn, query_timeout)
            } else {
                Box::pin(async { Ok(()) })
            }
        })
        .connect_lazy_with(options);
    let backend = Backend::Postgres(pool);
    Ok(Server::new(backend, address, bounds, stats, batch))
}
