//! The one shared connection pool: building it for PostgreSQL or SQLite, migrations,
//! the counted and bounded acquire, the timed and named statements (latency histogram and
//! slow-query log), and the background probe that drives readiness.
//!
//! The two backends are native sqlx pools behind one enum, so that each gets its own
//! driver's full speed (and PostgreSQL its arrays); the queries in [`users`] are written once.

pub mod batch;
pub mod budget;
pub mod metrics;
mod stats;
pub mod users;

use std::{
    ops::{Deref, DerefMut},
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
    pool::{PoolConnection, PoolConnectionMetadata, PoolOptions},
    postgres::{PgConnectOptions, Postgres},
    sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

pub use batch::NivelBatcher;
pub use stats::{PoolSnapshot, PoolStats};

use crate::{Error, error::is_connection_error};
use metrics::DbMetrics;
use stats::GaugeGuard;

static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A connection idle longer than this is pinged before it is handed out; younger ones are
/// trusted, unless a connection was found dead while they sat idle (then they may have died
/// with it, as when the database restarts or the network drops every connection at once).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(2);
/// Bound on that ping and on each probe: a half-open connection must not stall a caller.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The query timeout is enforced by PostgreSQL itself (`statement_timeout`, see
/// [`bound_pg_session`]); our own timer waits this much longer (half the query timeout, at
/// most a second), so that when the database is reachable the server's bound fires first:
/// the statement really stops, and the connection comes back clean instead of being
/// discarded while its backend keeps running. Our timer only fires when the server cannot
/// answer at all (a cut or stalled network).
fn client_grace(query_timeout: Duration) -> Duration {
    (query_timeout / 2).min(Duration::from_secs(1))
}
/// While the probe says the database is down, callers wait at most this long for a
/// connection, so an outage answers UNAVAILABLE fast instead of after the full timeout.
const UNHEALTHY_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(250);

/// What the pool needs to know: where the database is, the pool's size and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSettings {
    /// `postgres://...` or `sqlite:path`.
    pub url: String,
    pub min_connections: u32,
    pub max_connections: u32,
    /// Longest wait for a connection.
    pub acquire_timeout: Duration,
    /// Longest time one statement may run.
    pub query_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// Statements slower than this are logged.
    pub slow_query_threshold: Duration,
    /// Batch concurrent ObterNivel lookups (PostgreSQL only).
    pub batch_nivel: bool,
    /// Batched lookup queries in flight at once.
    pub batch_nivel_lanes: usize,
    /// The URL points at PgBouncer in transaction pooling: see [`Db::named_statements`].
    pub pgbouncer_transaction_pooling: bool,
}

impl DbSettings {
    /// The defaults of the flags, over `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DbSettings {
            url: url.into(),
            min_connections: 1,
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
            slow_query_threshold: Duration::from_millis(200),
            batch_nivel: true,
            batch_nivel_lanes: 2,
            pgbouncer_transaction_pooling: false,
        }
    }
}

/// The pool of one backend.
#[derive(Clone, Debug)]
pub enum Backend {
    Postgres(Pool<Postgres>),
    Sqlite(Pool<Sqlite>),
}

/// The shared database handle: the pool, its figures, and the bounds every wait obeys.
#[derive(Clone, Debug)]
pub struct Db {
    backend: Backend,
    stats: Arc<PoolStats>,
    migrated: Arc<AtomicBool>,
    metrics: DbMetrics,
    acquire_timeout: Duration,
    query_timeout: Duration,
    /// Statements slower than this are logged.
    slow_query: Duration,
    min_connections: u32,
    max_connections: u32,
    /// Set when ObterNivel lookups are batched (PostgreSQL with `PRODUTO_BATCH_NIVEL`).
    nivel_batch: Option<Arc<NivelBatcher>>,
    /// PostgreSQL behind PgBouncer in transaction pooling
    /// (`PRODUTO_PGBOUNCER_TRANSACTION_POOLING`): see [`Db::named_statements`].
    transaction_pooling: bool,
}

impl Db {
    /// Builds the pool without connecting (a database that is down at start is waited for,
    /// not fatal); only a malformed URL fails here.
    pub fn new(config: &DbSettings) -> Result<Self, Error> {
        let stats = Arc::new(PoolStats::default());
        let url = config.url.as_str();
        let mut nivel_batch = None;
        let mut transaction_pooling = false;
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| {
                    Error::Startup(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
                })?
                .application_name("produto")
                // sqlx sends `extra_float_digits` at startup by default; PgBouncer refuses
                // every connection that carries a parameter it does not know unless told to
                // ignore it. No column here is a float, and PostgreSQL 12+ sends floats
                // exactly anyway: do not send it.
                .extra_float_digits(None);
            // Transaction pooling hands each transaction any server connection: a statement
            // named on one is missing (or taken) on the next, so nothing is cached.
            let options = if config.pgbouncer_transaction_pooling {
                options.statement_cache_capacity(0)
            } else {
                options
            };
            transaction_pooling = config.pgbouncer_transaction_pooling;
            if config.batch_nivel {
                nivel_batch = Some(Arc::new(NivelBatcher::new(config.batch_nivel_lanes)));
            }
            let query_timeout = config.query_timeout;
            let opened = stats.clone();
            let pool = pool_options::<Postgres>(config, &stats)
                .after_connect(move |conn, _meta| {
                    opened.opened.fetch_add(1, Relaxed);
                    Box::pin(bound_pg_session(conn, query_timeout))
                })
                .connect_lazy_with(options);
            Backend::Postgres(pool)
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
            // No server to bound: a statement runs in this process, and an abandoned one
            // ends with its connection (busy_timeout above bounds the wait for the lock).
            let opened = stats.clone();
            let pool = pool_options::<Sqlite>(config, &stats)
                .after_connect(move |_conn, _meta| {
                    opened.opened.fetch_add(1, Relaxed);
                    Box::pin(async { Ok(()) })
                })
                .connect_lazy_with(options);
            Backend::Sqlite(pool)
        } else {
            return Err(Error::Startup(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            ));
        };
        Ok(Db {
            backend,
            stats,
            migrated: Arc::new(AtomicBool::new(false)),
            metrics: DbMetrics::default(),
            acquire_timeout: config.acquire_timeout,
            query_timeout: config.query_timeout,
            slow_query: config.slow_query_threshold,
            min_connections: config.min_connections,
            max_connections: config.max_connections,
            nivel_batch,
            transaction_pooling,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
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

    /// The ObterNivel batcher, when lookups are batched.
    pub fn nivel_batch(&self) -> Option<&Arc<NivelBatcher>> {
        self.nivel_batch.as_ref()
    }

    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// The query and acquire-wait histograms, for the metrics registry.
    pub fn metrics(&self) -> &DbMetrics {
        &self.metrics
    }

    /// Applies the embedded migrations. On PostgreSQL sqlx holds an advisory lock while it
    /// migrates, so several instances starting at once are safe; SQLite locks the file.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.backend {
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
        let (applied, migrator) = match &self.backend {
            Backend::Postgres(pool) => (
                async {
                    let mut tx = pool.begin().await?;
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

    /// Live figures of the pool, from memory.
    pub fn snapshot(&self) -> PoolSnapshot {
        let (size, idle, closed) = match &self.backend {
            Backend::Postgres(p) => (p.size(), p.num_idle(), p.is_closed()),
            Backend::Sqlite(p) => (p.size(), p.num_idle(), p.is_closed()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        self.stats.snapshot(
            closed,
            (self.min_connections, self.max_connections),
            (size, idle),
            self.backend_name(),
        )
    }

    /// Closes the pool: waits (bounded) for checked-out connections to come back, then
    /// closes every connection.
    pub async fn close(&self, within: Duration) {
        let closing = async {
            match &self.backend {
                Backend::Postgres(p) => p.close().await,
                Backend::Sqlite(p) => p.close().await,
            }
        };
        if tokio::time::timeout(within, closing).await.is_err() {
            tracing::warn!(?within, "pool did not close in time; connections dropped");
        }
    }

    /// Takes a connection, counting the wait, bounded by the acquire timeout (shorter while
    /// the probe says the database is down). The lease gives it back when dropped.
    pub async fn acquire<DB: Database>(&self, pool: &Pool<DB>) -> Result<Lease<DB>, Error> {
        if !self.is_migrated() {
            return Err(Error::Unavailable(
                "schema not migrated yet (starting up)".into(),
            ));
        }
        let healthy = self.stats.healthy();
        let bound = if healthy {
            self.acquire_timeout
        } else {
            self.acquire_timeout.min(UNHEALTHY_ACQUIRE_TIMEOUT)
        };
        let started = Instant::now();
        let result = {
            let _waiting = GaugeGuard::raise(&self.stats.waiting);
            tokio::time::timeout(bound, pool.acquire()).await
        };
        let waited = started.elapsed();
        self.metrics.observe_acquire_wait(waited);
        self.stats
            .record_wait(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
        match result {
            Ok(Ok(conn)) => {
                self.stats.used.fetch_add(1, Relaxed);
                Ok(Lease {
                    conn,
                    stats: self.stats.clone(),
                })
            }
            Err(_) | Ok(Err(sqlx::Error::PoolTimedOut)) => {
                self.stats.acquire_timeouts.fetch_add(1, Relaxed);
                Err(
                    Error::Unavailable(format!("no database connection within {bound:?}"))
                        .while_database_down(!healthy),
                )
            }
            Ok(Err(e)) => {
                self.stats.acquire_errors.fetch_add(1, Relaxed);
                Err(Error::from_sqlx(e).while_database_down(!healthy))
            }
        }
    }

    /// Bounds one statement's future by the query timeout and times it under `name` (the
    /// latency histogram, and a log line when slower than the slow-query threshold). A
    /// statement abandoned by its caller (deadline) is timed too, up to the abandonment.
    pub async fn bounded_as<T>(
        &self,
        name: &'static str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed> {
        let _timer = QueryTimer {
            db: self,
            name,
            started: Instant::now(),
        };
        tokio::time::timeout(self.statement_bound(), query).await
    }

    /// How long our side waits for one statement: on PostgreSQL a little longer than the
    /// server's own bound (see [`client_grace`]); SQLite runs in process, so exactly it.
    fn statement_bound(&self) -> Duration {
        match self.backend {
            Backend::Postgres(_) => self.query_timeout + client_grace(self.query_timeout),
            Backend::Sqlite(_) => self.query_timeout,
        }
    }

    /// Classifies a bounded statement's outcome; a connection that timed out or broke is
    /// closed instead of going back to the pool.
    pub fn classify<DB: Database, T>(
        &self,
        lease: &mut Lease<DB>,
        outcome: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            // PostgreSQL ended the statement at the query timeout: the connection is fine
            // and goes back to the pool; the caller may retry later.
            Ok(Err(e)) if is_server_timeout(&e) => Err(Error::Unavailable(format!(
                "query did not finish within {:?} (ended by the database)",
                self.query_timeout
            ))),
            Ok(Err(e)) if is_connection_error(&e) => {
                lease.discard();
                Err(Error::Unavailable(e.to_string()).while_database_down(!self.stats.healthy()))
            }
            Ok(Err(e)) => Err(Error::Database(e)),
            Err(_) => {
                lease.discard();
                Err(Error::Unavailable(format!(
                    "query did not finish within {:?}",
                    self.query_timeout
                ))
                .while_database_down(!self.stats.healthy()))
            }
        }
    }

    /// One probe: a round trip on the probe's own connection (opened if needed), bounded.
    /// Kept apart from the pool so that a saturated pool is not mistaken for a dead database.
    pub async fn probe(&self, slot: &mut ProbeConnection) -> bool {
        let started = Instant::now();
        let ok = match (&self.backend, slot) {
            (Backend::Postgres(pool), ProbeConnection::Postgres(conn)) => {
                probe_on(pool, conn, |c| bound_pg_session(c, PING_TIMEOUT)).await
            }
            (Backend::Sqlite(pool), ProbeConnection::Sqlite(conn)) => {
                probe_on(pool, conn, |_| Box::pin(async { Ok(()) })).await
            }
            (_, slot) => {
                *slot = ProbeConnection::for_backend(&self.backend);
                return Box::pin(self.probe(slot)).await;
            }
        };
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.stats.probe_latency_us.store(latency, Relaxed);
        self.stats.probe_unix_ms.store(now_ms, Relaxed);
        self.stats.healthy.store(ok, Relaxed);
        ok
    }
}

/// Records one statement's duration when dropped, whether it finished or was abandoned.
struct QueryTimer<'a> {
    db: &'a Db,
    name: &'static str,
    started: Instant,
}

impl Drop for QueryTimer<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.db.metrics.observe_query(self.name, took);
        if took >= self.db.slow_query {
            // The name only: parameters may be passwords or hashes.
            tracing::warn!(
                query = self.name,
                duration_ms = took.as_secs_f64() * 1000.0,
                threshold_ms = self.db.slow_query.as_secs_f64() * 1000.0,
                "slow query"
            );
        }
    }
}

/// The probe's own connection, kept between probes and reopened after a failure.
#[derive(Debug, Default)]
pub enum ProbeConnection {
    #[default]
    Unset,
    Postgres(Option<sqlx::PgConnection>),
    Sqlite(Option<sqlx::SqliteConnection>),
}

impl ProbeConnection {
    fn for_backend(backend: &Backend) -> Self {
        match backend {
            Backend::Postgres(_) => ProbeConnection::Postgres(None),
            Backend::Sqlite(_) => ProbeConnection::Sqlite(None),
        }
    }
}

async fn probe_on<DB: Database>(
    pool: &Pool<DB>,
    slot: &mut Option<DB::Connection>,
    setup: impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<(), sqlx::Error>>,
) -> bool
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
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
                return false;
            }
            Err(_) => return false,
        }
    }
    let Some(conn) = slot.as_mut() else {
        return false;
    };
    match tokio::time::timeout(PING_TIMEOUT, conn.execute("SELECT 1")).await {
        Ok(Ok(_)) => true,
        _ => {
            // Broken or half-open: forget it (dropping closes the socket) and reconnect next time.
            *slot = None;
            false
        }
    }
}

/// A checked-out connection, counted in `used_connections` until dropped.
pub struct Lease<DB: Database> {
    conn: PoolConnection<DB>,
    stats: Arc<PoolStats>,
}

impl<DB: Database> Lease<DB> {
    /// Closes the connection instead of returning it: it broke or is mid-statement.
    fn discard(&mut self) {
        self.stats.record_lost();
        self.conn.close_on_drop();
    }
}

impl<DB: Database> Deref for Lease<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Lease<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Drop for Lease<DB> {
    fn drop(&mut self) {
        self.stats.used.fetch_sub(1, Relaxed);
    }
}

/// Bounds every statement of a PostgreSQL session on the server itself, so that a statement
/// our side has given up on does not keep running (and holding a backend) after its
/// connection is gone: `statement_timeout` at the query timeout, `lock_timeout` likewise
/// (a lock wait says so in its own SQLSTATE), and `idle_in_transaction_session_timeout` at
/// twice it (a transaction left open ends its session instead of holding its locks).
/// `SET` statements after connecting rather than the startup `options` parameter, which
/// PgBouncer refuses.
fn bound_pg_session(
    conn: &mut sqlx::PgConnection,
    query_timeout: Duration,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    let ms = query_timeout.as_millis().max(1);
    let idle_ms = ms.saturating_mul(2);
    // Only integers are formatted into the statement.
    let sql = format!(
        "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
         SET idle_in_transaction_session_timeout = {idle_ms}"
    );
    Box::pin(async move {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(conn)
            .await
            .map(|_| ())
    })
}

/// A statement the database ended on its own bound: `query_canceled` (57014, which
/// `statement_timeout` raises) or `lock_not_available` (55P03, `lock_timeout`).
fn is_server_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("57014" | "55P03")))
}

/// Pool settings shared by both backends, with the hook that finds dead connections (each
/// backend adds its own `after_connect`, which counts the connection and sets it up).
fn pool_options<DB: Database>(config: &DbSettings, stats: &Arc<PoolStats>) -> PoolOptions<DB> {
    let lost = stats.clone();
    PoolOptions::<DB>::new()
        .min_connections(config.min_connections)
        .max_connections(config.max_connections)
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
