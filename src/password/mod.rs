//! argon2id password hashing, off the async runtime and bounded.
//!
//! Hashing is CPU work of tens of milliseconds: it runs on `concurrency` dedicated threads,
//! so that logins can never starve the runtime that serves the cheap RPCs. Unknown users are
//! verified against a dummy hash so that they cost the same. Imported users' legacy hashes
//! ([`legacy`]) are verified on the same threads and replaced at their first login.
//!
//! Here the settings and the [`Hasher`] (its bounds: the slots, the queue timeout, the cost a
//! stored hash may ask for); beside it the hashing threads (`threads.rs`) and argon2 on the
//! memory each thread keeps (`reused_memory.rs`).

pub mod legacy;
pub mod policy;
mod reused_memory;
mod threads;

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use password_hash::{SaltString, rand_core::OsRng};
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument;

use crate::{Error, domain::Senha};
use legacy::{Format, Legacy};
use threads::{HashThreads, IDLE_RELEASE};

pub use policy::{PasswordPolicy, PolicyFlags};

/// The hashing settings: argon2id's costs and how many hashes run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSettings {
    /// Memory, iterations and parallelism (checked when built).
    pub params: Params,
    /// Hashes computed at once (0: one per CPU core).
    pub concurrency: usize,
    /// How long a caller may wait for a hashing slot before it is shed.
    pub queue_timeout: Duration,
}

impl HashSettings {
    /// argon2id with memory `m_kib` KiB, `t` iterations and parallelism `p`, one hash per
    /// core at once, callers waiting up to 5 s for a slot; fails on costs argon2 refuses.
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self, argon2::Error> {
        Ok(HashSettings {
            params: Params::new(m_kib, t, p, None)?,
            concurrency: defaults::HASH_CONCURRENCY,
            queue_timeout: defaults::QUEUE_TIMEOUT,
        })
    }

    /// The same settings with other argon2id costs.
    pub fn with_costs(self, m_kib: u32, t: u32, p: u32) -> Result<Self, argon2::Error> {
        Ok(HashSettings {
            params: Params::new(m_kib, t, p, None)?,
            ..self
        })
    }
}

/// The hashing flags' defaults (argon2id's costs are OWASP's): the one place each is
/// written, read by clap's attributes and by [`HashSettings::default`].
pub mod defaults {
    use std::time::Duration;

    pub const ARGON2_M_KIB: u32 = 19456;
    pub const ARGON2_T: u32 = 2;
    pub const ARGON2_P: u32 = 1;
    pub const HASH_CONCURRENCY: usize = 0;
    /// How long a caller waits for a hashing slot (the server passes the pool's acquire
    /// timeout instead).
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
}

/// The flags' defaults.
impl Default for HashSettings {
    fn default() -> Self {
        HashSettings::new(
            defaults::ARGON2_M_KIB,
            defaults::ARGON2_T,
            defaults::ARGON2_P,
        )
        .expect("the OWASP argon2 parameters are valid")
    }
}

/// The hashing flags, flattened into the server's command line by `config.rs`.
#[derive(Debug, Clone, clap::Args)]
pub struct HashFlags {
    /// argon2id memory cost in KiB (OWASP: 19456).
    #[arg(long, env = "PRODUTO_ARGON2_M_KIB", default_value_t = defaults::ARGON2_M_KIB)]
    pub argon2_m_kib: u32,

    /// argon2id iterations (OWASP: 2).
    #[arg(long, env = "PRODUTO_ARGON2_T", default_value_t = defaults::ARGON2_T)]
    pub argon2_t: u32,

    /// argon2id parallelism (OWASP: 1).
    #[arg(long, env = "PRODUTO_ARGON2_P", default_value_t = defaults::ARGON2_P)]
    pub argon2_p: u32,

    /// Password hashes computed at once (0: one per CPU core).
    #[arg(long, env = "PRODUTO_HASH_CONCURRENCY", default_value_t = defaults::HASH_CONCURRENCY)]
    pub hash_concurrency: usize,
}

impl HashFlags {
    /// The hashing settings; fails on argon2 costs that argon2 refuses. A caller waits for a
    /// hashing slot for `queue_timeout` (the server passes the pool's acquire timeout).
    pub fn settings(&self, queue_timeout: Duration) -> Result<HashSettings, String> {
        let mut settings = HashSettings::new(self.argon2_m_kib, self.argon2_t, self.argon2_p)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        settings.concurrency = self.hash_concurrency;
        settings.queue_timeout = queue_timeout;
        Ok(settings)
    }
}

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    /// One per hashing thread: a caller holds one while its hash is queued or running.
    permits: Arc<Semaphore>,
    threads: HashThreads,
    /// How long a caller may wait for a hashing slot before the server sheds it.
    queue_timeout: Duration,
    /// A real hash of a random password, verified when the user does not exist.
    dummy_hash: Arc<str>,
    /// The most a stored hash may ask for (see [`CostBound`]).
    bound: CostBound,
    /// Held while a memory-hard legacy hash (scrypt, Django's argon2: up to
    /// [`legacy::MAX_MEMORY_KIB`] each) is verified: one at a time, so that a burst of them
    /// holds that memory once, not once per hashing thread.
    memory_hard: Arc<std::sync::Mutex<()>>,
}

/// The most argon2 work a stored hash may ask for: four times the configured cost, and never
/// less than 64 MiB, 16 passes and 16 lanes, so that hashes made before the cost was lowered
/// still verify (and are rehashed). A stored hash is data: a row that says m=4 GiB must not
/// make a hashing thread allocate 4 GiB (and keep it, see `reused_memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostBound {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl CostBound {
    fn over(configured: &Params) -> Self {
        CostBound {
            m_kib: configured.m_cost().saturating_mul(4).max(64 * 1024),
            t: configured.t_cost().saturating_mul(4).max(16),
            p: configured.p_cost().saturating_mul(4).max(16),
        }
    }

    /// Refuses a stored hash asking for more than the bound, before any work is done.
    fn check(&self, stored: &str) -> Result<(), Error> {
        let parsed = PasswordHash::new(stored)
            .map_err(|e| Error::Internal(format!("stored hash is malformed: {e}")))?;
        let params = Params::try_from(&parsed)
            .map_err(|e| Error::Internal(format!("stored hash has bad parameters: {e}")))?;
        if params.m_cost() > self.m_kib || params.t_cost() > self.t || params.p_cost() > self.p {
            return Err(Error::Internal(format!(
                "stored hash refused: it asks for m={} KiB, t={}, p={}, above the bound \
                 m={} KiB, t={}, p={}; reset this user's password",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                self.m_kib,
                self.t,
                self.p
            )));
        }
        Ok(())
    }
}

/// The hash unknown users are verified against: a PHC string with the configured
/// parameters, a random salt and a random output. Verifying costs what verifying a real hash
/// costs (argon2 recomputes the output from the salt and parameters and then compares), and
/// it matches no password. Made without hashing: the server reaches SERVING without
/// spending a hash's ~30 ms on it.
fn dummy_hash(params: &Params) -> Result<String, Error> {
    use password_hash::{Output, ParamsString, rand_core::RngCore};
    let salt = SaltString::generate(&mut OsRng);
    let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    OsRng.fill_bytes(&mut output);
    let internal = |e: password_hash::Error| Error::Internal(format!("dummy hash: {e}"));
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(internal)?),
    };
    Ok(hash.to_string())
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The password does not match.
    No,
    /// It matches.
    Yes,
    /// It matches, and the stored hash used older parameters: here is a new hash to store.
    YesRehashed(String),
}

impl Hasher {
    pub fn new(settings: &HashSettings) -> Result<Self, Error> {
        let bound = CostBound::over(&settings.params);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, settings.params.clone());
        let concurrency = match settings.concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let dummy_hash = dummy_hash(&settings.params)?;
        Ok(Hasher {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency)),
            threads: HashThreads::start(concurrency, IDLE_RELEASE)?,
            queue_timeout: settings.queue_timeout,
            dummy_hash: dummy_hash.into(),
            bound,
            memory_hard: Arc::default(),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, senha: Senha) -> Result<String, Error> {
        let argon2 = self.argon2.clone();
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            reused_memory::hash(&argon2, senha.expose(), salt.as_salt())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("hashing failed: {e}")))
        })
        .await
    }

    /// Whether a stored hash can be kept as it is (an import): an argon2 PHC string within
    /// the [`CostBound`], or a [`legacy`] hash within its caps. The error says why not, and
    /// never quotes the hash.
    pub fn check_stored(&self, stored: &str) -> Result<Format, String> {
        if !is_argon2(stored) {
            return Legacy::parse(stored).map(|legacy| legacy.format());
        }
        let parsed = PasswordHash::new(stored).map_err(|e| format!("argon2: {e}"))?;
        Algorithm::try_from(parsed.algorithm).map_err(|e| format!("argon2: {e}"))?;
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err("argon2: no salt or no hash".into());
        }
        self.bound.check(stored).map_err(|e| match e {
            Error::Internal(message) => format!("argon2: {message}"),
            other => other.to_string(),
        })?;
        Ok(Format::Argon2)
    }

    /// Verifies a password against a stored PHC string, or against the dummy hash when
    /// `stored` is `None`, so that an unknown user costs what a wrong password costs. A stored
    /// hash asking for more work than the [`CostBound`] is refused at once (INTERNAL, and a
    /// log line for the operator): the user cannot log in until the password is reset. A
    /// [`legacy`] hash is verified as [`Hasher::verify_legacy`] says.
    pub async fn verify(&self, senha: Senha, stored: Option<String>) -> Result<Verified, Error> {
        if let Some(stored) = &stored
            && !is_argon2(stored)
        {
            let legacy = Legacy::parse(stored).map_err(|e| {
                Error::Internal(format!(
                    "stored hash refused: {e}; reset this user's password"
                ))
            })?;
            return self.verify_legacy(senha, legacy).await;
        }
        if let Some(stored) = &stored {
            self.bound.check(stored)?;
        }
        let argon2 = self.argon2.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(format!("stored hash is malformed: {e}")))?;
            if !reused_memory::verify(&parsed, senha.expose()) || !known {
                return Ok(Verified::No);
            }
            if Self::is_current(&argon2, &parsed) {
                return Ok(Verified::Yes);
            }
            let salt = SaltString::generate(&mut OsRng);
            let fresh = reused_memory::hash(&argon2, senha.expose(), salt.as_salt())
                .map_err(|e| Error::Internal(format!("rehashing failed: {e}")))?;
            Ok(Verified::YesRehashed(fresh.to_string()))
        })
        .await
    }

    /// An imported user's legacy hash (within its caps, checked by [`Legacy::parse`]), on the
    /// hashing threads. The dummy argon2 verification runs first, whatever the outcome: a
    /// stranger's wrong guess then costs what it costs for an unknown user, plus the legacy
    /// hash's own work (nothing for SHA-256; bcrypt's, PBKDF2's, sha-crypt's, scrypt's or
    /// argon2's cost otherwise, see docs/moving-from-the-old-bot.md). A memory-hard one waits
    /// for the others of its kind (see `memory_hard`). A match is re-hashed with argon2id at once.
    async fn verify_legacy(&self, senha: Senha, legacy: Legacy) -> Result<Verified, Error> {
        let argon2 = self.argon2.clone();
        let dummy = self.dummy_hash.clone();
        let memory_hard = self.memory_hard.clone();
        self.run_blocking(move || {
            let dummy = PasswordHash::new(&dummy)
                .map_err(|e| Error::Internal(format!("dummy hash is malformed: {e}")))?;
            let _ = reused_memory::verify(&dummy, senha.expose());
            let matches = if legacy.memory_kib() > 0 {
                // A panic while verifying cannot leave the `()` inside in a bad state.
                let _one_at_a_time = memory_hard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                legacy.verify(senha.expose())
            } else {
                legacy.verify(senha.expose())
            };
            if !matches {
                return Ok(Verified::No);
            }
            let salt = SaltString::generate(&mut OsRng);
            let fresh = reused_memory::hash(&argon2, senha.expose(), salt.as_salt())
                .map_err(|e| Error::Internal(format!("rehashing failed: {e}")))?;
            Ok(Verified::YesRehashed(fresh.to_string()))
        })
        .await
    }

    /// Whether a stored hash was made with the algorithm and parameters in force now.
    fn is_current(argon2: &Argon2<'_>, parsed: &PasswordHash<'_>) -> bool {
        let Ok(stored) = Params::try_from(parsed) else {
            return false;
        };
        let now = argon2.params();
        parsed.algorithm == Algorithm::Argon2id.ident()
            && stored.m_cost() == now.m_cost()
            && stored.t_cost() == now.t_cost()
            && stored.p_cost() == now.p_cost()
    }

    /// The argon2 working memory the hashing threads hold now, in bytes (0 once they have
    /// been idle for a second: see [`HashThreads`]).
    pub fn memory_held(&self) -> usize {
        self.threads.held.iter().map(|h| h.load(Relaxed)).sum()
    }

    /// Runs CPU-heavy work on the hashing threads, at most `concurrency` at a time, keeping
    /// the caller's span. Waiting for a slot is bounded: past it the call is shed. A caller
    /// that goes away while its hash runs leaves it to finish (argon2 cannot be stopped
    /// midway); the slot is freed when it does. One that goes away while queued costs nothing.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        // Spans for traces (DEBUG): the wait for a slot and a thread, then the hashing.
        let queued = tracing::debug_span!("hashing queue", otel.kind = "internal");
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .instrument(queued.clone())
            .await
            .map_err(|_| Error::Overloaded("server busy hashing passwords, retry later"))?
            .map_err(|_| Error::Internal("hashing pool closed".into()))?;
        let span = tracing::Span::current();
        // The caller's subscriber, also on the hashing thread: spans started or ended there
        // (the queue's, the hashing's) must reach the same one, even when it is not global.
        let dispatch = span
            .with_subscriber(|(_, dispatch)| dispatch.clone())
            .unwrap_or_else(tracing::Dispatch::none);
        let (done, result) = oneshot::channel();
        self.threads.run(Box::new(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let _permit = permit;
                drop(queued);
                // A caller that has gone (deadline, disconnect) while its hash was queued
                // gets no hash: otherwise calls with tiny deadlines would make the server
                // hash for nothing, and hold the slots that the next callers wait for.
                if done.is_closed() {
                    return;
                }
                let hashing = span.in_scope(|| tracing::debug_span!("password hashing"));
                let outcome = hashing.in_scope(work);
                // The caller's span ends on the caller's side, not here after it moved on.
                drop((hashing, span));
                let _ = done.send(outcome);
            })
        }))?;
        result
            .instrument(tracing::Span::current())
            .await
            .map_err(|_| Error::Internal("hashing thread ended without answering".into()))?
    }
}

/// Whether a stored hash is an argon2 PHC string (`$argon2id$`, `$argon2i$`, `$argon2d$`);
/// anything else is a [`legacy`] hash or no hash at all.
fn is_argon2(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn cheap_settings() -> HashSettings {
        HashSettings::new(1024, 1, 1).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(&cheap_settings()).unwrap();
        let hash = hasher
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        let good = Senha::parse_login("correct horse".into()).unwrap();
        let bad = Senha::parse_login("wrong horse".into()).unwrap();
        assert_eq!(
            hasher.verify(good, Some(hash.clone())).await.unwrap(),
            Verified::Yes
        );
        assert_eq!(hasher.verify(bad, Some(hash)).await.unwrap(), Verified::No);
    }

    #[test]
    fn reused_memory_hashes_are_the_standard_ones() {
        let argon2 = Hasher::new(&cheap_settings()).unwrap().argon2;
        let salt = SaltString::generate(&mut OsRng);
        let ours = reused_memory::hash(&argon2, b"correct horse", salt.as_salt()).unwrap();
        let standard = argon2.hash_password(b"correct horse", &salt).unwrap();
        assert_eq!(ours.to_string(), standard.to_string());
        assert!(argon2.verify_password(b"correct horse", &ours).is_ok());
        assert!(reused_memory::verify(&standard, b"correct horse"));
        assert!(!reused_memory::verify(&standard, b"correct horsf"));
        // A hash made with other parameters is verified with its own.
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(2048, 2, 1, None).unwrap(),
        )
        .hash_password(b"x", &salt)
        .unwrap();
        assert!(reused_memory::verify(&other, b"x"));
        assert!(!reused_memory::verify(&other, b"y"));
    }

    #[tokio::test]
    async fn a_stored_hash_asking_for_4_gib_is_refused_at_once() {
        let hasher = Hasher::new(&cheap_settings()).unwrap();
        // A real PHC string whose parameters were edited to m=4 GiB.
        let real = hasher
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        let planted = real.replace("m=1024,", "m=4194304,");
        assert_ne!(planted, real);
        let started = std::time::Instant::now();
        let good = Senha::parse_login("correct horse".into()).unwrap();
        let err = hasher.verify(good, Some(planted)).await.unwrap_err();
        assert!(err.to_string().contains("m=4194304 KiB"), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Internal);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Within the bound (a cost raised or lowered since) still verifies.
        let old = real.replace("m=1024,", "m=2048,");
        let good = Senha::parse_login("correct horse".into()).unwrap();
        assert_eq!(hasher.verify(good, Some(old)).await.unwrap(), Verified::No);
    }

    #[tokio::test]
    async fn a_legacy_hash_verifies_and_is_rehashed_with_argon2id() {
        let hasher = Hasher::new(&cheap_settings()).unwrap();
        let bcrypt = bcrypt::hash("senha antiga", 4).unwrap();
        assert_eq!(hasher.check_stored(&bcrypt), Ok(Format::Bcrypt));
        let good = Senha::parse_login("senha antiga".into()).unwrap();
        match hasher.verify(good, Some(bcrypt.clone())).await.unwrap() {
            Verified::YesRehashed(fresh) => {
                assert!(
                    fresh.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
                    "{fresh}"
                )
            }
            other => panic!("expected a rehash, got {other:?}"),
        }
        let bad = Senha::parse_login("senha nova".into()).unwrap();
        assert_eq!(
            hasher.verify(bad, Some(bcrypt)).await.unwrap(),
            Verified::No
        );
        // A stored value of no known shape is refused at login as at import.
        let any = Senha::parse_login("x".into()).unwrap();
        let err = hasher.verify(any, Some("texto".into())).await.unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Internal);
        assert!(hasher.check_stored("texto").is_err());
        let planted = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(
            hasher
                .check_stored(planted)
                .unwrap_err()
                .contains("above the bound")
        );
    }

    #[tokio::test]
    #[allow(
        clippy::await_holding_lock,
        reason = "the test holds the lock across the other login on purpose"
    )]
    async fn memory_hard_legacy_hashes_verify_one_at_a_time() {
        let mut settings = cheap_settings();
        settings.concurrency = 2;
        let hasher = Hasher::new(&settings).unwrap();
        // Werkzeug 3.1.8's `generate_password_hash("secret", "scrypt:1024:8:1")`.
        let scrypt = "scrypt:1024:8:1$2dCru39NnXH8aXqN$3445a61967fad29a6ff121581c878730e262f8\
                      002c18bdaceeb2e70486a6a9007162556ee00921925d8f5bf91af6270ce4574654a88516ea\
                      23e9a613553b9f67";
        assert_eq!(hasher.check_stored(scrypt), Ok(Format::WerkzeugScrypt));
        // While another memory-hard verification holds the memory, this one waits...
        let held = hasher.memory_hard.lock().unwrap();
        let waiting = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                let good = Senha::parse_login("secret".into()).unwrap();
                hasher.verify(good, Some(scrypt.into())).await
            }
        });
        // ...and the other hashing thread still serves the rest (a bcrypt hash here).
        let bcrypt = bcrypt::hash("senha antiga", 4).unwrap();
        let good = Senha::parse_login("senha antiga".into()).unwrap();
        assert!(matches!(
            hasher.verify(good, Some(bcrypt)).await.unwrap(),
            Verified::YesRehashed(_)
        ));
        assert!(!waiting.is_finished());
        drop(held);
        match waiting.await.unwrap().unwrap() {
            Verified::YesRehashed(fresh) => assert!(fresh.starts_with("$argon2id$"), "{fresh}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn idle_hashing_threads_give_their_memory_back() {
        let mut hasher = Hasher::new(&cheap_settings()).unwrap();
        hasher.threads = HashThreads::start(2, Duration::from_secs(2)).unwrap();
        let hash = hasher
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        // m = 1024 KiB: the thread that hashed keeps one block of that size (counted just
        // after it answered) until it has been idle for 2 s, then gives it back.
        let wait_for = async |what: &str, done: &dyn Fn(usize) -> bool| {
            let started = std::time::Instant::now();
            while !done(hasher.memory_held()) {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{what}: held {}",
                    hasher.memory_held()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        wait_for("kept", &|held| held == 1024 * 1024).await;
        wait_for("given back", &|held| held == 0).await;
        // And a thread that gave its block back hashes again.
        let good = Senha::parse_login("correct horse".into()).unwrap();
        assert_eq!(
            hasher.verify(good, Some(hash)).await.unwrap(),
            Verified::Yes
        );
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_stored_hash_costs() {
        // The same algorithm, version, costs, salt length and output length: verifying it is
        // the same argon2 work as verifying a user's hash made by this server.
        let hasher = Hasher::new(&HashSettings::new(2048, 2, 1).unwrap()).unwrap();
        let stored = hasher
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        let (dummy, stored) = (
            PasswordHash::new(&hasher.dummy_hash).unwrap(),
            PasswordHash::new(&stored).unwrap(),
        );
        assert_eq!(dummy.algorithm, stored.algorithm);
        assert_eq!(dummy.version, stored.version);
        assert_eq!(dummy.params, stored.params);
        assert_eq!(dummy.salt.map(|s| s.len()), stored.salt.map(|s| s.len()));
        assert_eq!(dummy.hash.map(|h| h.len()), stored.hash.map(|h| h.len()));
        // It is a well-formed argon2id hash that argon2 itself verifies (and refuses).
        assert_eq!(
            Argon2::default().verify_password(b"correct horse", &dummy),
            Err(password_hash::Error::Password)
        );
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let hasher = Hasher::new(&cheap_settings()).unwrap();
        let any = Senha::parse_login("whatever".into()).unwrap();
        assert_eq!(hasher.verify(any, None).await.unwrap(), Verified::No);
    }

    #[tokio::test]
    async fn hashes_with_old_parameters_are_rehashed_on_login() {
        let old = Hasher::new(&cheap_settings()).unwrap();
        let hash = old
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        let new = Hasher::new(&HashSettings::new(1024, 2, 1).unwrap()).unwrap();
        let good = Senha::parse_login("correct horse".into()).unwrap();
        match new.verify(good, Some(hash)).await.unwrap() {
            Verified::YesRehashed(fresh) => assert!(fresh.contains("m=1024,t=2,p=1"), "{fresh}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }
}
