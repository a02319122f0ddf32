//! The login feature's counters: bumped by the login check and the throttle, read lock-free
//! by PoolStatus and `/metrics` (`ops/login_metrics.rs`), so they answer at once even while
//! the database is down. One set per server, shared through an `Arc`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Live counters of logins since start.
#[derive(Debug, Default)]
pub struct LoginCounters {
    throttled: AtomicU64,
    password_verifications: AtomicU64,
    counted_in_memory: AtomicU64,
    in_memory: AtomicBool,
}

impl LoginCounters {
    /// Counts a login refused by brute-force throttling.
    pub(crate) fn record_throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// Counts a password checked against a user's stored hash (the dummy hash is not
    /// counted): what brute-force throttling bounds.
    pub(crate) fn record_password_verification(&self) {
        self.password_verifications.fetch_add(1, Relaxed);
    }

    /// Counts a login attempt counted in memory (the throttling table unreachable).
    pub(crate) fn record_counted_in_memory(&self) {
        self.counted_in_memory.fetch_add(1, Relaxed);
    }

    /// Says whether login attempts are being counted in memory.
    pub(crate) fn set_in_memory(&self, in_memory: bool) {
        self.in_memory.store(in_memory, Relaxed);
    }

    pub fn snapshot(&self) -> LoginSnapshot {
        LoginSnapshot {
            logins_throttled_total: self.throttled.load(Relaxed),
            password_verifications_total: self.password_verifications.load(Relaxed),
            logins_counted_in_memory_total: self.counted_in_memory.load(Relaxed),
            throttle_in_memory: self.in_memory.load(Relaxed),
        }
    }
}

/// The login counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginSnapshot {
    /// Logins refused by brute-force throttling since start.
    pub logins_throttled_total: u64,
    /// Passwords checked against a user's stored hash since start.
    pub password_verifications_total: u64,
    /// Login attempts counted in memory since start (the throttling table unreachable).
    pub logins_counted_in_memory_total: u64,
    /// Whether login attempts are counted in memory now.
    pub throttle_in_memory: bool,
}
