//! This instance's own state: a fair queue per key (a semaphore of `limit` permits) for its
//! attempts in flight, and the counts kept in memory while the database cannot be written,
//! added to the database when it can again (by the [`super::Throttle`], which owns it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicBool},
};

use tokio::sync::Semaphore;

use crate::domain::Usuario;

/// Keys (username, caller) the in-memory counts hold at most; past it, attempts on new keys
/// are refused while counting in memory (failing closed), and attempts do not queue locally.
pub(super) const MEMORY_MAX_KEYS: usize = 100_000;

/// One count: a username and a caller identity (or [`super::EVERY_CALLER`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) usuario: Usuario,
    pub(super) identity: String,
}

/// This instance's state for one key.
pub(super) struct Entry {
    /// `limit` permits: this instance's attempts on the key in flight hold one each, so the
    /// ones past the limit queue here (fairly) instead of polling the database.
    pub(super) gate: Arc<Semaphore>,
    /// Failures counted in memory in the window begun at `window_start_ms` (0: none).
    pub(super) failed: u32,
    /// Of those, the ones not yet added to the database.
    pub(super) unflushed: u32,
    pub(super) window_start_ms: i64,
}

#[derive(Default)]
pub(super) struct Local {
    pub(super) keys: Mutex<HashMap<Key, Entry>>,
    /// Some entry has failures that the database has not got yet.
    pub(super) unflushed: AtomicBool,
    /// The last attempt was counted in memory (the database could not be written).
    pub(super) in_memory: AtomicBool,
}

/// Nothing waits on the entry's queue or holds a place in it (the table holds the only
/// reference), and it keeps no failure that counts.
pub(super) fn idle(entry: &Entry, window_start_ms: i64) -> bool {
    Arc::strong_count(&entry.gate) == 1
        && ((entry.failed == 0 && entry.unflushed == 0) || entry.window_start_ms <= window_start_ms)
}

impl Local {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
