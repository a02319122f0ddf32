//! The background tasks, until stopped: the supervisor (migrations or waiting for them, the
//! readiness probe, the budget warning, the NOT_SERVING delay at shutdown), the throttle's
//! purge of expired rows, the purge of expired sessions and old audit entries, and the count
//! of users on legacy hashes.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Error,
    audit::Audit,
    config::Settings,
    db::{Db, Diagnosis, ProbeConnection, diagnose},
    login::throttle::Throttle,
    rpc::Readiness,
    sessions::Sessions,
    users::Users,
};

/// Longest pause between two migration attempts while the database is unreachable.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(5);
/// With several write candidates and none writable (a failover under way), the probe runs
/// at least this often, so that writes follow the promotion quickly.
const LOST_PRIMARY_PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest pause between two probes asked for by a failed write.
const REPROBE_MIN: Duration = Duration::from_millis(50);
/// How often the users still on a legacy hash are counted for `/metrics` (a login that
/// replaces one lowers the gauge at once; the count catches imports and other instances).
const LEGACY_COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// The background tasks, until `stop`: the supervisor (migrations, the readiness probe, the
/// NOT_SERVING delay at shutdown), the throttle's purge of expired rows and the count of
/// users on legacy hashes. A database the server can never use (see [`Diagnosis`]) is
/// sent on `fatal`.
pub(super) fn start_background(
    config: &Settings,
    users: &Users,
    (throttle, sessions): (Throttle, Sessions),
    readiness: Readiness,
    stop: &CancellationToken,
    fatal: oneshot::Sender<Error>,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    tasks.spawn(supervise(
        users.clone(),
        throttle.clone(),
        readiness,
        config.probe_interval,
        !config.no_migrate,
        config.shutdown_delay,
        stop.clone(),
        fatal,
    ));
    tasks.spawn(throttle.purge_until_stopped(stop.clone()));
    tasks.spawn(sessions.purge_until_stopped(Audit::new(users.db().clone()), stop.clone()));
    tasks.spawn(count_legacy_hashes(users.clone(), stop.clone()));
    tasks
}

/// Counts the users on legacy hashes every [`LEGACY_COUNT_INTERVAL`], until `stop`. The
/// first count is the supervisor's, before readiness ([`supervise`]), so that no count runs
/// under the first calls. A failed count keeps the last figures.
async fn count_legacy_hashes(users: Users, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LEGACY_COUNT_INTERVAL) => {}
        }
        if users.db().is_migrated() {
            refresh_legacy_hash_counts(&users).await;
        }
    }
}

async fn refresh_legacy_hash_counts(users: &Users) {
    if let Err(e) = users.refresh_legacy_hash_counts().await {
        tracing::debug!(error = %e, "could not count the users on legacy hashes");
    }
}

/// Reads the connection budget and warns when this instance's
/// pool could not reach its maximum (README, "Running many instances").
async fn warn_if_over_budget(db: &Db) {
    match db.check_budget().await {
        Ok(Some(budget)) if !budget.ok() => tracing::warn!(
            max_connections = budget.max_connections,
            superuser_reserved = budget.reserved,
            in_use_by_others = budget.in_use_by_others,
            available = budget.available(),
            needed = budget.needed,
            "PostgreSQL cannot serve this instance's largest pool (PRODUTO_MAX_CONNECTIONS + \
             the probe): lower PRODUTO_MAX_CONNECTIONS or the replica count, or raise \
             max_connections"
        ),
        Ok(Some(budget)) => tracing::info!(
            max_connections = budget.max_connections,
            available = budget.available(),
            needed = budget.needed,
            "connection budget ok"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the connection budget"),
    }
}

/// How waiting for the schema ended.
enum Schema {
    InPlace,
    Stopped,
    /// The database can never be used as configured: the line says why.
    Unusable(String),
}

/// Applies migrations (or, with `apply_migrations` false, waits until someone else has
/// applied them), retrying with a backoff while the database is unreachable (each failure
/// logged with the address and its cause), giving up on a database that refuses for good.
async fn ensure_schema(db: &Db, apply_migrations: bool, stop: &CancellationToken) -> Schema {
    let mut backoff = Duration::from_millis(100);
    while !db.is_migrated() {
        let attempt = async {
            db.find_primary().await;
            let servers = db.servers();
            if servers.follows_primary() && !servers.primary_writable() {
                // Asking a dead host would cost the acquire timeout: wait for a primary.
                let waiting =
                    "no primary among the write candidates yet (each is down or a standby)";
                return Err((
                    waiting.to_owned(),
                    Diagnosis::Unreachable(waiting.to_owned()),
                ));
            }
            let result = if apply_migrations {
                db.migrate()
                    .await
                    .map_err(|e| diagnose::describe_migrate(&e))
            } else {
                db.check_migrated().await
            };
            match result {
                Ok(()) => Ok(()),
                // The pool's error hides the cause ("pool timed out"): ask the database.
                Err(e) => Err((e, db.diagnose().await)),
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Schema::Stopped,
            result = attempt => match result {
                Ok(()) if apply_migrations => {
                    tracing::info!(backend = db.backend_name(), "schema migrated");
                }
                Ok(()) => tracing::info!(backend = db.backend_name(), "schema found migrated"),
                Err((_, Diagnosis::Permanent(line))) => return Schema::Unusable(line),
                Err((e, diagnosis)) => {
                    match diagnosis {
                        Diagnosis::Unreachable(cause) => tracing::error!(
                            database = %cause,
                            retry_in = ?backoff,
                            "database unreachable; not ready, retrying"
                        ),
                        _ => tracing::error!(
                            error = %e,
                            retry_in = ?backoff,
                            "schema not in place; not ready, retrying"
                        ),
                    }
                    tokio::select! {
                        () = stop.cancelled() => return Schema::Stopped,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MIGRATE_RETRY_MAX);
                }
            }
        }
    }
    Schema::InPlace
}

/// The background task: applies migrations (or, with `apply_migrations` false, waits until
/// someone else has applied them), retrying while the database is unreachable; then probes
/// the database every `interval`, reports readiness and tells the throttle (which moves its
/// counting back to the database once the primary answers again), until stopped; then reports
/// NOT_SERVING for `shutdown_delay` before the listener may close. A database that can never
/// be used is sent on `fatal` instead, and the task ends.
#[allow(
    clippy::too_many_arguments,
    reason = "the task's parts, each used once; a struct would only rename them"
)]
async fn supervise(
    users: Users,
    throttle: Throttle,
    mut readiness: Readiness,
    interval: Duration,
    apply_migrations: bool,
    shutdown_delay: Duration,
    stop: CancellationToken,
    fatal: oneshot::Sender<Error>,
) {
    let db = users.db();
    // The probe's first connection is opened while the schema is checked: at startup each
    // new connection is a TLS handshake (~100 ms on loopback, docs/benchmarks.md). Only a healthy
    // early reading is used (one taken while the database was still down would hold
    // readiness back for a probe interval)...
    let mut probe = ProbeConnection::default();
    let (schema, (early, probed_at)) = if db.servers().follows_primary() {
        // ...unless several servers may take the writes: then the probe first finds which
        // does, and the schema is asked of that one.
        let early = (db.probe(&mut probe).await, Instant::now());
        (ensure_schema(db, apply_migrations, &stop).await, early)
    } else {
        tokio::join!(ensure_schema(db, apply_migrations, &stop), async {
            (db.probe(&mut probe).await, Instant::now())
        })
    };
    match schema {
        Schema::InPlace => {}
        Schema::Stopped => {
            // Never ready: nobody is sending, no delay needed.
            readiness.shut_down(Duration::ZERO).await;
            return;
        }
        Schema::Unusable(line) => {
            readiness.shut_down(Duration::ZERO).await;
            let _ = fatal.send(Error::Startup(line));
            return;
        }
    }
    // Before readiness, so that no startup query runs under the first calls; after the
    // schema, because no query runs before the schema is in place. (The legacy count reads
    // a partial index of the legacy rows only: cheap even on a large table.)
    warn_if_over_budget(db).await;
    refresh_legacy_hash_counts(&users).await;
    let mut healthy_early = early && probed_at.elapsed() < interval;
    loop {
        let healthy = std::mem::take(&mut healthy_early)
            || tokio::select! {
                () = stop.cancelled() => break,
                healthy = db.probe(&mut probe) => healthy,
            };
        readiness.set(healthy).await;
        if !healthy {
            // Connections idle in the pool may have died with the database: have them
            // pinged before reuse, so the first calls after it returns do not fail.
            db.stats().mark_suspect();
            tracing::warn!("database probe failed; not ready");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = throttle.after_probe() => {}
        }
        // While no writable primary is known among several candidates, probe more often;
        // a write that failed on the primary asks for a probe at once.
        let next = if db.servers().follows_primary() && !db.servers().primary_writable() {
            interval.min(LOST_PRIMARY_PROBE_INTERVAL)
        } else {
            interval
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(next) => {}
            () = db.servers().primary_lost_notified() => {
                tokio::time::sleep(REPROBE_MIN).await;
            }
        }
    }
    readiness.shut_down(shutdown_delay).await;
}
