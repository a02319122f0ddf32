//! Sessions kept by the service (docs/sessions.md): opened by a login, named afterwards by
//! their token (`produto-session` metadata) or, for the authenticated caller that opened one
//! for an end user, by that end user (`produto-end-user`); each read joins the user's row,
//! so the level is the current one and a removed user's sessions are gone (ON DELETE
//! CASCADE). An absolute lifetime and an idle timeout end them; expired ones are deleted on
//! read and by a background purge; a user's count is bounded (the oldest go).
//!
//! Here the handle and the request's naming of its session; beside it the settings, the
//! tokens, the SQL, admin rights ([`rights`]) and the RPCs' bodies ([`rpc`]).

pub mod rights;
pub mod rpc;
mod settings;
pub mod store;
pub mod token;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::{
    Error,
    audit::{Audit, now_ms},
    error::Reason,
    pb,
};

pub use rights::{Acting, Actor, Rights};
pub use settings::{SessionFlags, SessionSettings};
use store::{Key, NewSession, Row};

/// The metadata key that carries a session token.
pub const SESSION_KEY: &str = "produto-session";
/// The metadata key through which a caller names its end user (shared with throttling).
pub use crate::login::throttle::END_USER_KEY;
/// Longest end-user name a session is bound to.
const END_USER_MAX_LEN: usize = 128;
/// Most sessions ListarSessoes shows (the per-user bound keeps them fewer).
const LIST_MAX: i64 = 1000;
/// Rows deleted per purge statement.
const PURGE_BATCH: i64 = 1000;

/// Who a call comes from, as sessions and the audit trail see it: the authenticated caller,
/// the end user it names, and the session token it sends (hashed at once).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The caller named by its token or certificate (`None`: anonymous).
    pub chamador: Option<Arc<str>>,
    /// The caller named itself with a bearer token (so `authorization` is not an admin token).
    pub chamador_by_token: bool,
    /// `produto-end-user`, when well formed: recorded in the audit trail as claimed; binds a
    /// session only for an authenticated caller.
    pub usuario_final: Option<String>,
    /// The SHA-256 of `produto-session`; `Err(())` when one was sent but is not a token of
    /// this server's shape.
    token_hash: Option<Result<String, ()>>,
}

impl Origin {
    /// Reads a request's caller, end user and session token.
    pub fn of<T>(request: &Request<T>) -> Origin {
        let caller = crate::auth::caller(request);
        let metadata = request.metadata();
        let usuario_final = metadata
            .get(END_USER_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|name| {
                !name.is_empty()
                    && name.len() <= END_USER_MAX_LEN
                    && name.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned);
        let token_hash = metadata.get(SESSION_KEY).map(|v| {
            v.to_str()
                .ok()
                .filter(|t| token::well_formed(t))
                .map(token::hash)
                .ok_or(())
        });
        Origin {
            chamador: caller.map(|c| c.name.clone()),
            chamador_by_token: caller.is_some_and(|c| c.via == crate::auth::Via::Token),
            usuario_final,
            token_hash,
        }
    }

    /// How the call names a session: its token first, else its end user (an authenticated
    /// caller's only). `None`: it names none. `Some(Err)`: a malformed token.
    fn key(&self) -> Option<Result<Key, ()>> {
        if let Some(hash) = &self.token_hash {
            return Some(hash.clone().map(Key::TokenHash));
        }
        match (&self.chamador, &self.usuario_final) {
            (Some(chamador), Some(usuario_final)) => Some(Ok(Key::EndUser {
                chamador: chamador.to_string(),
                usuario_final: usuario_final.clone(),
            })),
            _ => None,
        }
    }

    /// Whether the call names a session by its end user (not by a token).
    pub fn names_end_user(&self) -> bool {
        self.token_hash.is_none() && self.chamador.is_some() && self.usuario_final.is_some()
    }

    /// Whether the call names a session at all.
    pub fn names_session(&self) -> bool {
        self.key().is_some()
    }
}

/// The session a call named, as it is now: its user's name and current level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current(Row);

impl Current {
    pub fn id(&self) -> i64 {
        self.0.id
    }
    pub fn usuario_id(&self) -> i64 {
        self.0.usuario_id
    }
    pub fn usuario(&self) -> &str {
        &self.0.usuario
    }
    pub fn nivel(&self) -> i32 {
        self.0.nivel
    }
    /// The session as answered, with the admin level `nivel_admin`.
    pub fn to_pb(&self, nivel_admin: i32) -> pb::Sessao {
        to_pb(&self.0, nivel_admin)
    }
}

fn to_pb(row: &Row, nivel_admin: i32) -> pb::Sessao {
    pb::Sessao {
        id: row.id,
        usuario: row.usuario.clone(),
        nivel: row.nivel,
        criada_em_unix_ms: row.criada_ms,
        expira_em_unix_ms: row.expira_ms,
        usada_em_unix_ms: row.usada_ms,
        chamador: row.chamador.clone().unwrap_or_default(),
        usuario_final: row.usuario_final.clone().unwrap_or_default(),
        nivel_admin,
    }
}

/// The answer to a call that names no session.
pub fn missing() -> Error {
    Error::Unauthenticated(
        Reason::SessionMissing,
        "no session: send `produto-session: <token>` (from AbrirSessao), or, as an \
         authenticated caller, the `produto-end-user` a session was opened for",
    )
}

/// The answer to a session that is unknown, ended, expired or idle too long: one answer, so
/// that a guessed token learns nothing.
pub fn expired() -> Error {
    Error::Unauthenticated(
        Reason::SessionExpired,
        "the session has expired or ended: log in again (AbrirSessao)",
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The sessions' handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: crate::db::Db,
    settings: SessionSettings,
}

impl Sessions {
    pub fn new(db: crate::db::Db, settings: SessionSettings) -> Self {
        Sessions { db, settings }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Opens a session for user `usuario_id` (whose password was just checked), bound to the
    /// origin's end user when an authenticated caller names one. The token is returned
    /// once; only its hash is stored.
    pub async fn open(&self, usuario_id: i64, origin: &Origin) -> Result<String, Error> {
        let (token, hash) = token::generate();
        let now = now_ms();
        let bound = match (&origin.chamador, &origin.usuario_final) {
            (Some(c), Some(u)) => Some((&**c, u.as_str())),
            _ => None,
        };
        store::open(
            &self.db,
            &NewSession {
                token_hash: &hash,
                usuario_id,
                bound,
                now_ms: now,
                expira_ms: now.saturating_add(millis(self.settings.lifetime)),
                idle_before_ms: now.saturating_sub(millis(self.settings.idle_timeout)),
                max_per_user: i64::from(self.settings.max_per_user),
            },
        )
        .await?;
        Ok(token)
    }

    /// The session `token` names (right after opening it, for the answer).
    pub async fn by_token(&self, token: &str) -> Result<Current, Error> {
        self.find(&Key::TokenHash(token::hash(token))).await
    }

    /// The session the call names, with its user's current level; SESSION_MISSING when it
    /// names none, SESSION_EXPIRED when it is unknown, ended, expired or idle too long (an
    /// expired one is deleted here). A use is recorded when the last is older than
    /// [`SessionSettings::touch_after`].
    pub async fn current(&self, origin: &Origin) -> Result<Current, Error> {
        match origin.key() {
            None => Err(missing()),
            Some(Err(())) => Err(expired()),
            Some(Ok(key)) => self.find(&key).await,
        }
    }

    async fn find(&self, key: &Key) -> Result<Current, Error> {
        let Some(row) = store::find(&self.db, key).await? else {
            return Err(match key {
                // No session for this end user: never opened, or ended and gone.
                Key::EndUser { .. } => missing(),
                Key::TokenHash(_) => expired(),
            });
        };
        let now = now_ms();
        let idle = millis(self.settings.idle_timeout);
        if now >= row.expira_ms || now.saturating_sub(row.usada_ms) >= idle {
            store::end(&self.db, row.id).await?;
            return Err(expired());
        }
        if now.saturating_sub(row.usada_ms) >= millis(self.settings.touch_after()) {
            store::touch(&self.db, row.id, now).await?;
        }
        Ok(Current(row))
    }

    /// Ends the session the call names.
    pub async fn end_current(&self, origin: &Origin) -> Result<(), Error> {
        match self.current(origin).await {
            Ok(current) => store::end(&self.db, current.id()).await.map(|_| ()),
            // Ending what is already gone is done.
            Err(Error::Unauthenticated(Reason::SessionExpired, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ends every session of user `usuario_id` but `keep`; how many ended.
    pub async fn end_all(&self, usuario_id: i64, keep: Option<i64>) -> Result<u64, Error> {
        store::end_all(&self.db, usuario_id, keep).await
    }

    /// Ends every session of the user named `usuario` but `keep`; `None` when there is no
    /// such user.
    pub async fn end_all_of(&self, usuario: &str, keep: Option<i64>) -> Result<Option<u64>, Error> {
        match store::user_id(&self.db, usuario).await? {
            Some(id) => self.end_all(id, keep).await.map(Some),
            None => Ok(None),
        }
    }

    /// The open sessions of the user named `usuario`, newest first.
    pub async fn list(&self, usuario: &str) -> Result<Vec<pb::Sessao>, Error> {
        let rows = store::list(&self.db, usuario, self.bounds(), LIST_MAX).await?;
        let nivel_admin = self.settings.admin_nivel;
        Ok(rows.iter().map(|row| to_pb(row, nivel_admin)).collect())
    }

    /// Sessions stored now, expired or not (tests, the bench).
    pub async fn count(&self) -> Result<i64, Error> {
        store::count(&self.db).await
    }

    /// `(now, unused since)`: a session expired at the first or unused since the second is
    /// over.
    fn bounds(&self) -> (i64, i64) {
        let now = now_ms();
        (now, now.saturating_sub(millis(self.settings.idle_timeout)))
    }

    /// Deletes every expired and idle session, in batches; how many.
    pub async fn purge(&self) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let deleted = store::purge(&self.db, self.bounds(), PURGE_BATCH).await?;
            total += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Every purge interval until `stop`: deletes expired and idle sessions and the audit
    /// entries past their retention. A failed purge is logged and tried again next time.
    pub async fn purge_until_stopped(self, audit: Audit, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.settings.purge_interval) => {}
            }
            if !self.db.is_migrated() {
                continue;
            }
            match self.purge().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired sessions purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
            }
            match audit.purge(self.settings.audit_retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit entries past retention purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge old audit entries"),
            }
        }
    }
}
