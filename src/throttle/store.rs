//! The counts in the database, which every instance shares: a claim on the caller's row and
//! the username's (one atomic upsert each), the attempt given back when it is not checked,
//! and the purge of expired rows.

use std::time::Duration;

use super::{Found, Limit, LoginThrottle, Throttle, Verdict, now_ms};
use crate::{
    Error,
    db::{Db, users::AttemptCounts},
    domain::Usuario,
};

/// Rows deleted per purge statement, and statements per purge run: each statement is short,
/// and one run removes up to 50 000 expired rows.
const PURGE_BATCH: i64 = 1000;
const PURGE_BATCHES_PER_RUN: usize = 50;
/// How long a claim counts as in flight in the database: past it, an unresolved claim (an
/// instance that crashed mid-attempt) stops holding a slot. Twice [`super::ATTEMPT_MAX`], for the
/// instances' clocks.
const CLAIM_TTL: Duration = Duration::from_secs(60);

impl LoginThrottle {
    /// Deletes the rows whose window has passed, in bounded batches; returns how many.
    pub async fn purge(&self, db: &Db) -> Result<u64, Error> {
        let window_start = self.window_start_ms();
        let mut deleted = 0;
        for _ in 0..PURGE_BATCHES_PER_RUN {
            let n = db
                .purge_login_attempts((now_ms(), window_start), PURGE_BATCH)
                .await?;
            deleted += n;
            if n < PURGE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(deleted)
    }
}

impl Throttle {
    /// Claims in the database: the caller's row, then the username's; gives both back at
    /// once unless the attempt is allowed.
    pub(super) async fn claim_in_db(
        &self,
        usuario: &Usuario,
        identity: &str,
    ) -> Result<Found, Error> {
        self.flush().await?;
        let now = now_ms();
        let ttl = i64::try_from(CLAIM_TTL.as_millis()).unwrap_or(i64::MAX);
        let times = (now, self.policy.window_start_ms(), now + ttl);
        let own = self
            .db
            .claim_login_attempt(usuario, identity, times)
            .await?;
        let every = self.every_identity(identity);
        let all = if every == identity {
            None
        } else {
            match self.db.claim_login_attempt(usuario, every, times).await {
                Ok(all) => Some(all),
                Err(e) => {
                    self.give_back_in_db(usuario, (identity, identity)).await;
                    return Err(e);
                }
            }
        };
        let over = |counts: &AttemptCounts, limit| counts.failed >= limit;
        let busy = |counts: &AttemptCounts, limit| counts.failed + counts.in_flight > limit;
        let (max, max_all) = (self.policy.max_failures, self.policy.max_failures_per_user);
        let decided = if over(&own, max) {
            Found::Decided(Verdict::Refused {
                limit: Limit::Caller,
                retry_after: self.policy.retry_after(own.window_start_ms),
            })
        } else if let Some(all) = all.filter(|all| over(all, max_all)) {
            Found::Decided(Verdict::Refused {
                limit: Limit::Username,
                retry_after: self.policy.retry_after(all.window_start_ms),
            })
        } else if busy(&own, max) || all.is_some_and(|all| busy(&all, max_all)) {
            Found::Busy
        } else {
            return Ok(Found::Decided(Verdict::Allowed));
        };
        // Not checked, so held against neither count: a victim refused while the username
        // is locked keeps its own attempts for when the lock ends.
        self.give_back_in_db(usuario, (identity, every)).await;
        Ok(decided)
    }

    async fn give_back_in_db(&self, usuario: &Usuario, rows: (&str, &str)) {
        if let Err(e) = self
            .db
            .resolve_login_attempt(usuario, rows, false, false)
            .await
        {
            // The claim stops counting when it expires (CLAIM_TTL).
            tracing::warn!(error = %e, "could not give back a login attempt");
        }
    }
}
