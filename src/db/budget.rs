//! The connection budget: whether PostgreSQL has room for this instance's largest pool.
//! Many instances (and PgBouncer, replicas, admin tools) share one `max_connections`;
//! an instance whose pool could not grow to its maximum fails under load, not at start, so
//! the check runs once at start and is kept as a log line and gauges.

use std::sync::atomic::Ordering::Relaxed;

use sqlx::{Executor, Row};

use super::{Access, Backend, Db, Query};
use crate::Error;

/// The statements of this file, by name and shape (`db::Query`).
const CONNECTION_BUDGET: Query = Query::select("connection_budget", "pg_stat_activity");

/// PostgreSQL's figures against this instance's need, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// PostgreSQL's `max_connections`.
    pub max_connections: u32,
    /// `superuser_reserved_connections`: slots ordinary roles cannot use.
    pub reserved: u32,
    /// Client connections open that are not this instance's pool.
    pub in_use_by_others: u32,
    /// This instance's most: `PRODUTO_MAX_CONNECTIONS` plus the probe's own connection.
    pub needed: u32,
}

impl Budget {
    /// Connections left for this instance.
    pub fn available(&self) -> u32 {
        self.max_connections
            .saturating_sub(self.reserved)
            .saturating_sub(self.in_use_by_others)
    }

    /// Whether this instance's pool can reach its maximum.
    pub fn ok(&self) -> bool {
        self.needed <= self.available()
    }
}

/// One simple-protocol statement (no parameters, nothing prepared), so that it runs the
/// same through PgBouncer's transaction pooling. Behind PgBouncer the figures are those
/// of the PostgreSQL behind it.
const FIGURES: &str = "SELECT current_setting('max_connections')::int4, \
     current_setting('superuser_reserved_connections')::int4, \
     (SELECT count(*)::int4 FROM pg_stat_activity WHERE backend_type = 'client backend')";

impl Db {
    /// Reads PostgreSQL's connection figures and records them (for [`Db::budget`] and the
    /// metrics); `None` on SQLite, which has no connection limit.
    pub async fn check_budget(&self) -> Result<Option<Budget>, Error> {
        // The primary's: replicas are other servers, each with its own limit.
        let server = self.servers().primary();
        let Backend::Postgres(pool) = &server.backend else {
            return Ok(None);
        };
        let (row, own) = self
            .run(Access::Primary, CONNECTION_BUDGET, |conn| {
                Box::pin(async move {
                    // Taken while this connection is out, so that it counts as ours.
                    let own = pool.size();
                    Ok((conn.postgres()?.fetch_one(FIGURES).await?, own))
                })
            })
            .await?;
        let figure = |i: usize| -> Result<u32, Error> {
            let value: i32 = row.try_get(i).map_err(Error::Database)?;
            Ok(u32::try_from(value).unwrap_or(0))
        };
        let budget = Budget {
            max_connections: figure(0)?,
            reserved: figure(1)?,
            in_use_by_others: figure(2)?.saturating_sub(own),
            needed: server.max_connections.saturating_add(1),
        };
        self.stats()
            .budget_max
            .store(budget.max_connections, Relaxed);
        self.stats()
            .budget_available
            .store(budget.available(), Relaxed);
        self.stats().budget_needed.store(budget.needed, Relaxed);
        Ok(Some(budget))
    }

    /// The figures of the last [`Db::check_budget`], if it ran.
    pub fn budget(&self) -> Option<(u32, u32, u32)> {
        let max = self.stats().budget_max.load(Relaxed);
        (max > 0).then(|| {
            (
                max,
                self.stats().budget_available.load(Relaxed),
                self.stats().budget_needed.load(Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_what_ordinary_roles_have_left() {
        let budget = Budget {
            max_connections: 100,
            reserved: 3,
            in_use_by_others: 60,
            needed: 21,
        };
        assert_eq!(budget.available(), 37);
        assert!(budget.ok());
        let crowded = Budget {
            in_use_by_others: 80,
            ..budget
        };
        assert_eq!(crowded.available(), 17);
        assert!(!crowded.ok());
        let full = Budget {
            in_use_by_others: 500,
            ..budget
        };
        assert_eq!(full.available(), 0);
    }
}
