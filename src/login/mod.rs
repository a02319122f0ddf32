//! The login check behind VerificarLogin and a user's own AlterarSenha: the attempt is
//! claimed from the brute-force throttle ([`throttle`]) before the password is looked at,
//! the password is verified against the stored hash (or a dummy one: an unknown user and a
//! refused attempt cost what a wrong password costs), an outdated hash is replaced, and the
//! outcome is recorded before the answer leaves. Its counters are in `counters.rs`.

mod counters;
pub mod throttle;

use std::sync::Arc;

use crate::{
    Error,
    domain::{Senha, Usuario},
    password::{Hasher, Verified},
    users::Users,
};
use throttle::{ATTEMPT_MAX, Caller, Outcome, Throttle, Verdict};

pub use counters::{LoginCounters, LoginSnapshot};

/// A user whose password matched: what VerificarLogin and AlterarSenha go on with.
#[derive(Debug, Clone, Copy)]
pub struct LoggedIn {
    pub id: i64,
    pub nivel: i32,
}

/// The login feature: the users' credentials, the hasher, the throttle and the counters it
/// shares with the throttle.
#[derive(Clone)]
pub struct Login {
    users: Users,
    hasher: Hasher,
    throttle: Throttle,
    counters: Arc<LoginCounters>,
}

impl Login {
    pub fn new(
        users: Users,
        hasher: Hasher,
        throttle: Throttle,
        counters: Arc<LoginCounters>,
    ) -> Self {
        Login {
            users,
            hasher,
            throttle,
            counters,
        }
    }

    /// The throttle: its policy says who the caller is and what a refused caller is told.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The one password check of VerificarLogin and AlterarSenha: throttled (the attempt
    /// counts before the password is looked at), an unknown user and a refused attempt doing
    /// the same work as a wrong password. `None`: no login, whichever of the three it was.
    pub async fn check(
        &self,
        caller: &Caller,
        usuario: &Usuario,
        senha: Senha,
    ) -> Result<Option<LoggedIn>, Error> {
        // The attempt counts from here, before the password is looked at (in memory while
        // the primary is down and replicas serve the credentials: see [`throttle`]).
        let claim = self.throttle.begin(usuario, caller).await?;
        let verdict = claim.verdict();
        if let Verdict::Refused { limit, retry_after } = verdict {
            self.counters.record_throttled();
            tracing::warn!(
                %usuario,
                identity = %caller.identity,
                peer = ?caller.peer,
                limit = limit.as_str(),
                "login refused: too many failed attempts"
            );
            // A trusted service is told the truth, so that its user reads "too many
            // attempts" rather than "wrong password"; nothing else needs hiding from it.
            if self.throttle.policy().tells(caller) {
                return Err(Error::LoginThrottled {
                    limit: limit.as_str(),
                    retry_after,
                });
            }
        }
        // The same work whatever the user and the verdict: one credential lookup and one
        // argon2 verification, of the dummy hash for an unknown user or a refused attempt.
        // Bounded, so that an attempt never outlives its claim (see `ATTEMPT_MAX`): past it,
        // the claim is dropped unfinished and given back.
        let checked = tokio::time::timeout(ATTEMPT_MAX, async {
            let credentials = self.users.credentials(usuario).await?;
            let (stored, id, nivel) = match credentials {
                Some(c) if !verdict.is_refused() => (Some(c.senha_hash), c.id, c.nivel),
                _ => (None, 0, 0),
            };
            if stored.is_some() {
                self.counters.record_password_verification();
            }
            // A rehash replaces the row's hash only if it is still this one.
            let previous = stored.clone().unwrap_or_default();
            let verified = self.hasher.verify(senha, stored).await?;
            Ok::<_, Error>((verified, id, nivel, previous))
        })
        .await
        .map_err(|_| Error::Overloaded("the login took too long, retry later"))?;
        let (verified, id, nivel, previous) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // Not checked: the attempt is given back (the error is what the caller sees).
                claim.finish(Outcome::NotChecked).await;
                return Err(e);
            }
        };
        let valido = match verified {
            Verified::No => false,
            Verified::Yes => true,
            Verified::YesRehashed(fresh) => {
                // The login stands even if storing the upgraded hash fails; the next login
                // tries again. An imported user's legacy hash is gone after this.
                if let Err(e) = self.users.update_hash(id, &previous, &fresh).await {
                    tracing::warn!(error = %e, "could not store the rehashed password");
                }
                true
            }
        };
        // Recorded before the answer leaves: the next attempt sees this one's outcome.
        claim
            .finish(if valido {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            })
            .await;
        Ok(valido.then_some(LoggedIn { id, nivel }))
    }
}
