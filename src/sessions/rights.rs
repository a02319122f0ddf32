//! Admin rights: the admin token (bootstrap, automation), or a session whose user's level,
//! read at the call, is at least the admin level. Every refusal is recorded in the audit
//! trail, and every admin action is recorded with its actor ([`Rights::record`]).

use tonic::Request;

use super::{Current, Origin, Sessions};
use crate::{
    Error,
    audit::{ACTOR_ADMIN_TOKEN, ACTOR_ANONYMOUS, Acao, Audit, Entry, actor_user},
    auth::{ADMIN_TOKEN_KEY, AdminToken},
    error::Reason,
};

/// Who acts.
#[derive(Debug, Clone)]
pub enum Actor {
    AdminToken,
    /// A user: through a session, or (AlterarSenha of its own) its own password.
    User {
        usuario: String,
        session: Option<Current>,
    },
}

/// An allowed call: who acts, and where from.
#[derive(Debug, Clone)]
pub struct Acting {
    pub actor: Actor,
    pub origin: Origin,
}

impl Acting {
    /// The actor as the audit trail names it.
    pub fn ator(&self) -> String {
        match &self.actor {
            Actor::AdminToken => ACTOR_ADMIN_TOKEN.to_owned(),
            Actor::User { usuario, .. } => actor_user(usuario),
        }
    }

    /// The session the call came with, if any.
    pub fn session(&self) -> Option<&Current> {
        match &self.actor {
            Actor::User { session, .. } => session.as_ref(),
            Actor::AdminToken => None,
        }
    }
}

/// The admin check, over the admin token and sessions, recording into the audit trail.
#[derive(Clone, Debug)]
pub struct Rights {
    sessions: Sessions,
    admin: AdminToken,
    audit: Audit,
}

impl Rights {
    pub fn new(sessions: Sessions, admin: AdminToken, audit: Audit) -> Self {
        Rights {
            sessions,
            admin,
            audit,
        }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Whether the call may do an admin action: the admin token (in `produto-admin-token`,
    /// or in `authorization` when no session is named), or a session at the admin level.
    /// A refusal (not an outage) is recorded as `admin_recusado`, naming `tried` (the
    /// action's or the RPC's name) and `alvo`, before it is returned.
    pub async fn admin<T>(
        &self,
        request: &Request<T>,
        tried: &'static str,
        alvo: Option<&str>,
    ) -> Result<Acting, Error> {
        let origin = Origin::of(request);
        let (user, result) = self.decide(request, &origin).await;
        match result {
            Ok(actor) => Ok(Acting { actor, origin }),
            Err(e) => {
                if matches!(
                    e,
                    Error::Unauthenticated(..)
                        | Error::PermissionDenied(..)
                        | Error::NotAdmin { .. }
                ) {
                    let ator = user
                        .as_deref()
                        .map_or_else(|| ACTOR_ANONYMOUS.to_owned(), actor_user);
                    let detalhe = format!("tentou={tried}");
                    self.audit
                        .record(Entry {
                            acao: Acao::AdminRecusado,
                            resultado: e.reason().as_str(),
                            ator: &ator,
                            chamador: origin.chamador.as_deref(),
                            usuario_final: origin.usuario_final.as_deref(),
                            alvo,
                            detalhe: Some(&detalhe),
                        })
                        .await;
                    tracing::warn!(%ator, tried, reason = e.reason().as_str(), "admin call refused");
                }
                Err(e)
            }
        }
    }

    /// The decision, and the user it was about when a session named one.
    async fn decide<T>(
        &self,
        request: &Request<T>,
        origin: &Origin,
    ) -> (Option<String>, Result<Actor, Error>) {
        let metadata = request.metadata();
        if metadata.contains_key(ADMIN_TOKEN_KEY) {
            return (None, self.admin.check(metadata).map(|()| Actor::AdminToken));
        }
        if !origin.names_session() {
            return (None, self.admin.check(metadata).map(|()| Actor::AdminToken));
        }
        match self.sessions.current(origin).await {
            Ok(current) => {
                let usuario = current.usuario().to_owned();
                let admin_nivel = self.sessions.settings().admin_nivel;
                let result = if current.nivel() >= admin_nivel {
                    Ok(Actor::User {
                        usuario: usuario.clone(),
                        session: Some(current),
                    })
                } else {
                    Err(Error::NotAdmin { admin_nivel })
                };
                (Some(usuario), result)
            }
            // An end user without a session, from a caller named by certificate: its
            // `authorization` may be the admin token, as before sessions.
            Err(Error::Unauthenticated(Reason::SessionMissing, _))
                if origin.names_end_user()
                    && !origin.chamador_by_token
                    && metadata.contains_key("authorization") =>
            {
                (None, self.admin.check(metadata).map(|()| Actor::AdminToken))
            }
            Err(e) => (None, Err(e)),
        }
    }

    /// Records an allowed action (`resultado` `ok`) with its actor.
    pub async fn record(
        &self,
        acting: &Acting,
        acao: Acao,
        alvo: Option<&str>,
        detalhe: Option<&str>,
    ) {
        let ator = acting.ator();
        self.audit
            .record(Entry {
                acao,
                resultado: "ok",
                ator: &ator,
                chamador: acting.origin.chamador.as_deref(),
                usuario_final: acting.origin.usuario_final.as_deref(),
                alvo,
                detalhe,
            })
            .await;
    }
}
