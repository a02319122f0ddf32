//! argon2id password hashing, off the async runtime and bounded.
//!
//! Hashing is CPU work of tens of milliseconds: it runs on tokio's blocking pool, at most
//! `concurrency` at a time, so that logins can never starve the runtime that serves the
//! cheap RPCs. Unknown users are verified against a dummy hash so that they cost the same.

use std::{sync::Arc, time::Duration};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use password_hash::{SaltString, rand_core::OsRng};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::{Config, Error, domain::Senha};

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// How long a caller may wait for a hashing slot before the server sheds it.
    queue_timeout: Duration,
    /// A real hash of a random password, verified when the user does not exist.
    dummy_hash: Arc<str>,
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
    /// The argon2 parameters the configuration asks for.
    pub fn params(config: &Config) -> Result<Params, argon2::Error> {
        Params::new(config.argon2_m_kib, config.argon2_t, config.argon2_p, None)
    }

    pub fn new(config: &Config) -> Result<Self, Error> {
        let params = Self::params(config).map_err(|e| Error::Internal(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let concurrency = match config.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(salt.as_str().as_bytes(), &salt)
            .map_err(|e| Error::Internal(e.to_string()))?
            .to_string();
        Ok(Hasher {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_timeout: config.acquire_timeout,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, senha: Senha) -> Result<String, Error> {
        let argon2 = self.argon2.clone();
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(senha.expose(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("hashing failed: {e}")))
        })
        .await
    }

    /// Verifies a password against a stored PHC string, or against the dummy hash when
    /// `stored` is `None`, so that an unknown user costs what a wrong password costs.
    pub async fn verify(&self, senha: Senha, stored: Option<String>) -> Result<Verified, Error> {
        let argon2 = self.argon2.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(format!("stored hash is malformed: {e}")))?;
            if argon2.verify_password(senha.expose(), &parsed).is_err() || !known {
                return Ok(Verified::No);
            }
            if Self::is_current(&argon2, &parsed) {
                return Ok(Verified::Yes);
            }
            let salt = SaltString::generate(&mut OsRng);
            let fresh = argon2
                .hash_password(senha.expose(), &salt)
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

    /// Runs CPU-heavy work on the blocking pool, at most `concurrency` at a time, keeping
    /// the caller's span. Waiting for a slot is bounded: past it the call is shed.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Error::Overloaded("server busy hashing passwords, retry later"))?
            .map_err(|_| Error::Internal("hashing pool closed".into()))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .instrument(tracing::Span::current())
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_config() -> Config {
        let mut config = Config::with_database("sqlite::memory:");
        config.argon2_m_kib = 1024;
        config.argon2_t = 1;
        config
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(&cheap_config()).unwrap();
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

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let hasher = Hasher::new(&cheap_config()).unwrap();
        let any = Senha::parse_login("whatever".into()).unwrap();
        assert_eq!(hasher.verify(any, None).await.unwrap(), Verified::No);
    }

    #[tokio::test]
    async fn hashes_with_old_parameters_are_rehashed_on_login() {
        let old = Hasher::new(&cheap_config()).unwrap();
        let hash = old
            .hash(Senha::parse_new("correct horse".into()).unwrap())
            .await
            .unwrap();
        let mut config = cheap_config();
        config.argon2_t = 2;
        let new = Hasher::new(&config).unwrap();
        let good = Senha::parse_login("correct horse".into()).unwrap();
        match new.verify(good, Some(hash)).await.unwrap() {
            Verified::YesRehashed(fresh) => assert!(fresh.contains("m=1024,t=2,p=1"), "{fresh}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }
}
