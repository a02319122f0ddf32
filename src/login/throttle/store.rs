//! The counts in the database, which every instance shares, and their SQL: a claim on the caller's row and
//! the username's (one atomic upsert each), the attempt given back when it is not checked,
//! and the purge of expired rows.

use std::time::Duration;

use super::policy::{LoginThrottle, now_ms};
use crate::{
    Error,
    db::{Access, Db, Query, query::per_backend},
    domain::Usuario,
};

/// The statements of this file, by name and shape (`db::Query`).
const CLAIM_LOGIN_ATTEMPT: Query = Query::insert("claim_login_attempt", "login_tentativas");
const RESOLVE_LOGIN_ATTEMPT: Query = Query::update("resolve_login_attempt", "login_tentativas");
const ADD_LOGIN_FAILURES: Query = Query::insert("add_login_failures", "login_tentativas");
const PURGE_LOGIN_ATTEMPTS: Query = Query::delete("purge_login_attempts", "login_tentativas");

/// Rows deleted per purge statement, and statements per purge run: each statement is short,
/// and one run removes up to 50 000 expired rows.
const PURGE_BATCH: i64 = 1000;
const PURGE_BATCHES_PER_RUN: usize = 50;
/// How long a claim counts as in flight in the database: past it, an unresolved claim (an
/// instance that crashed mid-attempt) stops holding a slot. Twice [`super::ATTEMPT_MAX`], for the
/// instances' clocks.
pub(super) const CLAIM_TTL: Duration = Duration::from_secs(60);

impl LoginThrottle {
    /// Deletes the rows whose window has passed, in bounded batches; returns how many.
    pub async fn purge(&self, db: &Db) -> Result<u64, Error> {
        let window_start = self.window_start_ms();
        let mut deleted = 0;
        for _ in 0..PURGE_BATCHES_PER_RUN {
            let n = purge_login_attempts(db, (now_ms(), window_start), PURGE_BATCH).await?;
            deleted += n;
            if n < PURGE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(deleted)
    }
}

// The SQL of the login-attempt bookkeeping, on `login_tentativas`. Times
// are Unix milliseconds from the service's clock, passed in so that the SQL is the same on
// both backends; a row whose window began at or before `window_start_ms` counts as empty,
// and its attempts in flight count as none once `em_curso_ate_ms` has passed.
/// Claims a slot for one attempt on `(usuario, identidade)`: one more attempt in flight,
/// valid until `claim_until_ms`, opening a new window when the last one has passed.
/// Returns the row after it. One atomic upsert, so that attempts begun at the same time
/// on any instance each see a different count.
pub async fn claim_login_attempt(
    db: &Db,
    usuario: &Usuario,
    identidade: &str,
    (now_ms, window_start_ms, claim_until_ms): (i64, i64, i64),
) -> Result<AttemptCounts, Error> {
    let claim = per_backend!(|conn| {
        sqlx::query_as(
            "INSERT INTO login_tentativas
               (usuario, identidade, tentativas, em_curso, em_curso_ate_ms, janela_inicio_ms)
             VALUES ($1, $2, 0, 1, $5, $3)
             ON CONFLICT (usuario, identidade) DO UPDATE SET
               tentativas = CASE WHEN login_tentativas.janela_inicio_ms <= $4 THEN 0
                                 ELSE login_tentativas.tentativas END,
               em_curso = CASE WHEN login_tentativas.em_curso_ate_ms <= $3 THEN 1
                               ELSE login_tentativas.em_curso + 1 END,
               em_curso_ate_ms = CASE WHEN login_tentativas.em_curso_ate_ms > $5
                                      THEN login_tentativas.em_curso_ate_ms ELSE $5 END,
               janela_inicio_ms = CASE WHEN login_tentativas.janela_inicio_ms <= $4 THEN $3
                                       ELSE login_tentativas.janela_inicio_ms END
             RETURNING tentativas, em_curso, janela_inicio_ms",
        )
        .bind(usuario.as_str())
        .bind(identidade)
        .bind(now_ms)
        .bind(window_start_ms)
        .bind(claim_until_ms)
        .persistent(db.named_statements())
        .fetch_one(conn)
        .await
    });
    let (failed, in_flight, window_start_ms): (i32, i32, i64) =
        db.run(Access::Primary, CLAIM_LOGIN_ATTEMPT, claim).await?;
    Ok(AttemptCounts {
        failed: u32::try_from(failed).unwrap_or(0),
        in_flight: u32::try_from(in_flight).unwrap_or(0),
        window_start_ms,
    })
}

/// Resolves one claimed attempt on `(usuario, identidade)` and, unless `every` is the
/// same identity, on `(usuario, every)`, in one statement: the attempt leaves the
/// in-flight count; `failed` adds it to both rows' failures; `clear_own` (a success)
/// zeroes the caller's failures instead.
pub(super) async fn resolve_login_attempt(
    db: &Db,
    usuario: &Usuario,
    (identidade, every): (&str, &str),
    failed: bool,
    clear_own: bool,
) -> Result<(), Error> {
    let resolve = per_backend!(|conn| {
        sqlx::query(
            "UPDATE login_tentativas SET
               em_curso = CASE WHEN em_curso > 0 THEN em_curso - 1 ELSE 0 END,
               tentativas = CASE WHEN identidade = $2 AND $5 = 1 THEN 0
                                 ELSE tentativas + $4 END
             WHERE usuario = $1 AND identidade IN ($2, $3)",
        )
        .bind(usuario.as_str())
        .bind(identidade)
        .bind(every)
        .bind(i32::from(failed))
        .bind(i32::from(clear_own))
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|_| ())
    });
    db.run(Access::Primary, RESOLVE_LOGIN_ATTEMPT, resolve)
        .await
}

/// Adds `failed` failures counted elsewhere (in memory, while the primary was down) to
/// `(usuario, identidade)`, in a window begun at `began_ms` unless one is running.
pub(super) async fn add_login_failures(
    db: &Db,
    usuario: &Usuario,
    identidade: &str,
    failed: u32,
    (began_ms, window_start_ms): (i64, i64),
) -> Result<(), Error> {
    let failed = i32::try_from(failed).unwrap_or(i32::MAX);
    let add = per_backend!(|conn| {
        sqlx::query(
            "INSERT INTO login_tentativas (usuario, identidade, tentativas, janela_inicio_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (usuario, identidade) DO UPDATE SET
               tentativas = CASE WHEN login_tentativas.janela_inicio_ms <= $5 THEN $3
                                 ELSE login_tentativas.tentativas + $3 END,
               janela_inicio_ms = CASE WHEN login_tentativas.janela_inicio_ms <= $5 THEN $4
                                       ELSE login_tentativas.janela_inicio_ms END",
        )
        .bind(usuario.as_str())
        .bind(identidade)
        .bind(failed)
        .bind(began_ms)
        .bind(window_start_ms)
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|_| ())
    });
    db.run(Access::Primary, ADD_LOGIN_FAILURES, add).await
}

/// Deletes up to `limit` rows whose window has passed and that have no attempt in
/// flight; returns how many it deleted.
pub(super) async fn purge_login_attempts(
    db: &Db,
    (now_ms, window_start_ms): (i64, i64),
    limit: i64,
) -> Result<u64, Error> {
    let purge = per_backend!(|conn| {
        sqlx::query(
            "DELETE FROM login_tentativas WHERE (usuario, identidade) IN (
               SELECT usuario, identidade FROM login_tentativas
               WHERE janela_inicio_ms <= $1 AND (em_curso = 0 OR em_curso_ate_ms <= $3)
               LIMIT $2)",
        )
        .bind(window_start_ms)
        .bind(limit)
        .bind(now_ms)
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    });
    db.run(Access::Primary, PURGE_LOGIN_ATTEMPTS, purge).await
}

/// One row of `login_tentativas` after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptCounts {
    /// Attempts of the window whose password was checked and wrong.
    pub failed: u32,
    /// Attempts claimed and not resolved yet, this one included.
    pub in_flight: u32,
    /// When the window began (Unix ms).
    pub window_start_ms: i64,
}
