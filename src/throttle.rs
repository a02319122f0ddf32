//! Brute-force throttling of logins, per username, counted in the database so that every
//! produto instance shares the count.
//!
//! After `max_failures` failed logins within `window`, further attempts for that username
//! are refused without checking the password until the window passes. A refusal looks
//! exactly like a wrong password (same answer, same work: the dummy hash is verified and
//! the failure is recorded), for known and unknown usernames alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, db::Db, domain::Usuario};

/// The throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    /// Failures allowed per window; 0 turns throttling off.
    pub max_failures: u32,
    pub window: Duration,
}

/// What the database says about a username before a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No failures on record: a success needs no clean-up.
    Clean,
    /// Some failures, below the limit.
    Failed,
    /// At the limit: refuse without checking the password.
    Locked,
}

impl LoginThrottle {
    /// Looks up a username's standing.
    pub async fn standing(&self, db: &Db, usuario: &Usuario) -> Result<Standing, Error> {
        if self.max_failures == 0 {
            return Ok(Standing::Clean);
        }
        Ok(
            match db.login_failures(usuario, self.window_start_ms()).await? {
                None => Standing::Clean,
                Some(n) if n >= self.max_failures => Standing::Locked,
                Some(_) => Standing::Failed,
            },
        )
    }

    /// Records the outcome of an attempt: a failure is counted, a success clears the count.
    pub async fn record(
        &self,
        db: &Db,
        usuario: &Usuario,
        standing: Standing,
        success: bool,
    ) -> Result<(), Error> {
        if self.max_failures == 0 {
            return Ok(());
        }
        match (success, standing) {
            (false, _) => {
                db.record_login_failure(usuario, now_ms(), self.window_start_ms())
                    .await
            }
            (true, Standing::Clean) => Ok(()),
            (true, _) => db.clear_login_failures(usuario).await,
        }
    }

    fn window_start_ms(&self) -> i64 {
        now_ms() - i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
