//! The commands that call the service, one method each (`/login`, `/nivel`, `/adicionar`...):
//! what each sends, whether it may be retried, and how its answer becomes the reply. The
//! chat's session lives in the service, named by the chat's end user: the bot asks for it
//! (ObterSessao) when it needs the user's name or level, and the admin commands send the
//! admin call itself, which the service allows or refuses by the user's level now.

use secrecy::{ExposeSecret, SecretString};
use tonic::Status;

use super::{
    Bot, Caller, ServiceHealth,
    calls::{PRODUTO, reason_of, service_error},
};
use crate::{metrics::Outcome, reply};
use produto_client::pb;

/// How many users `/usuarios` shows: a chat message, not a report.
const LIST_PAGE: i32 = 20;
/// How many entries `/auditoria` shows.
const AUDIT_PAGE: i32 = 10;

/// The reply to a refused admin command: "admins only" naming the service's admin level, or
/// what the refusal was (not logged in, session expired, the bot's token refused...).
fn admin_refusal(status: &Status, what: &str) -> (String, Outcome) {
    match reply::admin_nivel(status) {
        Some(nivel) => (reply::admins_only(what, nivel), Outcome::Refused),
        None => service_error(status),
    }
}

fn is_admin(sessao: &pb::Sessao) -> bool {
    sessao.nivel >= sessao.nivel_admin
}

impl Bot {
    pub(super) async fn login(
        &self,
        caller: &Caller,
        usuario: String,
        senha: SecretString,
    ) -> (String, Outcome) {
        let request = || {
            self.chat_request(
                pb::AbrirSessaoRequest {
                    usuario: usuario.clone(),
                    // The request message is plain protobuf: the password leaves the wrapper here.
                    senha: senha.expose_secret().to_owned(),
                },
                caller,
            )
        };
        // Sent once: a retry would open a second session (the first one replaced).
        let open = self.once("AbrirSessao", request, |mut client, request| async move {
            client.abrir_sessao(request).await
        });
        match open.await {
            Ok(r) if r.valido => {
                let sessao = r.sessao.unwrap_or_default();
                if sessao.chamador.is_empty() {
                    // The service could not bind the session to this bot: no later message
                    // would find it. The token is dropped unused.
                    return (reply::NO_CALLER_IDENTITY.into(), Outcome::Refused);
                }
                tracing::info!(%usuario, nivel = sessao.nivel, "chat logged in");
                (
                    reply::logged_in(&usuario, sessao.nivel, is_admin(&sessao)),
                    Outcome::Ok,
                )
            }
            // The same reply for a wrong password and an unknown user, as the service's.
            Ok(_) => (reply::LOGIN_FAILED.into(), Outcome::Refused),
            Err(status) => service_error(&status),
        }
    }

    /// The chat's session as the service has it now, or the reply saying why there is none.
    async fn session(&self, caller: &Caller) -> Result<pb::Sessao, (String, Outcome)> {
        let get = self.idempotent(PRODUTO, "ObterSessao", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(pb::ObterSessaoRequest {}, caller);
            async move { client.obter_sessao(request).await }
        });
        match get.await {
            Ok(r) => r
                .sessao
                .ok_or_else(|| (reply::NOT_LOGGED_IN.into(), Outcome::Refused)),
            Err(status) => Err(service_error(&status)),
        }
    }

    pub(super) async fn nivel(
        &self,
        caller: &Caller,
        usuario: Option<String>,
    ) -> (String, Outcome) {
        let session = match self.session(caller).await {
            Ok(session) => session,
            Err(refused) => return refused,
        };
        let own = usuario.as_deref().is_none_or(|u| u == session.usuario);
        if own {
            return (
                reply::own_nivel(session.nivel, is_admin(&session)),
                Outcome::Ok,
            );
        }
        if !is_admin(&session) {
            let reply = reply::admins_only("ver o nível de outros usuários", session.nivel_admin);
            return (reply, Outcome::Refused);
        }
        let target = usuario.unwrap_or_default();
        let nivel = self.idempotent(PRODUTO, "ObterNivel", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(
                pb::ObterNivelRequest {
                    usuario: target.clone(),
                },
                caller,
            );
            async move { client.obter_nivel(request).await }
        });
        match nivel.await {
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
        let request = || {
            self.chat_request(
                pb::AdicionarUsuarioRequest {
                    usuario: usuario.clone(),
                    senha: senha.expose_secret().to_owned(),
                    nivel,
                },
                caller,
            )
        };
        // Sent once, never retried: an attempt that timed out may have created the user.
        let add = self.once(
            "AdicionarUsuario",
            request,
            |mut client, request| async move { client.adicionar_usuario(request).await },
        );
        match add.await {
            Ok(r) => {
                tracing::info!(%usuario, nivel, id = r.id, "user added");
                (reply::added(&usuario, nivel, r.id), Outcome::Ok)
            }
            Err(status) => admin_refusal(&status, "adicionar usuários"),
        }
    }

    /// `/senha`: the chat's user changes its own password. The service checks the current
    /// one as a login (throttled) and ends the user's other sessions; this chat's stays.
    pub(super) async fn senha(
        &self,
        caller: &Caller,
        atual: SecretString,
        nova: SecretString,
    ) -> (String, Outcome) {
        let session = match self.session(caller).await {
            Ok(session) => session,
            Err(refused) => return refused,
        };
        let request = || {
            self.chat_request(
                pb::AlterarSenhaRequest {
                    usuario: session.usuario.clone(),
                    senha_atual: atual.expose_secret().to_owned(),
                    senha_nova: nova.expose_secret().to_owned(),
                },
                caller,
            )
        };
        // Sent once: a change that went through would, retried, fail on the old password.
        let change = self.once("AlterarSenha", request, |mut client, request| async move {
            client.alterar_senha(request).await
        });
        match change.await {
            Ok(_) => {
                tracing::info!(usuario = %session.usuario, "password changed from the chat");
                (reply::PASSWORD_CHANGED.into(), Outcome::Ok)
            }
            Err(status) if reason_of(&status).as_deref() == Some("INVALID_CREDENTIALS") => {
                (reply::WRONG_CURRENT_PASSWORD.into(), Outcome::Refused)
            }
            Err(status) => service_error(&status),
        }
    }

    /// `/definirsenha` (admins): sets a user's password without the current one; the
    /// service ends the user's sessions.
    pub(super) async fn definir_senha(
        &self,
        caller: &Caller,
        usuario: String,
        nova: SecretString,
    ) -> (String, Outcome) {
        let request = || {
            self.chat_request(
                pb::AlterarSenhaRequest {
                    usuario: usuario.clone(),
                    senha_atual: String::new(),
                    senha_nova: nova.expose_secret().to_owned(),
                },
                caller,
            )
        };
        let set = self.once("AlterarSenha", request, |mut client, request| async move {
            client.alterar_senha(request).await
        });
        match set.await {
            Ok(_) => {
                tracing::info!(%usuario, "password set from the chat");
                (reply::password_set(&usuario), Outcome::Ok)
            }
            Err(status) => admin_refusal(&status, "definir senhas"),
        }
    }

    /// `/alterarnivel` (admins). The user's chats see the new level at their next command:
    /// the service reads it at each call.
    pub(super) async fn alterar_nivel(
        &self,
        caller: &Caller,
        usuario: String,
        nivel: i32,
    ) -> (String, Outcome) {
        let change = self.idempotent(PRODUTO, "AlterarNivel", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(
                pb::AlterarNivelRequest {
                    usuario: usuario.clone(),
                    nivel,
                },
                caller,
            );
            async move { client.alterar_nivel(request).await }
        });
        match change.await {
            Ok(_) => {
                tracing::info!(%usuario, nivel, "level changed from the chat");
                (reply::nivel_changed(&usuario, nivel), Outcome::Ok)
            }
            Err(status) => admin_refusal(&status, "mudar níveis"),
        }
    }

    /// `/remover` (admins). The user's sessions go with it, in the service.
    pub(super) async fn remover(&self, caller: &Caller, usuario: String) -> (String, Outcome) {
        let remove = self.idempotent(PRODUTO, "RemoverUsuario", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(
                pb::RemoverUsuarioRequest {
                    usuario: usuario.clone(),
                },
                caller,
            );
            async move { client.remover_usuario(request).await }
        });
        match remove.await {
            Ok(_) => {
                tracing::info!(%usuario, "user removed from the chat");
                (reply::removed(&usuario), Outcome::Ok)
            }
            Err(status) => admin_refusal(&status, "remover usuários"),
        }
    }

    /// `/usuarios` (admins): the first page of users, by name.
    pub(super) async fn usuarios(
        &self,
        caller: &Caller,
        prefixo: Option<String>,
    ) -> (String, Outcome) {
        let prefixo = prefixo.unwrap_or_default();
        let list = self.idempotent(PRODUTO, "ListarUsuarios", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(
                pb::ListarUsuariosRequest {
                    page_size: LIST_PAGE,
                    page_token: String::new(),
                    prefixo: prefixo.clone(),
                },
                caller,
            );
            async move { client.listar_usuarios(request).await }
        });
        match list.await {
            Ok(page) => (
                reply::users(&page.usuarios, !page.next_page_token.is_empty()),
                Outcome::Ok,
            ),
            Err(status) => admin_refusal(&status, "listar usuários"),
        }
    }

    /// `/auditoria` (admins): the latest entries of the audit trail, of one user if named.
    pub(super) async fn auditoria(
        &self,
        caller: &Caller,
        usuario: Option<String>,
    ) -> (String, Outcome) {
        let usuario = usuario.unwrap_or_default();
        let list = self.idempotent(PRODUTO, "ListarAuditoria", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(
                pb::ListarAuditoriaRequest {
                    page_size: AUDIT_PAGE,
                    usuario: usuario.clone(),
                    ..Default::default()
                },
                caller,
            );
            async move { client.listar_auditoria(request).await }
        });
        match list.await {
            Ok(page) => (reply::audit(&page.eventos), Outcome::Ok),
            Err(status) => admin_refusal(&status, "ver a auditoria"),
        }
    }

    /// `/logout`: ends the chat's session in the service.
    pub(super) async fn logout(&self, caller: &Caller) -> (String, Outcome) {
        let session = match self.session(caller).await {
            Ok(session) => session,
            // Nothing to end (never logged in, or the session is gone already).
            Err((text, _)) if text == reply::NOT_LOGGED_IN || text == reply::SESSION_EXPIRED => {
                return (reply::logged_out(None), Outcome::Ok);
            }
            Err(failed) => return failed,
        };
        let end = self.idempotent(PRODUTO, "EncerrarSessao", || {
            let mut client = self.produto.clone();
            let request = self.chat_request(pb::EncerrarSessaoRequest {}, caller);
            async move { client.encerrar_sessao(request).await }
        });
        match end.await {
            Ok(_) => (reply::logged_out(Some(&session.usuario)), Outcome::Ok),
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
}
