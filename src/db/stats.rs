//! Pool figures that sqlx does not keep: counted by the acquire wrapper and the pool hooks,
//! read lock-free by PoolStatus (so it answers at once, even while the database is down).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Live counters shared by the pool hooks, the acquire wrapper and the probe.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub(crate) used: AtomicU32,
    pub(crate) waiting: AtomicU32,
    pub(crate) acquires: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
    pub(crate) acquire_errors: AtomicU64,
    pub(crate) acquire_wait_ms_max: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) healthy: AtomicBool,
    pub(crate) probe_latency_us: AtomicU64,
    pub(crate) probe_unix_ms: AtomicI64,
    /// When a connection was last found dead, in ms since `epoch` (0: never): connections
    /// idle since then are suspect and pinged before reuse.
    pub(crate) last_loss_ms: AtomicU64,
    pub(crate) epoch: std::sync::OnceLock<std::time::Instant>,
    /// The connection budget read at start (see `db::budget`); 0 until then.
    pub(crate) budget_max: AtomicU32,
    pub(crate) budget_available: AtomicU32,
    pub(crate) budget_needed: AtomicU32,
}

impl PoolStats {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    fn since_epoch_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        // +1 so that a loss in the first millisecond is still "some time", not "never".
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// Counts a connection found dead, and marks every connection idle since now as suspect.
    pub(crate) fn record_lost(&self) {
        self.lost.fetch_add(1, Relaxed);
        self.mark_suspect();
    }

    /// Marks every connection idle since now as suspect: it is pinged before reuse.
    pub fn mark_suspect(&self) {
        self.last_loss_ms.store(self.since_epoch_ms(), Relaxed);
    }

    /// Whether a connection idle for `idle_for` sat in the pool when a connection was last
    /// found dead (it may have died with it).
    pub(crate) fn idle_since_last_loss(&self, idle_for: std::time::Duration) -> bool {
        let last = self.last_loss_ms.load(Relaxed);
        if last == 0 {
            return false;
        }
        let now = self.since_epoch_ms();
        let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(idle_ms) <= last
    }

    pub(crate) fn record_wait(&self, ms: u64) {
        self.acquires.fetch_add(1, Relaxed);
        self.acquire_wait_ms_max.fetch_max(ms, Relaxed);
    }
}

/// A consistent-enough copy of the pool's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// "active" or "closed".
    pub status: &'static str,
    pub healthy: bool,
    pub min_connections: u32,
    pub max_connections: u32,
    pub pool_size: u32,
    pub used_connections: u32,
    pub idle_connections: u32,
    pub requests_waiting: u32,
    pub acquires_total: u64,
    pub acquire_timeouts_total: u64,
    pub acquire_errors_total: u64,
    pub acquire_wait_ms_max: u64,
    pub connections_opened_total: u64,
    pub connections_lost_total: u64,
    pub last_probe_latency_us: u64,
    pub last_probe_unix_ms: i64,
    /// "postgres" or "sqlite".
    pub backend: &'static str,
}

impl PoolStats {
    pub(crate) fn snapshot(
        &self,
        closed: bool,
        (min, max): (u32, u32),
        (size, idle): (u32, u32),
        backend: &'static str,
    ) -> PoolSnapshot {
        PoolSnapshot {
            status: if closed { "closed" } else { "active" },
            healthy: self.healthy() && !closed,
            min_connections: min,
            max_connections: max,
            pool_size: size,
            used_connections: self.used.load(Relaxed),
            idle_connections: idle,
            requests_waiting: self.waiting.load(Relaxed),
            acquires_total: self.acquires.load(Relaxed),
            acquire_timeouts_total: self.acquire_timeouts.load(Relaxed),
            acquire_errors_total: self.acquire_errors.load(Relaxed),
            acquire_wait_ms_max: self.acquire_wait_ms_max.load(Relaxed),
            connections_opened_total: self.opened.load(Relaxed),
            connections_lost_total: self.lost.load(Relaxed),
            last_probe_latency_us: self.probe_latency_us.load(Relaxed),
            last_probe_unix_ms: self.probe_unix_ms.load(Relaxed),
            backend,
        }
    }
}

/// Decrements a gauge when dropped, so that a cancelled caller cannot leave it raised.
pub(crate) struct GaugeGuard<'a>(pub(crate) &'a AtomicU32);

impl<'a> GaugeGuard<'a> {
    pub(crate) fn raise(gauge: &'a AtomicU32) -> Self {
        gauge.fetch_add(1, Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
