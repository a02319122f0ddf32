//! `produto.v1.ProdutoService`: VerificarLogin, ObterNivel, AdicionarUsuario.

use tonic::{Request, Response, Status};

use crate::{
    Error,
    auth::AdminToken,
    db::Db,
    domain::{Nivel, Senha, Usuario},
    password::{Hasher, Verified},
    pb::{self, produto_service_server::ProdutoService},
    throttle::{ATTEMPT_MAX, Outcome, Throttle, Verdict},
};

/// The handlers: parse at the edge, then call the database and the hasher.
#[derive(Clone)]
pub struct ProdutoSvc {
    db: Db,
    hasher: Hasher,
    admin: AdminToken,
    throttle: Throttle,
}

impl ProdutoSvc {
    pub fn new(db: Db, hasher: Hasher, admin: AdminToken, throttle: Throttle) -> Self {
        ProdutoSvc {
            db,
            hasher,
            admin,
            throttle,
        }
    }
}

#[tonic::async_trait]
impl ProdutoService for ProdutoSvc {
    async fn verificar_login(
        &self,
        request: Request<pb::VerificarLoginRequest>,
    ) -> Result<Response<pb::VerificarLoginResponse>, Status> {
        let caller = self.throttle.policy().caller(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_login(req.senha)?;

        // The attempt counts from here, before the password is looked at (in memory while
        // the primary is down and replicas serve the credentials: see `crate::throttle`).
        let claim = self.throttle.begin(&usuario, &caller).await?;
        let verdict = claim.verdict();
        if let Verdict::Refused { limit, retry_after } = verdict {
            self.db.stats().record_login_throttled();
            tracing::warn!(
                %usuario,
                identity = %caller.identity,
                peer = ?caller.peer,
                limit = limit.as_str(),
                "login refused: too many failed attempts"
            );
            // A trusted service is told the truth, so that its user reads "too many
            // attempts" rather than "wrong password"; nothing else needs hiding from it.
            if self.throttle.policy().tells(&caller) {
                return Err(Error::LoginThrottled {
                    limit: limit.as_str(),
                    retry_after,
                }
                .into());
            }
        }
        // The same work whatever the user and the verdict: one credential lookup and one
        // argon2 verification, of the dummy hash for an unknown user or a refused attempt.
        // Bounded, so that an attempt never outlives its claim (see `ATTEMPT_MAX`): past it,
        // the claim is dropped unfinished and given back.
        let checked = tokio::time::timeout(ATTEMPT_MAX, async {
            let credentials = self.db.credentials(&usuario).await?;
            let (stored, id, nivel) = match credentials {
                Some(c) if !verdict.is_refused() => (Some(c.senha_hash), c.id, c.nivel),
                _ => (None, 0, 0),
            };
            if stored.is_some() {
                self.db.stats().record_password_verification();
            }
            Ok::<_, Error>((self.hasher.verify(senha, stored).await?, id, nivel))
        })
        .await
        .map_err(|_| Error::Overloaded("the login took too long, retry later"))?;
        let (verified, id, nivel) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // Not checked: the attempt is given back (the error is what the caller sees).
                claim.finish(Outcome::NotChecked).await;
                return Err(e.into());
            }
        };
        let valido = match verified {
            Verified::No => false,
            Verified::Yes => true,
            Verified::YesRehashed(fresh) => {
                // The login stands even if storing the upgraded hash fails; the next login
                // tries again.
                if let Err(e) = self.db.update_hash(id, &fresh).await {
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
