//! The commands that call the service, one method each (`/login`, `/nivel`, `/adicionar`...):
//! what each sends, whether it may be retried, and how its answer becomes the reply and the
//! chat's session.

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};

use super::{
    Bot, Caller, ServiceHealth, Session,
    calls::{PRODUTO, reason_of, service_error},
};
use crate::{metrics::Outcome, reply};
use produto_client::pb;

/// How many users `/usuarios` shows: a chat message, not a report.
const LIST_PAGE: i32 = 20;

impl Bot {
    pub(super) async fn login(
        &self,
        caller: &Caller,
        usuario: String,
        senha: SecretString,
    ) -> (String, Outcome) {
        // The request message is plain protobuf: the password leaves the wrapper here.
        let senha = senha.expose_secret().to_owned();
        let login = self.idempotent(PRODUTO, "VerificarLogin", || {
            let mut client = self.produto.clone();
            let request = self.request(
                pb::VerificarLoginRequest {
                    usuario: usuario.clone(),
                    senha: senha.clone(),
                },
                caller.end_user.as_ref(),
            );
            async move { client.verificar_login(request).await }
        });
        match login.await {
            Ok(r) if r.valido => {
                let admin = self.is_admin(r.nivel);
                let text = reply::logged_in(&usuario, r.nivel, admin);
                tracing::info!(%usuario, nivel = r.nivel, "chat logged in");
                self.sessions().insert(
                    caller.session,
                    Session {
                        usuario,
                        nivel: r.nivel,
                    },
                );
                (text, Outcome::Ok)
            }
            // The same reply for a wrong password and an unknown user, as the service's.
            Ok(_) => (reply::LOGIN_FAILED.into(), Outcome::Refused),
            Err(status) => service_error(&status),
        }
    }

    pub(super) async fn nivel(
        &self,
        caller: &Caller,
        usuario: Option<String>,
    ) -> (String, Outcome) {
        let Some(session) = self.session(caller.session) else {
            return (reply::NOT_LOGGED_IN.into(), Outcome::Refused);
        };
        let own = usuario.as_deref().is_none_or(|u| u == session.usuario);
        if !own && !self.is_admin(session.nivel) {
            let reply = reply::admins_only("ver o nível de outros usuários", self.admin_nivel);
            return (reply, Outcome::Refused);
        }
        let target = usuario.unwrap_or_else(|| session.usuario.clone());
        let nivel = self.idempotent(PRODUTO, "ObterNivel", || {
            let mut client = self.produto.clone();
            let request = self.request(
                pb::ObterNivelRequest {
                    usuario: target.clone(),
                },
                caller.end_user.as_ref(),
            );
            async move { client.obter_nivel(request).await }
        });
        match nivel.await {
            Ok(r) if own => {
                // Keep the session's level fresh, unless the chat logged in as someone
                // else in the meantime.
                if let Some(s) = self.sessions().get_mut(&caller.session)
                    && s.usuario == session.usuario
                {
                    s.nivel = r.nivel;
                }
                (
                    reply::own_nivel(r.nivel, self.is_admin(r.nivel)),
                    Outcome::Ok,
                )
            }
            Ok(r) => (reply::nivel_of(&target, r.nivel), Outcome::Ok),
            Err(status) => service_error(&status),
        }
    }

    pub(super) async fn adicionar(
        &self,
        caller: &Caller,
        usuario: String,
        senha: SecretString,
        nivel: i32,
    ) -> (String, Outcome) {
        let (session, token) = match self.admin(caller, "adicionar usuários") {
            Ok(admin) => admin,
            Err(refused) => return refused,
        };
        let request = self.admin_request(
            pb::AdicionarUsuarioRequest {
                usuario: usuario.clone(),
                senha: senha.expose_secret().to_owned(),
                nivel,
            },
            caller,
            &token,
        );
        // Sent once, never retried: an attempt that timed out may have created the user.
        let add = self.once("AdicionarUsuario", |mut client| async move {
            client.adicionar_usuario(request).await
        });
        match add.await {
            Ok(r) => {
                tracing::info!(by = %session.usuario, %usuario, nivel, id = r.id, "user added");
                (reply::added(&usuario, nivel, r.id), Outcome::Ok)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/senha`: the chat's user changes its own password. The service checks the current
    /// one as a login (throttled); the bot only needs the chat to be logged in.
    pub(super) async fn senha(
        &self,
        caller: &Caller,
        atual: SecretString,
        nova: SecretString,
    ) -> (String, Outcome) {
        let Some(session) = self.session(caller.session) else {
            return (reply::NOT_LOGGED_IN.into(), Outcome::Refused);
        };
        let request = self.request(
            pb::AlterarSenhaRequest {
                usuario: session.usuario.clone(),
                senha_atual: atual.expose_secret().to_owned(),
                senha_nova: nova.expose_secret().to_owned(),
            },
            caller.end_user.as_ref(),
        );
        // Sent once: a change that went through would, retried, fail on the old password.
        let change = self.once("AlterarSenha", |mut client| async move {
            client.alterar_senha(request).await
        });
        match change.await {
            Ok(_) => {
                tracing::info!(usuario = %session.usuario, "password changed from the chat");
                // Other chats logged in with the old password must log in again.
                self.forget_sessions(&session.usuario, Some(caller.session));
                (reply::PASSWORD_CHANGED.into(), Outcome::Ok)
            }
            Err(status) if reason_of(&status).as_deref() == Some("INVALID_CREDENTIALS") => {
                (reply::WRONG_CURRENT_PASSWORD.into(), Outcome::Refused)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/definirsenha` (admins): sets a user's password without the current one.
    pub(super) async fn definir_senha(
        &self,
        caller: &Caller,
        usuario: String,
        nova: SecretString,
    ) -> (String, Outcome) {
        let (session, token) = match self.admin(caller, "definir senhas") {
            Ok(admin) => admin,
            Err(refused) => return refused,
        };
        let request = self.admin_request(
            pb::AlterarSenhaRequest {
                usuario: usuario.clone(),
                senha_atual: String::new(),
                senha_nova: nova.expose_secret().to_owned(),
            },
            caller,
            &token,
        );
        let set = self.once("AlterarSenha", |mut client| async move {
            client.alterar_senha(request).await
        });
        match set.await {
            Ok(_) => {
                tracing::info!(by = %session.usuario, %usuario, "password set from the chat");
                // The user's chats must log in with the new password (an admin setting its
                // own stays logged in here).
                self.forget_sessions(&usuario, Some(caller.session));
                (reply::password_set(&usuario), Outcome::Ok)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/alterarnivel` (admins). Chats logged in as the user get the new level at once: the
    /// bot's admin checks read the session's level.
    pub(super) async fn alterar_nivel(
        &self,
        caller: &Caller,
        usuario: String,
        nivel: i32,
    ) -> (String, Outcome) {
        let (session, token) = match self.admin(caller, "mudar níveis") {
            Ok(admin) => admin,
            Err(refused) => return refused,
        };
        let change = self.idempotent(PRODUTO, "AlterarNivel", || {
            let mut client = self.produto.clone();
            let request = self.admin_request(
                pb::AlterarNivelRequest {
                    usuario: usuario.clone(),
                    nivel,
                },
                caller,
                &token,
            );
            async move { client.alterar_nivel(request).await }
        });
        match change.await {
            Ok(_) => {
                tracing::info!(by = %session.usuario, %usuario, nivel, "level changed from the chat");
                for s in self.sessions().values_mut() {
                    if s.usuario == usuario {
                        s.nivel = nivel;
                    }
                }
                (reply::nivel_changed(&usuario, nivel), Outcome::Ok)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/remover` (admins). Chats logged in as the user are logged out.
    pub(super) async fn remover(&self, caller: &Caller, usuario: String) -> (String, Outcome) {
        let (session, token) = match self.admin(caller, "remover usuários") {
            Ok(admin) => admin,
            Err(refused) => return refused,
        };
        let remove = self.idempotent(PRODUTO, "RemoverUsuario", || {
            let mut client = self.produto.clone();
            let request = self.admin_request(
                pb::RemoverUsuarioRequest {
                    usuario: usuario.clone(),
                },
                caller,
                &token,
            );
            async move { client.remover_usuario(request).await }
        });
        match remove.await {
            Ok(_) => {
                tracing::info!(by = %session.usuario, %usuario, "user removed from the chat");
                self.forget_sessions(&usuario, None);
                (reply::removed(&usuario), Outcome::Ok)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/usuarios` (admins): the first page of users, by name.
    pub(super) async fn usuarios(
        &self,
        caller: &Caller,
        prefixo: Option<String>,
    ) -> (String, Outcome) {
        let (_, token) = match self.admin(caller, "listar usuários") {
            Ok(admin) => admin,
            Err(refused) => return refused,
        };
        let prefixo = prefixo.unwrap_or_default();
        let list = self.idempotent(PRODUTO, "ListarUsuarios", || {
            let mut client = self.produto.clone();
            let request = self.admin_request(
                pb::ListarUsuariosRequest {
                    page_size: LIST_PAGE,
                    page_token: String::new(),
                    prefixo: prefixo.clone(),
                },
                caller,
                &token,
            );
            async move { client.listar_usuarios(request).await }
        });
        match list.await {
            Ok(page) => (
                reply::users(&page.usuarios, !page.next_page_token.is_empty()),
                Outcome::Ok,
            ),
            Err(status) => service_error(&status),
        }
    }

    pub(super) async fn status(&self, caller: &Caller) -> (String, Outcome) {
        let (health, pool) = self.snapshot_for(caller.end_user.as_ref()).await;
        let ready = match health {
            ServiceHealth::Ready => Some(true),
            ServiceHealth::NotReady => Some(false),
            ServiceHealth::Unreachable(status) => {
                if let Err(pool_status) = &pool {
                    // Nothing answered: the service is away.
                    tracing::debug!(health = ?status.code(), pool = ?pool_status.code(), "status: no answer");
                    return service_error(pool_status);
                }
                None
            }
        };
        (reply::status(ready, pool.ok().as_ref()), Outcome::Ok)
    }

    /// The logged-in admin of this chat and the admin token, or the reply that refuses the
    /// command before any call (not logged in, not an admin, no token configured).
    fn admin(
        &self,
        caller: &Caller,
        what: &str,
    ) -> Result<(Session, MetadataValue<Ascii>), (String, Outcome)> {
        let Some(session) = self.session(caller.session) else {
            return Err((reply::NOT_LOGGED_IN.into(), Outcome::Refused));
        };
        if !self.is_admin(session.nivel) {
            let reply = reply::admins_only(what, self.admin_nivel);
            return Err((reply, Outcome::Refused));
        }
        let Some(token) = &self.admin_token else {
            return Err((reply::NO_ADMIN_TOKEN.into(), Outcome::Refused));
        };
        Ok((session, token.clone()))
    }
}
