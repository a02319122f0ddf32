//! The bodies of the session RPCs but AbrirSessao (which is a login, in the service):
//! ObterSessao, EncerrarSessao, ListarSessoes, EncerrarSessoes, and ListarAuditoria. Each
//! takes the request whole; the service's methods only call them.

use tonic::Request;

use super::{Acting, Actor, Origin, Rights};
use crate::{Error, audit::Acao, domain::Usuario, pb};

impl Rights {
    /// ObterSessao: the session the call names, with its user's current level.
    pub async fn obter_sessao(
        &self,
        request: Request<pb::ObterSessaoRequest>,
    ) -> Result<pb::ObterSessaoResponse, Error> {
        let current = self.sessions().current(&Origin::of(&request)).await?;
        Ok(pb::ObterSessaoResponse {
            sessao: Some(current.to_pb(self.sessions().settings().admin_nivel)),
        })
    }

    /// EncerrarSessao: ends the session the call names (done if already gone).
    pub async fn encerrar_sessao(
        &self,
        request: Request<pb::EncerrarSessaoRequest>,
    ) -> Result<pb::EncerrarSessaoResponse, Error> {
        self.sessions().end_current(&Origin::of(&request)).await?;
        Ok(pb::EncerrarSessaoResponse {})
    }

    /// ListarSessoes: a user's open sessions, for that user's session or an admin.
    pub async fn listar_sessoes(
        &self,
        request: Request<pb::ListarSessoesRequest>,
    ) -> Result<pb::ListarSessoesResponse, Error> {
        let (acting, usuario) = self
            .own_or_admin(&request, &request.get_ref().usuario, "listar_sessoes")
            .await?;
        drop(acting);
        Ok(pb::ListarSessoesResponse {
            sessoes: self.sessions().list(&usuario).await?,
        })
    }

    /// EncerrarSessoes: ends a user's sessions (the user's own session, or an admin),
    /// keeping the calling one when asked. Recorded in the audit trail.
    pub async fn encerrar_sessoes(
        &self,
        request: Request<pb::EncerrarSessoesRequest>,
    ) -> Result<pb::EncerrarSessoesResponse, Error> {
        let (acting, usuario) = self
            .own_or_admin(
                &request,
                &request.get_ref().usuario,
                Acao::SessoesEncerradas.as_str(),
            )
            .await?;
        let keep = request
            .get_ref()
            .manter_atual
            .then(|| acting.session().map(super::Current::id))
            .flatten();
        let Some(encerradas) = self.sessions().end_all_of(&usuario, keep).await? else {
            return Err(Error::NotFound(format!("usuario '{usuario}' not found")));
        };
        let detalhe = format!("encerradas={encerradas}");
        self.record(
            &acting,
            Acao::SessoesEncerradas,
            Some(&usuario),
            Some(&detalhe),
        )
        .await;
        Ok(pb::EncerrarSessoesResponse {
            encerradas: i64::try_from(encerradas).unwrap_or(i64::MAX),
        })
    }

    /// ListarAuditoria (admins).
    pub async fn listar_auditoria(
        &self,
        request: Request<pb::ListarAuditoriaRequest>,
    ) -> Result<pb::ListarAuditoriaResponse, Error> {
        self.admin(&request, "listar_auditoria", None).await?;
        self.audit().page(request.into_inner()).await
    }

    /// Who acts on `usuario`'s sessions: the caller's own session when `usuario` is empty or
    /// its own user, else an admin. Returns the user meant.
    async fn own_or_admin<T>(
        &self,
        request: &Request<T>,
        usuario: &str,
        tried: &'static str,
    ) -> Result<(Acting, String), Error> {
        let origin = Origin::of(request);
        if origin.names_session()
            && !request
                .metadata()
                .contains_key(crate::auth::ADMIN_TOKEN_KEY)
        {
            let current = self.sessions().current(&origin).await?;
            if usuario.is_empty() || usuario == current.usuario() {
                let usuario = current.usuario().to_owned();
                let acting = Acting {
                    actor: Actor::User {
                        usuario: usuario.clone(),
                        session: Some(current),
                    },
                    origin,
                };
                return Ok((acting, usuario));
            }
        } else if usuario.is_empty() {
            return Err(super::missing());
        }
        let target = Usuario::parse(usuario.to_owned())?;
        let acting = self.admin(request, tried, Some(target.as_str())).await?;
        Ok((acting, target.as_str().to_owned()))
    }
}
