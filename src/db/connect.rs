//! Building the pools: each server's sqlx pool (PostgreSQL or SQLite, built lazily), the hook
//! that pings a connection idle long enough to have been cut and replaces one past its
//! (jittered) lifetime, the `target_session_attrs` check on each new connection, and the
//! `SET`s that bound every statement on PostgreSQL itself.

use std::{str::FromStr, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use futures_util::future::BoxFuture;
use sqlx::{
    Connection, Database,
    pool::{PoolConnectionMetadata, PoolOptions},
    postgres::{PgConnectOptions, Postgres},
    sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

use super::{Backend, DbSettings, PoolStats, Server, hosts, replicas, url::SessionAttrs};
use crate::Error;

/// A connection idle longer than this is pinged before it is handed out; younger ones are
/// trusted, unless a connection was found dead while they sat idle (then they may have died
/// with it, as when the database restarts or the network drops every connection at once).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(2);
/// Bound on that ping and on each probe: a half-open connection must not stall a caller.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Bounds every statement of a PostgreSQL session on the server itself (see
/// [`pg_bounds_sql`]). `SET` statements after connecting rather than the startup `options`
/// parameter, which PgBouncer refuses. Not behind transaction pooling: there each
/// transaction sets them for itself ([`super::Db::bounded_begin`]).
pub(super) fn bound_pg_session(
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
pub(super) enum Scope {
    Session,
    Transaction,
}

/// The `SET`s that bound statements on the server itself, so that a statement our side has
/// given up on does not keep running (and holding a backend) after its connection is gone:
/// `statement_timeout` at the query timeout, `lock_timeout` likewise (a lock wait says so in
/// its own SQLSTATE), and `idle_in_transaction_session_timeout` at twice it (a transaction
/// left open ends its session instead of holding its locks).
pub(super) fn pg_bounds_sql(query_timeout: Duration, scope: Scope) -> String {
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
    let max_lifetime = config.max_lifetime;
    PoolOptions::<DB>::new()
        .min_connections(min)
        .max_connections(max)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        // Each connection's own lifetime is checked before it is handed out (see
        // `hosts::past_lifetime`); sqlx's bound is the longest of them, for idle ones.
        .max_lifetime(hosts::lifetime_bound(max_lifetime))
        // Pinging on every acquire costs a round trip per query; ping only connections that
        // sat idle long enough to have been cut (see before_acquire).
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            ping_if_idle::<DB>(conn, meta, lost.clone(), max_lifetime)
        })
}

fn ping_if_idle<DB: Database>(
    conn: &mut DB::Connection,
    meta: PoolConnectionMetadata,
    stats: Arc<PoolStats>,
    max_lifetime: Duration,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if hosts::past_lifetime(max_lifetime, meta.age) {
            return Ok(false);
        }
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

/// A PostgreSQL server's pool (built lazily) and its figures. `url` names one host;
/// `setting` names the URL's origin in errors; each new connection must be what `attrs` asks.
pub(super) fn postgres_server(
    config: &DbSettings,
    url: &str,
    setting: &str,
    bounds: (u32, u32),
    attrs: SessionAttrs,
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
    let query_timeout = config.query_timeout;
    let session_bounds = !config.pgbouncer_transaction_pooling;
    let opened = stats.clone();
    let host = address.clone();
    let pool = pool_options::<Postgres>(config, bounds, &stats)
        .after_connect(move |conn, _meta| {
            opened.opened.fetch_add(1, Relaxed);
            let host = host.clone();
            Box::pin(async move {
                hosts::check_session(conn, attrs, &host).await?;
                if session_bounds {
                    bound_pg_session(conn, query_timeout).await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options);
    let backend = Backend::Postgres(pool);
    Ok(Server::new(backend, address, bounds, stats))
}

/// A SQLite file's pool (built lazily; the file is created if missing) and its figures.
pub(super) fn sqlite_server(
    config: &DbSettings,
    url: &str,
    bounds: (u32, u32),
) -> Result<Server, Error> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Startup(format!("DATABASE_URL is not a valid SQLite URL: {e}")))?
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
    Ok(Server::new(
        Backend::Sqlite(pool),
        url.to_owned(),
        bounds,
        stats,
    ))
}
