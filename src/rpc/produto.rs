//! `produto.v1.ProdutoService`: VerificarLogin, ObterNivel, AdicionarUsuario, and the
//! administration of users: AlterarSenha, AlterarNivel, RemoverUsuario, ListarUsuarios.

use tonic::{Request, Response, Status};

use crate::{
    Error,
    auth::AdminToken,
    domain::{Nivel, Senha, UserPage, Usuario},
    error::Reason,
    login::Login,
    password::Hasher,
    pb::{self, produto_service_server::ProdutoService},
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
    admin: AdminToken,
}

impl ProdutoSvc {
    pub fn new(users: Users, login: Login, hasher: Hasher, admin: AdminToken) -> Self {
        ProdutoSvc {
            users,
            login,
            hasher,
            admin,
        }
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
        self.admin.check(request.metadata())?;
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let senha = Senha::parse_new(req.senha)?;
        let nivel = Nivel::parse(req.nivel)?;

        let hash = self.hasher.hash(senha).await?;
        let id = self.users.insert_user(&usuario, &hash, nivel).await?;
        tracing::info!(id, nivel = nivel.get(), "user added");
        Ok(Response::new(pb::AdicionarUsuarioResponse { id }))
    }

    async fn alterar_senha(
        &self,
        request: Request<pb::AlterarSenhaRequest>,
    ) -> Result<Response<pb::AlterarSenhaResponse>, Status> {
        if request.get_ref().senha_atual.is_empty() {
            // An admin's change: authenticate before looking at the fields.
            self.admin.check(request.metadata())?;
            let req = request.into_inner();
            let usuario = Usuario::parse(req.usuario)?;
            let senha = Senha::parse_new_field(req.senha_nova, "senha_nova")?;
            let hash = self.hasher.hash(senha).await?;
            if !self.users.set_password(&usuario, None, &hash).await? {
                return Err(not_found(&usuario).into());
            }
            tracing::info!(%usuario, "password set by an admin");
            return Ok(Response::new(pb::AlterarSenhaResponse {}));
        }
        // The user's change: the current password is checked as a login is, throttle
        // included, and every failure gives the one answer.
        let caller = self.login.throttle().policy().caller(&request);
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let atual = Senha::parse_login_field(req.senha_atual, "senha_atual")?;
        let nova = Senha::parse_new_field(req.senha_nova, "senha_nova")?;
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
        Ok(Response::new(pb::AlterarSenhaResponse {}))
    }

    async fn alterar_nivel(
        &self,
        request: Request<pb::AlterarNivelRequest>,
    ) -> Result<Response<pb::AlterarNivelResponse>, Status> {
        self.admin.check(request.metadata())?;
        let req = request.into_inner();
        let usuario = Usuario::parse(req.usuario)?;
        let nivel = Nivel::parse(req.nivel)?;
        if !self.users.set_nivel(&usuario, nivel).await? {
            return Err(not_found(&usuario).into());
        }
        tracing::info!(%usuario, nivel = nivel.get(), "level changed");
        Ok(Response::new(pb::AlterarNivelResponse {}))
    }

    async fn remover_usuario(
        &self,
        request: Request<pb::RemoverUsuarioRequest>,
    ) -> Result<Response<pb::RemoverUsuarioResponse>, Status> {
        self.admin.check(request.metadata())?;
        let usuario = Usuario::parse(request.into_inner().usuario)?;
        // The row and its login-attempt counts go together. Nothing else holds the user:
        // the ObterNivel batcher caches nothing (a lookup only joins a query not yet sent).
        if !self.users.remove_user(&usuario).await? {
            return Err(not_found(&usuario).into());
        }
        tracing::info!(%usuario, "user removed");
        Ok(Response::new(pb::RemoverUsuarioResponse {}))
    }

    async fn listar_usuarios(
        &self,
        request: Request<pb::ListarUsuariosRequest>,
    ) -> Result<Response<pb::ListarUsuariosResponse>, Status> {
        self.admin.check(request.metadata())?;
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
}
