//! `produto.v1.ProdutoService`: VerificarLogin, ObterNivel, AdicionarUsuario, the
//! administration of users (AlterarSenha, AlterarNivel, RemoverUsuario, ListarUsuarios) and
//! sessions (AbrirSessao here, the others' bodies in `crate::sessions::rpc`). Admin calls are
//! allowed by [`Rights`] (the admin token, or a session at the admin level) and recorded in
//! the audit trail.

use tonic::{Request, Response, Status};

use crate::{
    Error,
    audit::Acao,
    domain::{Nivel, Senha, UserPage, Usuario},
    error::Reason,
    login::Login,
    password::{Hasher, PasswordPolicy},
    pb::{self, produto_service_server::ProdutoService},
    sessions::{Acting, Actor, Origin, Rights},
    users::Users,
};

/// AlterarSenha's answer to a wrong senha_atual, an unknown user and a refused attempt alike.
fn invalid_credentials() -> Error {
    Error::Unauthenticated(
        Reason::InvalidCredentials,
        "usuario or senha_atual is wrong (or too many attempts: wait and retry)",
    )
}

fn not_found(usuario: &Usuario) -> Error {
    Error::NotFound(format!("usuario '{usuario}' not found"))
}

/// The handlers: parse the request into domain values at the edge, call the feature
/// (`users`, `login`), map its answer.
#[derive(Clone)]
pub struct ProdutoSvc {
    users: Users,
    login: Login,
    hasher: Hasher,
    rights: Rights,
    policy: PasswordPolicy,
}

impl ProdutoSvc {
    pub fn new(
        users: Users,
        login: Login,
        hasher: Hasher,
        rights: Rights,
        policy: PasswordPolicy,
    ) -> Self {
        ProdutoSvc {
            users,
            login,
            hasher,
            rights,
            policy,
        }
    }
}

impl ProdutoSvc {
    /// The admin check of an admin RPC doing `acao` on the user `alvo` names (recorded in
    /// the audit entry of a refusal when it is a valid name).
    async fn admin<T>(
        &self,
        request: &Request<T>,
        acao: Acao,
        alvo: &str,
    ) -> Result<Acting, Error> {
        let alvo = Usuario::parse(alvo.to_owned()).ok();
        self.rights
            .admin(request, acao.as_str(), alvo.as_ref().map(Usuario::as_str))
            .await
    }
}

#[tonic::async_trait]
impl ProdutoService for ProdutoSvc {
    async fn verificar_login(
        &self,
        request: Request<pb::VerificarLoginRequest>,
    ) -> Result<Response<pb::VerificarLoginResponse>, Status> {
        let caller = self.login.throttle().policy().caller(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_login(req.senha)?;

        let logged_in = self.login.check(&caller, &usuario, senha).await?;
        Ok(Response::new(pb::VerificarLoginResponse {
            valido: logged_in.is_some(),
            nivel: logged_in.map_or(0, |user| user.nivel),
        }))
    }

    async fn obter_nivel(
        &self,
        request: Request<pb::ObterNivelRequest>,
    ) -> Result<Response<pb::ObterNivelResponse>, Status> {
        let usuario = Usuario::parse(request.into_inner().usuario)?;
        match self.users.nivel(&usuario).await? {
            Some(nivel) => Ok(Response::new(pb::ObterNivelResponse { nivel })),
            None => Err(Error::NotFound(format!("usuario '{usuario}' not found")).into()),
        }
    }

    async fn adicionar_usuario(
        &self,
        request: Request<pb::AdicionarUsuarioRequest>,
    ) -> Result<Response<pb::AdicionarUsuarioResponse>, Status> {
        // Authenticate before looking at the fields: strangers learn nothing about them.
        let acting = self
            .admin(&request, Acao::UsuarioCriado, &request.get_ref().usuario)
            .await?;
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_new(req.senha)?;
        let nivel = Nivel::parse(req.nivel)?;
        self.policy.check(&senha, &usuario, "senha").await?;

        let hash = self.hasher.hash(senha).await?;
        let id = self.users.insert_user(&usuario, &hash, nivel).await?;
        tracing::info!(id, nivel = nivel.get(), "user added");
        let detalhe = format!("nivel={}", nivel.get());
        self.rights
            .record(
                &acting,
                Acao::UsuarioCriado,
                Some(usuario.as_str()),
                Some(&detalhe),
            )
            .await;
        Ok(Response::new(pb::AdicionarUsuarioResponse { id }))
    }

    async fn alterar_senha(
        &self,
        request: Request<pb::AlterarSenhaRequest>,
    ) -> Result<Response<pb::AlterarSenhaResponse>, Status> {
        if request.get_ref().senha_atual.is_empty() {
            // An admin's change: authenticate before looking at the fields.
            let acting = self
                .admin(&request, Acao::SenhaDefinida, &request.get_ref().usuario)
                .await?;
            let req = request.into_inner();
            let usuario = Usuario::parse(req.usuario)?;
            let senha = Senha::parse_new_field(req.senha_nova, "senha_nova")?;
            self.policy.check(&senha, &usuario, "senha_nova").await?;
            let hash = self.hasher.hash(senha).await?;
            if !self.users.set_password(&usuario, None, &hash).await? {
                return Err(not_found(&usuario).into());
            }
            tracing::info!(%usuario, "password set by an admin");
            // The user's sessions end (but the admin's own, when it set its own password).
            let keep = acting.session().map(|s| s.id());
            let ended = self
                .rights
                .sessions()
                .end_all_of(usuario.as_str(), keep)
                .await?;
            let detalhe = format!("sessoes_encerradas={}", ended.unwrap_or(0));
            self.rights
                .record(
                    &acting,
                    Acao::SenhaDefinida,
                    Some(usuario.as_str()),
                    Some(&detalhe),
                )
                .await;
            return Ok(Response::new(pb::AlterarSenhaResponse {}));
        }
        // The user's change: the current password is checked as a login is, throttle
        // included, and every failure gives the one answer.
        let caller = self.login.throttle().policy().caller(&request);
        let origin = Origin::of(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let atual = Senha::parse_login_field(req.senha_atual, "senha_atual")?;
        let nova = Senha::parse_new_field(req.senha_nova, "senha_nova")?;
        self.policy.check(&nova, &usuario, "senha_nova").await?;
        let Some(user) = self.login.check(&caller, &usuario, atual).await? else {
            return Err(invalid_credentials().into());
        };
        let hash = self.hasher.hash(nova).await?;
        // Bound to the id that was checked: if the name was removed (or re-created) since,
        // nothing changes and the caller hears what an unknown user hears.
        if !self
            .users
            .set_password(&usuario, Some(user.id), &hash)
            .await?
        {
            return Err(invalid_credentials().into());
        }
        tracing::info!(%usuario, "password changed by its user");
        // The user's other sessions end: the one this call came with, if it is the user's,
        // stays.
        let keep = match origin.names_session() {
            true => self.rights.sessions().current(&origin).await.ok(),
            false => None,
        }
        .filter(|s| s.usuario_id() == user.id);
        let ended = self
            .rights
            .sessions()
            .end_all(user.id, keep.as_ref().map(|s| s.id()))
            .await?;
        let detalhe = format!("sessoes_encerradas={ended}");
        let acting = Acting {
            actor: Actor::User {
                usuario: usuario.as_str().to_owned(),
                session: keep,
            },
            origin,
        };
        self.rights
            .record(
                &acting,
                Acao::SenhaAlterada,
                Some(usuario.as_str()),
                Some(&detalhe),
            )
            .await;
        Ok(Response::new(pb::AlterarSenhaResponse {}))
    }

    async fn alterar_nivel(
        &self,
        request: Request<pb::AlterarNivelRequest>,
    ) -> Result<Response<pb::AlterarNivelResponse>, Status> {
        let acting = self
            .admin(&request, Acao::NivelAlterado, &request.get_ref().usuario)
            .await?;
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let nivel = Nivel::parse(req.nivel)?;
        if !self.users.set_nivel(&usuario, nivel).await? {
            return Err(not_found(&usuario).into());
        }
        tracing::info!(%usuario, nivel = nivel.get(), "level changed");
        // Sessions read the level at each call: nothing else to change.
        let detalhe = format!("nivel={}", nivel.get());
        self.rights
            .record(
                &acting,
                Acao::NivelAlterado,
                Some(usuario.as_str()),
                Some(&detalhe),
            )
            .await;
        Ok(Response::new(pb::AlterarNivelResponse {}))
    }

    async fn remover_usuario(
        &self,
        request: Request<pb::RemoverUsuarioRequest>,
    ) -> Result<Response<pb::RemoverUsuarioResponse>, Status> {
        let acting = self
            .admin(&request, Acao::UsuarioRemovido, &request.get_ref().usuario)
            .await?;
        let usuario = Usuario::parse(request.into_inner().usuario)?;
        // The row and its login-attempt counts go together, and its sessions with the row
        // (ON DELETE CASCADE). Nothing else holds the user: the ObterNivel batcher caches
        // nothing (a lookup only joins a query not yet sent).
        if !self.users.remove_user(&usuario).await? {
            return Err(not_found(&usuario).into());
        }
        tracing::info!(%usuario, "user removed");
        self.rights
            .record(&acting, Acao::UsuarioRemovido, Some(usuario.as_str()), None)
            .await;
        Ok(Response::new(pb::RemoverUsuarioResponse {}))
    }

    async fn listar_usuarios(
        &self,
        request: Request<pb::ListarUsuariosRequest>,
    ) -> Result<Response<pb::ListarUsuariosResponse>, Status> {
        self.rights.admin(&request, "listar_usuarios", None).await?;
        let req = request.into_inner();
        let page = UserPage::parse(req.page_size, &req.page_token, req.prefixo)?;
        // One row more than the page says whether another page follows, so the last page
        // has no token (and no empty page is ever handed out after it).
        let limit = i64::try_from(page.size + 1).unwrap_or(i64::MAX);
        let mut users = self.users.list_users(&page, limit).await?;
        let next_page_token = if users.len() > page.size {
            users.truncate(page.size);
            users
                .last()
                .map(|last| page.next_token(&last.usuario))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListarUsuariosResponse {
            usuarios: users
                .into_iter()
                .map(|u| pb::UsuarioResumo {
                    id: u.id,
                    usuario: u.usuario,
                    nivel: u.nivel,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn abrir_sessao(
        &self,
        request: Request<pb::AbrirSessaoRequest>,
    ) -> Result<Response<pb::AbrirSessaoResponse>, Status> {
        let caller = self.login.throttle().policy().caller(&request);
        let origin = Origin::of(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_login(req.senha)?;
        let Some(user) = self.login.check(&caller, &usuario, senha).await? else {
            return Ok(Response::new(pb::AbrirSessaoResponse::default()));
        };
        let sessions = self.rights.sessions();
        let token = sessions.open(user.id, &origin).await?;
        let sessao = sessions
            .by_token(&token)
            .await?
            .to_pb(sessions.settings().admin_nivel);
        tracing::info!(%usuario, sessao = sessao.id, end_user = origin.usuario_final.as_deref(), "session opened");
        Ok(Response::new(pb::AbrirSessaoResponse {
            valido: true,
            token,
            sessao: Some(sessao),
        }))
    }

    async fn obter_sessao(
        &self,
        request: Request<pb::ObterSessaoRequest>,
    ) -> Result<Response<pb::ObterSessaoResponse>, Status> {
        Ok(Response::new(self.rights.obter_sessao(request).await?))
    }

    async fn encerrar_sessao(
        &self,
        request: Request<pb::EncerrarSessaoRequest>,
    ) -> Result<Response<pb::EncerrarSessaoResponse>, Status> {
        Ok(Response::new(self.rights.encerrar_sessao(request).await?))
    }

    async fn listar_sessoes(
        &self,
        request: Request<pb::ListarSessoesRequest>,
    ) -> Result<Response<pb::ListarSessoesResponse>, Status> {
        Ok(Response::new(self.rights.listar_sessoes(request).await?))
    }

    async fn encerrar_sessoes(
        &self,
        request: Request<pb::EncerrarSessoesRequest>,
    ) -> Result<Response<pb::EncerrarSessoesResponse>, Status> {
        Ok(Response::new(self.rights.encerrar_sessoes(request).await?))
    }

    async fn listar_auditoria(
        &self,
        request: Request<pb::ListarAuditoriaRequest>,
    ) -> Result<Response<pb::ListarAuditoriaResponse>, Status> {
        Ok(Response::new(self.rights.listar_auditoria(request).await?))
    }
}
