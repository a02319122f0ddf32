//! `produto.v1.ProdutoService`: VerificarLogin, ObterNivel, AdicionarUsuario.

use tonic::{Request, Response, Status};

use crate::{
    Error,
    auth::AdminToken,
    db::Db,
    domain::{Nivel, Senha, Usuario},
    password::{Hasher, Verified},
    pb::{self, produto_service_server::ProdutoService},
    throttle::{Attempt, LoginThrottle},
};

/// The handlers: parse at the edge, then call the database and the hasher.
#[derive(Clone)]
pub struct ProdutoSvc {
    db: Db,
    hasher: Hasher,
    admin: AdminToken,
    throttle: LoginThrottle,
}

impl ProdutoSvc {
    pub fn new(db: Db, hasher: Hasher, admin: AdminToken, throttle: LoginThrottle) -> Self {
        ProdutoSvc {
            db,
            hasher,
            admin,
            throttle,
        }
    }
}

impl ProdutoSvc {
    /// Whether a failure of the throttling table is the primary being unreachable while
    /// replicas can still serve logins. Then the login goes on unthrottled (fails open), and
    /// says so in the log: a primary outage must not become an outage of every login, which
    /// is what the replicas are for, and what an attacker gains is bounded by the hashing
    /// rate (`PRODUTO_HASH_CONCURRENCY` argon2 verifications at a time) for the length of the
    /// outage. Without replicas nothing changes: the login fails UNAVAILABLE as before.
    fn throttle_unreachable(&self, e: &Error) -> bool {
        let unreachable = matches!(e, Error::Unavailable(_) | Error::DatabaseDown(_))
            && self.db.servers().has_replicas();
        if unreachable {
            tracing::warn!(error = %e, "throttling table unreachable: login checked unthrottled");
        }
        unreachable
    }
}

#[tonic::async_trait]
impl ProdutoService for ProdutoSvc {
    async fn verificar_login(
        &self,
        request: Request<pb::VerificarLoginRequest>,
    ) -> Result<Response<pb::VerificarLoginResponse>, Status> {
        let caller = self.throttle.caller(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_login(req.senha)?;

        // The attempt counts from here, before the password is looked at. With replicas, a
        // primary that cannot be reached does not stop logins: they go on unthrottled (see
        // `throttle_unreachable`), the credentials read from a replica.
        let attempt = match self.throttle.begin(&self.db, &usuario, &caller).await {
            Ok(attempt) => attempt,
            Err(e) if self.throttle_unreachable(&e) => Attempt::Unthrottled,
            Err(e) => return Err(e.into()),
        };
        let pending = self.throttle.pending(&self.db, &usuario, &caller, attempt);
        let credentials = self.db.credentials(&usuario).await?;
        // An unknown user, or a refused attempt, is verified against the dummy hash: the
        // same work and the same answer as a wrong password.
        let (stored, id, nivel) = match credentials {
            Some(c) if !attempt.is_refused() => (Some(c.senha_hash), c.id, c.nivel),
            _ => (None, 0, 0),
        };
        if stored.is_some() {
            self.db.stats().record_password_verification();
        }
        // A rehash replaces the row's hash only if it is still this one.
        let previous = stored.clone().unwrap_or_default();
        let verified = self.hasher.verify(senha, stored).await;
        // From here the outcome reaches the caller: the attempt stays counted.
        pending.settle();
        let verified = match verified {
            Ok(verified) => verified,
            Err(e) => {
                // Not checked: the attempt is given back (the error is what the caller sees).
                if let Err(refund) = self
                    .throttle
                    .not_checked(&self.db, &usuario, &caller, attempt)
                    .await
                {
                    tracing::warn!(error = %refund, "could not refund an unchecked login attempt");
                }
                return Err(e.into());
            }
        };
        let valido = match verified {
            Verified::No => false,
            Verified::Yes => true,
            Verified::YesRehashed(fresh) => {
                // The login stands even if storing the upgraded hash fails; the next login
                // tries again. An imported user's legacy hash is gone after this.
                if let Err(e) = self.db.update_hash(id, &previous, &fresh).await {
                    tracing::warn!(error = %e, "could not store the rehashed password");
                }
                true
            }
        };
        if valido {
            match self
                .throttle
                .succeeded(&self.db, &usuario, &caller, attempt)
                .await
            {
                Err(e) if !self.throttle_unreachable(&e) => return Err(e.into()),
                _ => {}
            }
        }
        if attempt.is_refused() {
            self.db.stats().record_login_throttled();
            tracing::warn!(
                %usuario,
                identity = %caller.identity,
                peer = ?caller.peer,
                limit = if attempt == Attempt::RefusedCaller { "caller" } else { "username" },
                "login refused: too many attempts"
            );
        }
        Ok(Response::new(pb::VerificarLoginResponse {
            valido,
            nivel: if valido { nivel } else { 0 },
        }))
    }

    async fn obter_nivel(
        &self,
        request: Request<pb::ObterNivelRequest>,
    ) -> Result<Response<pb::ObterNivelResponse>, Status> {
        let usuario = Usuario::parse(request.into_inner().usuario)?;
        match self.db.nivel(&usuario).await? {
            Some(nivel) => Ok(Response::new(pb::ObterNivelResponse { nivel })),
            None => Err(Error::NotFound(format!("usuario '{usuario}' not found")).into()),
        }
    }

    async fn adicionar_usuario(
        &self,
        request: Request<pb::AdicionarUsuarioRequest>,
    ) -> Result<Response<pb::AdicionarUsuarioResponse>, Status> {
        // Authenticate before looking at the fields: strangers learn nothing about them.
        self.admin.check(request.metadata())?;
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_new(req.senha)?;
        let nivel = Nivel::parse(req.nivel)?;

        let hash = self.hasher.hash(senha).await?;
        let id = self.db.insert_user(&usuario, &hash, nivel).await?;
        tracing::info!(id, nivel = nivel.get(), "user added");
        Ok(Response::new(pb::AdicionarUsuarioResponse { id }))
    }
}
