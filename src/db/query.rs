//! The one query path: every statement (the queries of [`super::users`], the ObterNivel
//! batch, the budget check) runs through [`Db::run`]. It routes the statement to a server,
//! leases a connection within the acquire bound, runs the statement bounded and timed
//! (inside a transaction behind PgBouncer's transaction pooling), classifies the outcome,
//! and retries a read once.

use std::{
    marker::PhantomData,
    ops::{Deref, DerefMut},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use sqlx::{
    Connection, Database, Pool, pool::PoolConnection, postgres::PgConnection,
    sqlite::SqliteConnection,
};

use tracing::Instrument;

use super::{Access, Backend, Db, PoolStats, replicas, stats::GaugeGuard};
use super::{named::Query, traces};
use crate::{Error, error::is_connection_error};

/// A leased connection as a statement sees it: its backend's own type, so that each driver
/// runs at full speed (and PostgreSQL keeps its arrays). `'a` stands for what the statement
/// borrows (its parameters, the `Db`): the marker tells the compiler that those outlive the
/// connection's borrow `'c`, so that the statement's future may hold both.
pub enum Conn<'c, 'a> {
    Postgres(&'c mut PgConnection, PhantomData<&'c &'a ()>),
    Sqlite(&'c mut SqliteConnection, PhantomData<&'c &'a ()>),
}

impl<'c> Conn<'c, '_> {
    /// The PostgreSQL connection, for a statement only PostgreSQL runs (the batch, the
    /// budget): their callers only exist on PostgreSQL servers.
    pub fn postgres(self) -> Result<&'c mut PgConnection, sqlx::Error> {
        match self {
            Conn::Postgres(conn, _) => Ok(conn),
            Conn::Sqlite(..) => Err(sqlx::Error::Configuration(
                "this statement needs PostgreSQL".into(),
            )),
        }
    }
}

/// A statement for [`Db::run`], written once and compiled for each backend: `$body` (which
/// awaits) runs with `$conn` bound to its backend's own connection. The one thing a function
/// cannot do here; the boxing is what [`Db::run`]'s signature asks of every statement.
macro_rules! per_backend {
    (|$conn:ident| $body:expr) => {
        $crate::db::query::statement(|conn| {
            Box::pin(async move {
                match conn {
                    $crate::db::Conn::Postgres($conn, _) => $body,
                    $crate::db::Conn::Sqlite($conn, _) => $body,
                }
            })
        })
    };
}
pub(crate) use per_backend;

/// One statement: given a leased connection, the future that runs it there. Called again
/// for a retried read.
pub trait Statement<'a, T>:
    for<'c> FnMut(Conn<'c, 'a>) -> BoxFuture<'c, Result<T, sqlx::Error>>
{
}

impl<'a, T, F> Statement<'a, T> for F where
    F: for<'c> FnMut(Conn<'c, 'a>) -> BoxFuture<'c, Result<T, sqlx::Error>>
{
}

/// Gives a statement closure its signature, so that it can be built apart from the call
/// (a closure bound by `let` alone would not get it).
pub(crate) fn statement<'a, T, F: Statement<'a, T>>(statement: F) -> F {
    statement
}

/// The query timeout is enforced by PostgreSQL itself (`statement_timeout`, see
/// `pg_bounds_sql`: per session, or per transaction behind PgBouncer); our own timer waits this much longer (half the query timeout, at
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

impl Db {
    /// Runs one statement on the server `access` routes to (see [`Db::run_on`]).
    pub async fn run<'a, T>(
        &self,
        access: Access,
        query: Query,
        statement: impl Statement<'a, T>,
    ) -> Result<T, Error> {
        let server = self.servers().route(access);
        self.run_on(server, access, query, statement).await
    }

    /// Runs `statement` on a leased connection of server `server`, bounded by the query
    /// timeout and timed under `query.name` (the `query` label of the latency histogram and
    /// the slow-query log), with the outcome classified into [`Error`].
    ///
    /// A read ([`Access::Read`]) is counted on its server and, being safe to repeat, retried
    /// once: on another connection of the same server when its connection turns out to be
    /// dead (cut by the network, or the database restarted; the pool pings the next one
    /// first), so a cut that happened while the pool was idle costs the caller nothing; and
    /// on the primary when it failed on a replica (the replica died since the last probe).
    /// Writes are never repeated once sent: the first attempt may have committed. A
    /// statement still waiting for a connection when the probe elects another primary was
    /// never sent, whatever its access: it goes to the new primary (once).
    pub async fn run_on<'a, T>(
        &self,
        mut server: usize,
        access: Access,
        query: Query,
        mut statement: impl Statement<'a, T>,
    ) -> Result<T, Error> {
        let name = query.name;
        let read = access == Access::Read;
        let mut attempt = 1;
        let mut followed = false;
        loop {
            if read {
                self.servers().get(server).count_read();
            }
            let span = traces::statement_span(
                query,
                traces::Target {
                    system: self.backend_name(),
                    address: &self.servers().get(server).address,
                    primary: server == self.servers().primary_index(),
                },
            );
            let (result, lost) = match &self.servers().get(server).backend {
                Backend::Postgres(pool) => {
                    self.attempt(
                        server,
                        pool,
                        |c| Conn::Postgres(c, PhantomData),
                        name,
                        &mut statement,
                    )
                    .instrument(span)
                    .await
                }
                Backend::Sqlite(pool) => {
                    self.attempt(
                        server,
                        pool,
                        |c| Conn::Sqlite(c, PhantomData),
                        name,
                        &mut statement,
                    )
                    .instrument(span)
                    .await
                }
            };
            if let (Err(_), Retry::PrimaryMoved) = (&result, lost)
                && !followed
            {
                followed = true;
                server = self.servers().primary_index();
                continue;
            }
            let lost = lost == Retry::LostConnection;
            let on_replica = server != self.servers().primary_index();
            let failed = matches!(&result, Err(Error::Unavailable(_) | Error::DatabaseDown(_)));
            if !(read && attempt < 2 && (lost || (on_replica && failed))) {
                return result;
            }
            attempt += 1;
            if on_replica {
                server = self.servers().primary_index();
            }
            tracing::debug!(
                query = name,
                "read failed on its connection or replica; retrying once"
            );
        }
    }

    /// One attempt on server `server`: lease, run, classify. Also says whether the
    /// connection was found dead (a read may then be retried).
    async fn attempt<'a, DB: Database, T>(
        &self,
        server: usize,
        pool: &Pool<DB>,
        conn: impl for<'c> Fn(&'c mut DB::Connection) -> Conn<'c, 'a>,
        name: &'static str,
        statement: &mut impl Statement<'a, T>,
    ) -> (Result<T, Error>, Retry) {
        let mut lease = match self.acquire(server, pool).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                traces::statement_not_started(&tracing::Span::current());
                let e =
                    Error::Unavailable("the primary moved while waiting for a connection".into());
                return (Err(e), Retry::PrimaryMoved);
            }
            Err(e) => {
                traces::statement_not_started(&tracing::Span::current());
                return (Err(e), Retry::No);
            }
        };
        let outcome = self
            .bounded_as(name, async {
                if !self.in_transaction() {
                    return statement(conn(&mut *lease)).await;
                }
                // Transaction pooling: BEGIN pins one server connection for the statement's
                // parse and execution (see `Db::named_statements`), and bounds it there.
                let mut tx = lease.begin_with(self.bounded_begin()).await?;
                match statement(conn(&mut *tx)).await {
                    Ok(value) => tx.commit().await.map(|()| value),
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            })
            .await;
        match &outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => traces::statement_failed(&tracing::Span::current(), Some(e)),
            Err(_) => traces::statement_failed(&tracing::Span::current(), None),
        }
        let lost = if matches!(&outcome, Ok(Err(e)) if is_connection_error(e)) {
            Retry::LostConnection
        } else {
            Retry::No
        };
        (self.classify(server, &mut lease, outcome), lost)
    }

    /// Runs a lookup on the server reads are routed to; a miss there, when it is a replica,
    /// is asked again of the primary, since a user added moments ago may not have reached
    /// the replica yet. While the primary cannot answer (down at the last probe, or
    /// UNAVAILABLE now), the replica's miss stands.
    pub(crate) async fn read_confirmed<T, F, Fut>(&self, lookup: F) -> Result<Option<T>, Error>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Option<T>, Error>>,
    {
        let server = self.servers().route(Access::Read);
        let found = lookup(server).await?;
        let primary = self.servers().primary_index();
        // A primary the probe found down is not asked: the answer would be UNAVAILABLE,
        // after a wait.
        if found.is_some() || server == primary || !self.servers().primary().reachable() {
            return Ok(found);
        }
        match lookup(primary).await {
            Err(Error::Unavailable(e) | Error::DatabaseDown(e)) => {
                tracing::debug!(error = %e, "cannot confirm a replica's miss on the primary");
                Ok(None)
            }
            other => other,
        }
    }

    /// Takes a connection from server `index`'s pool, counting the wait, bounded by the
    /// acquire timeout (shorter while the probe says the server is down). The lease gives it
    /// back when dropped. `None` when `index` was the primary and the probe elected another
    /// while waiting (see [`Db::primary_moved_from`]).
    async fn acquire<DB: Database>(
        &self,
        index: usize,
        pool: &Pool<DB>,
    ) -> Result<Option<Lease<DB>>, Error> {
        let stats = &self.servers.get(index).stats;
        if !self.is_migrated() {
            return Err(Error::Unavailable(
                "schema not migrated yet (starting up)".into(),
            ));
        }
        let healthy = stats.healthy();
        let bound = if healthy {
            self.acquire_timeout
        } else {
            self.acquire_timeout.min(UNHEALTHY_ACQUIRE_TIMEOUT)
        };
        let started = Instant::now();
        let result = {
            let _waiting = GaugeGuard::raise(&stats.waiting);
            // sqlx's acquire future used to hold the whole connection set-up inline (14.5
            // KiB on PostgreSQL), which every statement's future then carried and moved:
            // the vendored sqlx-core boxes the set-up instead (vendor/README.md).
            let acquiring =
                tokio::time::timeout(bound, pool.acquire()).instrument(traces::pool_wait_span());
            if self.servers.follows_primary() && index == self.servers.primary_index() {
                tokio::select! {
                    result = acquiring => result,
                    () = self.primary_moved_from(index) => return Ok(None),
                }
            } else {
                acquiring.await
            }
        };
        let waited = started.elapsed();
        self.metrics.observe_acquire_wait(waited);
        stats.record_wait(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
        match result {
            Ok(Ok(conn)) => {
                stats.used.fetch_add(1, Relaxed);
                Ok(Some(Lease {
                    conn,
                    stats: stats.clone(),
                }))
            }
            Err(_) | Ok(Err(sqlx::Error::PoolTimedOut)) => {
                stats.acquire_timeouts.fetch_add(1, Relaxed);
                self.lost_if_primary(index);
                Err(
                    Error::Unavailable(format!("no database connection within {bound:?}"))
                        .while_database_down(!healthy),
                )
            }
            Ok(Err(e)) => {
                stats.acquire_errors.fetch_add(1, Relaxed);
                self.lost_if_primary(index);
                Err(Error::from_sqlx(e).while_database_down(!healthy))
            }
        }
    }

    /// Bounds one statement's future by the query timeout and times it under `name` (the
    /// latency histogram, and a log line when slower than the slow-query threshold). A
    /// statement abandoned by its caller (deadline) is timed too, up to the abandonment.
    async fn bounded_as<T>(
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
    /// server's own bound (see `client_grace`); SQLite runs in process, so exactly it.
    fn statement_bound(&self) -> Duration {
        match self.backend() {
            Backend::Postgres(_) => self.query_timeout + client_grace(self.query_timeout),
            Backend::Sqlite(_) => self.query_timeout,
        }
    }

    /// Classifies a bounded statement's outcome on server `index`; a connection that timed
    /// out or broke is closed instead of going back to the pool, and so is one that refused
    /// a write as read-only (its server is no longer the primary, see [`replicas`]).
    fn classify<DB: Database, T>(
        &self,
        index: usize,
        lease: &mut Lease<DB>,
        outcome: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        let down = !self.servers.get(index).stats.healthy();
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if replicas::is_read_only_error(&e) => {
                lease.discard();
                self.servers.demote(index);
                Err(Error::Unavailable(
                    "the database server is read-only (a failover is under way)".into(),
                ))
            }
            // PostgreSQL ended the statement at the query timeout: the connection is fine
            // and goes back to the pool; the caller may retry later.
            Ok(Err(e)) if is_server_timeout(&e) => Err(Error::Unavailable(format!(
                "query did not finish within {:?} (ended by the database)",
                self.query_timeout
            ))),
            Ok(Err(e)) if is_connection_error(&e) => {
                lease.discard();
                self.lost_if_primary(index);
                Err(Error::Unavailable(e.to_string()).while_database_down(down))
            }
            // A standby cancels a query that conflicts with its replay (40001, "conflict with
            // recovery"), as PostgreSQL cancels a deadlock's victim (40P01): the statement did
            // nothing and may run again (a read is retried on the primary).
            Ok(Err(e)) if is_retryable_conflict(&e) => Err(Error::Unavailable(e.to_string())),
            Ok(Err(e)) => Err(Error::Database(e)),
            Err(_) => {
                lease.discard();
                Err(Error::Unavailable(format!(
                    "query did not finish within {:?}",
                    self.query_timeout
                ))
                .while_database_down(down))
            }
        }
    }
}

/// Why an attempt may be made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    /// Its connection was found dead (a read may be retried).
    LostConnection,
    /// It never got a connection: the primary moved meanwhile (any statement may follow it).
    PrimaryMoved,
}

/// A connection to the primary this slow to come (with other write candidates configured)
/// asks the probe at once whether the primary is still there: a host that refuses
/// connections makes sqlx retry until the acquire timeout, without an error to notice.
const SLOW_PRIMARY_ACQUIRE: Duration = Duration::from_millis(200);

impl Db {
    /// Resolves when the probe has elected a primary other than `index`; after
    /// [`SLOW_PRIMARY_ACQUIRE`] asks the probe to look at once.
    async fn primary_moved_from(&self, index: usize) {
        let mut primary = self.servers.watch_primary();
        let moved = primary.wait_for(|&p| p != index);
        let ask = async {
            tokio::time::sleep(SLOW_PRIMARY_ACQUIRE).await;
            self.servers.primary_lost();
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = moved => {}
            () = ask => {}
        }
    }

    /// Server `index` could not run a statement: if it is the primary, the probe looks
    /// for the primary at once (see [`replicas::Servers::primary_lost`]).
    fn lost_if_primary(&self, index: usize) {
        if index == self.servers.primary_index() {
            self.servers.primary_lost();
        }
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

/// A checked-out connection, counted in `used_connections` until dropped.
struct Lease<DB: Database> {
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

/// A statement cancelled by a conflict: with a standby's replay or a deadlock.
fn is_retryable_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// A statement the database ended on its own bound: `query_canceled` (57014, which
/// `statement_timeout` raises) or `lock_not_available` (55P03, `lock_timeout`).
fn is_server_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("57014" | "55P03")))
}
