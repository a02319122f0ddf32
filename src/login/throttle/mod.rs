//! Brute-force throttling of logins, counted in the database so that every produto instance
//! shares the counts, and in memory while the database cannot take them.
//!
//! An attempt claims a slot before the password is looked at, with one atomic upsert, so
//! guesses sent at the same time cannot all slip under the limit. Slots are counted per
//! (username, caller) and per username. A row counts the attempts that *failed* apart from
//! those *in flight*: a claim is allowed while the two together stay within the limit, and a
//! claim that finds the limit taken by attempts still in flight waits for them to resolve
//! (bounded) rather than being refused, so a right password is refused only when the limit
//! was reached by wrong ones. On one instance the waiting is a fair queue per key (a
//! semaphore of `limit` permits); attempts in flight on other instances are waited out by
//! polling. A refusal looks exactly like a wrong password (same answer, same work: the same
//! statements, and the dummy hash is verified), for known and unknown usernames alike; only
//! a trusted caller may be told the truth (`LOGIN_THROTTLED`), if the setting says so.
//!
//! While the primary cannot be reached (reads go on from the replicas), attempts are counted
//! in memory, per instance, with the same limits (the log says so, and the metric
//! `produto_login_throttle_in_memory`); when the primary is back, the failures counted in
//! memory are added to the database and counting moves back there.
//!
//! Here the claim and its resolution ([`Throttle::begin`], [`Claim`]); beside it the policy
//! and who the caller is ([`policy`]: settings, flags, the caller's identity), the counts in
//! the database ([`store`]) and this instance's own state ([`local`]: the queues per key and
//! the counts kept in memory).

mod local;
mod policy;
mod store;

pub use store::{AttemptCounts, claim_login_attempt};

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::LoginCounters;
use crate::{Error, db::Db, domain::Usuario};
use local::{Entry, Key, Local, MEMORY_MAX_KEYS, idle};
use policy::now_ms;
use store::{CLAIM_TTL, add_login_failures, resolve_login_attempt};

pub use policy::{
    AuthenticatedCaller, Caller, END_USER_KEY, LoginThrottle, ThrottleFlags, TrustEndUser,
    has_client_certificate, is_authenticated,
};

/// The `identidade` of the row that counts every caller's attempts on a username.
const EVERY_CALLER: &str = "*";
/// Purges run every window, but at least this often.
const PURGE_EVERY_MAX: Duration = Duration::from_secs(60);
/// The longest an allowed attempt may take from its claim to its verdict: past it the login
/// is abandoned (its caller gets UNAVAILABLE and learns nothing), so that a claim never
/// outlives [`store::CLAIM_TTL`]. Hashing waits at most its queue timeout (5 s by default).
pub const ATTEMPT_MAX: Duration = Duration::from_secs(30);
/// The longest an attempt waits for slots held by attempts in flight (the caller's deadline,
/// enforced by the middleware, usually ends it sooner); past it the login answers UNAVAILABLE.
const WAIT_MAX: Duration = Duration::from_secs(10);
/// Polling for attempts in flight on other instances: from the first to the last interval,
/// doubling.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_LAST: Duration = Duration::from_millis(200);

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This caller's failures on this username.
    Caller,
    /// All callers' failures on this username together.
    Username,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Caller => "caller",
            Limit::Username => "username",
        }
    }
}

/// What claiming a slot decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Throttling is off.
    Unthrottled,
    /// Within the limits: verify the password.
    Allowed,
    /// The limit was reached by failed attempts; the window that holds them ends in
    /// `retry_after`.
    Refused { limit: Limit, retry_after: Duration },
}

impl Verdict {
    pub fn is_refused(self) -> bool {
        matches!(self, Verdict::Refused { .. })
    }
}

/// How an allowed attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right: the caller's failures are forgotten.
    Succeeded,
    /// The password was checked and wrong: it counts against both limits.
    Failed,
    /// The password could not be checked (shed, failed, or the caller left before the
    /// answer): the attempt is given back, since its caller learnt nothing.
    NotChecked,
}

/// The throttle at work: the policy, the database, this instance's own state (the queues
/// of its attempts per key, and the counts kept while the database cannot be written) and
/// the login counters it bumps.
#[derive(Clone)]
pub struct Throttle {
    policy: LoginThrottle,
    db: Db,
    local: Arc<Local>,
    counters: Arc<LoginCounters>,
}

/// What a claim found.
enum Found {
    Decided(Verdict),
    /// The limit is taken by attempts in flight: wait for them and try again.
    Busy,
}

/// Where a claim was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Database,
    Memory,
}

/// A claimed slot. Resolve it with [`Claim::finish`]; dropped unfinished (the caller went
/// away: deadline, disconnect), it gives the attempt back in a task of its own: a caller
/// that never sees an answer has learnt nothing, and a user whose calls time out under
/// load is not locked out by them.
#[must_use = "a claim holds a slot until it is finished"]
pub struct Claim {
    verdict: Verdict,
    held: Option<Held>,
}

/// What an allowed claim holds until it is resolved.
struct Held {
    throttle: Throttle,
    usuario: Usuario,
    identity: String,
    counted: Counted,
    /// This instance's queue places; freed after the resolution is written.
    permits: Vec<OwnedSemaphorePermit>,
}

impl Claim {
    fn decided(verdict: Verdict) -> Self {
        Claim {
            verdict,
            held: None,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Resolves the attempt. The write runs in a task of its own, so that a caller that
    /// goes away meanwhile cannot leave it half done; in the caller's span, as the caller
    /// waits for it (its statement belongs to the call's trace).
    pub async fn finish(mut self, outcome: Outcome) {
        if let Some(held) = self.held.take() {
            let resolve = tracing::Instrument::in_current_span(held.resolve(outcome));
            let _ = tokio::spawn(resolve).await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(held) = self.held.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(held.resolve(Outcome::NotChecked));
        }
    }
}

impl Held {
    async fn resolve(self, outcome: Outcome) {
        let t = &self.throttle;
        match self.counted {
            Counted::Database => {
                let result = resolve_login_attempt(
                    &t.db,
                    &self.usuario,
                    (&self.identity, t.every_identity(&self.identity)),
                    outcome == Outcome::Failed,
                    outcome == Outcome::Succeeded,
                )
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, ?outcome, "could not record a login attempt's outcome");
                    // A failure the database did not take is kept in memory, and added to
                    // the database when it can be written again.
                    if outcome == Outcome::Failed {
                        t.resolve_in_memory(&self.usuario, &self.identity, outcome);
                    }
                }
            }
            Counted::Memory => t.resolve_in_memory(&self.usuario, &self.identity, outcome),
        }
        drop(self.permits);
        t.tidy(&t.keys(&self.usuario, &self.identity));
    }
}

impl Throttle {
    pub fn new(policy: LoginThrottle, db: Db, counters: Arc<LoginCounters>) -> Self {
        Throttle {
            policy,
            db,
            local: Arc::default(),
            counters,
        }
    }

    pub fn policy(&self) -> &LoginThrottle {
        &self.policy
    }

    /// Claims a slot for an attempt by `caller` on `usuario`, before the password is
    /// checked: the caller's count and the username's, each allowed while its failures and
    /// attempts in flight stay within its limit. An attempt that finds a limit taken by
    /// attempts in flight waits for them (at most [`WAIT_MAX`]; UNAVAILABLE past it); one
    /// that finds it taken by failures is refused. Every path runs the same statements (two
    /// claims, and one resolution now or when finished), whatever the verdict.
    #[tracing::instrument(level = "debug", name = "throttle claim", skip_all)]
    pub async fn begin(&self, usuario: &Usuario, caller: &Caller) -> Result<Claim, Error> {
        if self.policy.max_failures == 0 {
            return Ok(Claim::decided(Verdict::Unthrottled));
        }
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        let mut poll = POLL_FIRST;
        loop {
            let permits = self.queue(usuario, &caller.identity, deadline).await?;
            let in_db = if self.primary_known_down() {
                Err(Error::Unavailable("the primary is down".into()))
            } else {
                self.claim_in_db(usuario, &caller.identity).await
            };
            let (found, counted) = match in_db {
                Ok(found) => {
                    self.counting_in_database();
                    (found, Counted::Database)
                }
                Err(e) if self.unreachable(&e) => {
                    if !self.local.in_memory.swap(true, Relaxed) {
                        self.counters.set_in_memory(true);
                        tracing::warn!(
                            error = %e,
                            "throttling table unreachable: login attempts counted in memory on this instance"
                        );
                    }
                    let found = self.claim_in_memory(usuario, &caller.identity, &permits);
                    (found, Counted::Memory)
                }
                Err(e) => return Err(e),
            };
            match found {
                Found::Decided(verdict) => {
                    if counted == Counted::Memory {
                        self.counters.record_counted_in_memory();
                    }
                    return Ok(self.claim(usuario, &caller.identity, verdict, counted, permits));
                }
                Found::Busy => {
                    drop(permits);
                    self.tidy(&self.keys(usuario, &caller.identity));
                    if tokio::time::Instant::now() + poll > deadline {
                        return Err(Error::Overloaded(
                            "too many logins of this user in progress, retry later",
                        ));
                    }
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_LAST);
                }
            }
        }
    }

    fn claim(
        &self,
        usuario: &Usuario,
        identity: &str,
        verdict: Verdict,
        counted: Counted,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Claim {
        if verdict != Verdict::Allowed {
            drop(permits);
            self.tidy(&self.keys(usuario, identity));
            return Claim::decided(verdict);
        }
        Claim {
            verdict,
            held: Some(Held {
                throttle: self.clone(),
                usuario: usuario.clone(),
                identity: identity.to_owned(),
                counted,
                permits,
            }),
        }
    }

    /// Counting moves (or stays) in the database: the gauge and the log say so.
    fn counting_in_database(&self) {
        if self.local.in_memory.swap(false, Relaxed) {
            self.counters.set_in_memory(false);
            tracing::info!(
                "throttling table writable again: login attempts counted in the database"
            );
        }
    }

    /// After each probe (the supervisor calls it): once the probe finds the primary again,
    /// the failures counted in memory are added to the database and counting moves back
    /// there, without waiting for the next login, so that the gauge
    /// `produto_login_throttle_in_memory` follows the primary's health. A write that fails
    /// leaves counting in memory; the next probe tries again.
    pub async fn after_probe(&self) {
        if !self.local.in_memory.load(Relaxed) || !self.db.servers().primary().reachable() {
            return;
        }
        match self.flush().await {
            Ok(()) => self.counting_in_database(),
            Err(e) => tracing::debug!(error = %e, "login failures counted in memory not added yet"),
        }
    }

    /// Whether a failure of the throttling table is the primary being unreachable while
    /// replicas can still serve logins: then attempts are counted in memory. Without
    /// replicas the login fails UNAVAILABLE, as every other query would.
    fn unreachable(&self, e: &Error) -> bool {
        matches!(e, Error::Unavailable(_) | Error::DatabaseDown(_))
            && self.db.servers().has_replicas()
    }

    /// The probe found the primary down while replicas serve: the table is not even tried
    /// (each try would wait for a connection that cannot come).
    fn primary_known_down(&self) -> bool {
        let servers = self.db.servers();
        servers.has_replicas() && !servers.primary().reachable()
    }

    /// The identity of the username's row, or the caller's own when there is no ceiling (so
    /// that a resolution touches the caller's row only).
    fn every_identity<'a>(&self, identity: &'a str) -> &'a str {
        if self.policy.max_failures_per_user == 0 {
            identity
        } else {
            EVERY_CALLER
        }
    }

    /// The keys an attempt counts on, with their limits: the caller's, then the username's.
    fn keys(&self, usuario: &Usuario, identity: &str) -> Vec<(Key, u32)> {
        let key = |identity: &str| Key {
            usuario: usuario.clone(),
            identity: identity.to_owned(),
        };
        let mut keys = vec![(key(identity), self.policy.max_failures)];
        if self.policy.max_failures_per_user != 0 {
            keys.push((key(EVERY_CALLER), self.policy.max_failures_per_user));
        }
        keys
    }

    /// Purges expired rows (and this instance's expired in-memory counts) every window (at
    /// least every minute) until stopped, so that a flood of random usernames costs bounded
    /// space.
    pub async fn purge_until_stopped(self, stop: CancellationToken) {
        let every = self
            .policy
            .window
            .clamp(Duration::from_millis(100), PURGE_EVERY_MAX);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let window_start = self.policy.window_start_ms();
            self.local.lock().retain(|_, e| !idle(e, window_start));
            if !self.db.is_migrated() || self.primary_known_down() {
                continue;
            }
            let purged = tokio::select! {
                () = stop.cancelled() => return,
                purged = self.policy.purge(&self.db) => purged,
            };
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "expired login attempts purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired login attempts"),
            }
        }
    }
}

// This instance's queues and in-memory counts (see [`local`]).
impl Throttle {
    /// Takes this instance's place on each key's queue, in order (so two attempts cannot
    /// each hold what the other waits for). Past `deadline`: UNAVAILABLE. With the table
    /// full, a key gets no queue (returns fewer permits than keys).
    async fn queue(
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
    fn claim_in_memory(
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
    fn resolve_in_memory(&self, usuario: &Usuario, identity: &str, outcome: Outcome) {
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
    async fn flush(&self) -> Result<(), Error> {
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
            add_login_failures(
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
    fn tidy(&self, keys: &[(Key, u32)]) {
        let window_start = self.policy.window_start_ms();
        let mut table = self.local.lock();
        for (key, _) in keys {
            if table.get(key).is_some_and(|e| idle(e, window_start)) {
                table.remove(key);
            }
        }
    }
}

// The claim in the database (see [`store`]).
impl Throttle {
    /// Claims in the database: the caller's row, then the username's; gives both back at
    /// once unless the attempt is allowed.
    async fn claim_in_db(&self, usuario: &Usuario, identity: &str) -> Result<Found, Error> {
        self.flush().await?;
        let now = now_ms();
        let ttl = i64::try_from(CLAIM_TTL.as_millis()).unwrap_or(i64::MAX);
        let times = (now, self.policy.window_start_ms(), now + ttl);
        let own = claim_login_attempt(&self.db, usuario, identity, times).await?;
        let every = self.every_identity(identity);
        let all = if every == identity {
            None
        } else {
            match claim_login_attempt(&self.db, usuario, every, times).await {
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
        if let Err(e) = resolve_login_attempt(&self.db, usuario, rows, false, false).await {
            // The claim stops counting when it expires (CLAIM_TTL).
            tracing::warn!(error = %e, "could not give back a login attempt");
        }
    }
}
