//! This instance's own state: a fair queue per key (a semaphore of `limit` permits) for its
//! attempts in flight, and the counts kept in memory while the database cannot be written,
//! added to the database when it can again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Found, Limit, Outcome, Throttle, Verdict, now_ms, store};
use crate::{Error, domain::Usuario};

/// Keys (username, caller) the in-memory counts hold at most; past it, attempts on new keys
/// are refused while counting in memory (failing closed), and attempts do not queue locally.
const MEMORY_MAX_KEYS: usize = 100_000;

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

impl Throttle {
    /// Takes this instance's place on each key's queue, in order (so two attempts cannot
    /// each hold what the other waits for). Past `deadline`: UNAVAILABLE. With the table
    /// full, a key gets no queue (returns fewer permits than keys).
    pub(super) async fn queue(
        &self,
        usuario: &Usuario,
        identity: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<OwnedSemaphorePermit>, Error> {
        let mut permits = Vec::with_capacity(2);
        for (key, limit) in self.keys(usuario, identity) {
            let gate = {
                let mut keys = self.local.lock();
                if !keys.contains_key(&key) && keys.len() >= MEMORY_MAX_KEYS {
                    continue;
                }
                keys.entry(key)
                    .or_insert_with(|| Entry {
                        gate: Arc::new(Semaphore::new(limit as usize)),
                        failed: 0,
                        unflushed: 0,
                        window_start_ms: 0,
                    })
                    .gate
                    .clone()
            };
            match tokio::time::timeout_at(deadline, gate.acquire_owned()).await {
                Ok(Ok(permit)) => permits.push(permit),
                _ => {
                    drop(permits);
                    self.tidy(&self.keys(usuario, identity));
                    return Err(Error::Overloaded(
                        "too many logins of this user in progress, retry later",
                    ));
                }
            }
        }
        Ok(permits)
    }

    /// Counts the attempt in this instance's memory, with the same rule as the database:
    /// refused when a count's failures reached its limit, allowed while its failures and
    /// attempts in flight (the places taken on its queue, this one's included) stay within
    /// it, else wait.
    pub(super) fn claim_in_memory(
        &self,
        usuario: &Usuario,
        identity: &str,
        permits: &[OwnedSemaphorePermit],
    ) -> Found {
        let keys = self.keys(usuario, identity);
        let (now, window_start) = (now_ms(), self.policy.window_start_ms());
        let mut table = self.local.lock();
        let mut busy = false;
        for (i, (key, limit)) in keys.iter().enumerate() {
            let limit_name = if i == 0 {
                Limit::Caller
            } else {
                Limit::Username
            };
            let Some(entry) = table.get_mut(key).filter(|_| permits.len() == keys.len()) else {
                // No room to count it: refused, failing closed.
                return Found::Decided(Verdict::Refused {
                    limit: limit_name,
                    retry_after: self.policy.window,
                });
            };
            if entry.window_start_ms <= window_start {
                (entry.failed, entry.unflushed, entry.window_start_ms) = (0, 0, now);
            }
            if entry.failed >= *limit {
                return Found::Decided(Verdict::Refused {
                    limit: limit_name,
                    retry_after: self.policy.retry_after(entry.window_start_ms),
                });
            }
            let in_flight = (*limit as usize).saturating_sub(entry.gate.available_permits());
            busy |= entry.failed as usize + in_flight > *limit as usize;
        }
        if busy {
            Found::Busy
        } else {
            Found::Decided(Verdict::Allowed)
        }
    }

    /// Records an outcome in memory: a failure on both counts (to be added to the database
    /// later), a success clears the caller's.
    pub(super) fn resolve_in_memory(&self, usuario: &Usuario, identity: &str, outcome: Outcome) {
        let keys = self.keys(usuario, identity);
        let (now, window_start) = (now_ms(), self.policy.window_start_ms());
        let mut table = self.local.lock();
        for (i, (key, _)) in keys.iter().enumerate() {
            let Some(entry) = table.get_mut(key) else {
                continue;
            };
            match outcome {
                Outcome::Failed => {
                    if entry.window_start_ms <= window_start {
                        (entry.failed, entry.unflushed, entry.window_start_ms) = (0, 0, now);
                    }
                    entry.failed += 1;
                    entry.unflushed += 1;
                    self.local.unflushed.store(true, Relaxed);
                }
                Outcome::Succeeded if i == 0 => (entry.failed, entry.unflushed) = (0, 0),
                _ => {}
            }
        }
    }

    /// Adds the failures counted in memory to the database (before a claim there, so that
    /// the claim sees them): counting moves back to the database with nothing forgotten.
    pub(super) async fn flush(&self) -> Result<(), Error> {
        if !self.local.unflushed.load(Relaxed) {
            return Ok(());
        }
        let window_start = self.policy.window_start_ms();
        let pending: Vec<(Key, u32, i64)> = self
            .local
            .lock()
            .iter()
            .filter(|(_, e)| e.unflushed > 0 && e.window_start_ms > window_start)
            .map(|(k, e)| (k.clone(), e.unflushed, e.window_start_ms))
            .collect();
        for (key, n, began) in pending {
            store::add_login_failures(
                &self.db,
                &key.usuario,
                &key.identity,
                n,
                (began, window_start),
            )
            .await?;
            if let Some(entry) = self.local.lock().get_mut(&key) {
                entry.unflushed = entry.unflushed.saturating_sub(n);
            }
        }
        let mut table = self.local.lock();
        if table
            .values()
            .all(|e| e.unflushed == 0 || e.window_start_ms <= window_start)
        {
            self.local.unflushed.store(false, Relaxed);
            table.retain(|_, e| !idle(e, window_start));
            tracing::info!("login failures counted in memory added to the throttling table");
        }
        Ok(())
    }

    /// Forgets the entries of `keys` that nothing waits on and that hold no failure of the
    /// current window.
    pub(super) fn tidy(&self, keys: &[(Key, u32)]) {
        let window_start = self.policy.window_start_ms();
        let mut table = self.local.lock();
        for (key, _) in keys {
            if table.get(key).is_some_and(|e| idle(e, window_start)) {
                table.remove(key);
            }
        }
    }
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
