//! [`Bot`]: runs a chat's command against the service and words the reply, keeping who each
//! chat is logged in as. One lazily connecting channel serves every chat.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tonic::{
    Code, Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{
    BotConfig, ChatId,
    command::{self, Command, Secret},
    reply,
};
use crate::{
    Error,
    pb::{
        self, pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient,
    },
};

/// Who a chat is logged in as. The level is the one the service gave at login (or at the
/// chat's last `/nivel`); admin checks use it without asking the service again.
#[derive(Debug, Clone)]
struct Session {
    usuario: String,
    nivel: i32,
}

/// What the service's readiness check (`grpc.health.v1` Check on `""`) answered.
#[derive(Debug)]
pub enum ServiceHealth {
    /// SERVING: the service and its database answer.
    Ready,
    /// The service answers, but is not ready (its database is away, or it is shutting down).
    NotReady,
    /// No answer: the service is down, unreachable or too slow.
    Unreachable(Status),
}

/// The chat handler. Cheap to share (`&Bot` from any task); clients are cloned per call.
pub struct Bot {
    produto: ProdutoServiceClient<Channel>,
    pool: PoolServiceClient<Channel>,
    health: HealthClient<Channel>,
    /// Each call's deadline: sent as `grpc-timeout` so the service gives up too, and
    /// enforced by the channel.
    timeout: Duration,
    /// Bound on a whole call, connecting included: whatever the network does, a command
    /// gets its reply.
    backstop: Duration,
    /// `Bearer <PRODUTO_ADMIN_TOKEN>`, marked sensitive so the HTTP/2 layers never log it.
    admin_token: Option<MetadataValue<Ascii>>,
    admin_nivel: i32,
    sessions: Mutex<HashMap<ChatId, Session>>,
}

/// TLS settings for an `https://` server: the CA to trust (or the system's web roots) and,
/// for mutual TLS, the bot's own certificate.
fn client_tls(config: &BotConfig) -> Result<ClientTlsConfig, Error> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::Startup(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &config.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

impl Bot {
    /// Builds the handler without connecting: a service that is down at start does not stop
    /// the bot, and each call (re)connects when needed. Must run inside a Tokio runtime.
    pub fn build(config: &BotConfig) -> Result<Bot, Error> {
        config.validate().map_err(Error::Startup)?;
        let mut endpoint = Endpoint::from_shared(config.server.clone())
            .map_err(|e| Error::Startup(format!("PRODUTO_SERVER {:?}: {e}", config.server)))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout);
        if config.server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(client_tls(config)?)
                .map_err(|e| Error::Startup(format!("TLS: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        let admin_token = match config.admin_token.as_deref() {
            None => None,
            Some(token) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {token}").parse().map_err(|_| {
                        Error::Startup("PRODUTO_ADMIN_TOKEN must be printable ASCII".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Bot {
            produto: ProdutoServiceClient::new(channel.clone()),
            pool: PoolServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout: config.timeout,
            backstop: config.connect_timeout + config.timeout,
            admin_token,
            admin_nivel: config.admin_nivel,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Answers one chat message. Never fails: errors become replies.
    #[tracing::instrument(skip_all, fields(chat = chat.0))]
    pub async fn handle(&self, chat: ChatId, message: &str) -> String {
        let command = match command::parse(message) {
            Ok(command) => command,
            Err(e) => return reply::parse_error(e),
        };
        tracing::debug!(command = command.name(), "command");
        match command {
            Command::Ajuda => reply::HELP.into(),
            Command::Login { usuario, senha } => self.login(chat, usuario, senha).await,
            Command::Nivel { usuario } => self.nivel(chat, usuario).await,
            Command::Adicionar {
                usuario,
                senha,
                nivel,
            } => self.adicionar(chat, usuario, senha, nivel).await,
            Command::Status => self.status().await,
            Command::Logout => {
                let session = self.sessions().remove(&chat);
                reply::logged_out(session.as_ref().map(|s| s.usuario.as_str()))
            }
        }
    }

    /// Asks the service whether it is ready, and logs the answer: for the start of a
    /// transport, so that whoever runs the bot learns at once that the service is away.
    pub async fn check_service(&self) -> ServiceHealth {
        let health = self.readiness().await;
        match &health {
            ServiceHealth::Ready => tracing::info!("service ready"),
            ServiceHealth::NotReady => {
                tracing::warn!("service up but not ready; commands may fail until it is")
            }
            ServiceHealth::Unreachable(status) => tracing::warn!(
                code = ?status.code(),
                error = status.message(),
                "service unreachable; commands will say so until it is back"
            ),
        }
        health
    }

    /// The service's readiness, without logging.
    pub async fn readiness(&self) -> ServiceHealth {
        let mut health = self.health.clone();
        let request = self.request(HealthCheckRequest {
            service: String::new(),
        });
        match self.call(health.check(request)).await {
            Ok(r) if r.status == ServingStatus::Serving as i32 => ServiceHealth::Ready,
            Ok(_) => ServiceHealth::NotReady,
            // A server that has not registered `""` (yet) is not ready either.
            Err(status) if status.code() == Code::NotFound => ServiceHealth::NotReady,
            Err(status) => ServiceHealth::Unreachable(status),
        }
    }

    async fn login(&self, chat: ChatId, usuario: String, senha: Secret) -> String {
        let mut client = self.produto.clone();
        let request = self.request(pb::VerificarLoginRequest {
            usuario: usuario.clone(),
            senha: senha.into_string(),
        });
        match self.call(client.verificar_login(request)).await {
            Ok(r) if r.valido => {
                let admin = self.is_admin(r.nivel);
                let text = reply::logged_in(&usuario, r.nivel, admin);
                tracing::info!(%usuario, nivel = r.nivel, "chat logged in");
                self.sessions().insert(
                    chat,
                    Session {
                        usuario,
                        nivel: r.nivel,
                    },
                );
                text
            }
            // The same reply for a wrong password and an unknown user, as the service's.
            Ok(_) => reply::LOGIN_FAILED.into(),
            Err(status) => reply::service_error(&status),
        }
    }

    async fn nivel(&self, chat: ChatId, usuario: Option<String>) -> String {
        let Some(session) = self.session(chat) else {
            return reply::NOT_LOGGED_IN.into();
        };
        let own = usuario.as_deref().is_none_or(|u| u == session.usuario);
        if !own && !self.is_admin(session.nivel) {
            return reply::admins_only("ver o nível de outros usuários", self.admin_nivel);
        }
        let target = usuario.unwrap_or_else(|| session.usuario.clone());
        let mut client = self.produto.clone();
        let request = self.request(pb::ObterNivelRequest {
            usuario: target.clone(),
        });
        match self.call(client.obter_nivel(request)).await {
            Ok(r) if own => {
                // Keep the session's level fresh, unless the chat logged in as someone
                // else in the meantime.
                if let Some(s) = self.sessions().get_mut(&chat)
                    && s.usuario == session.usuario
                {
                    s.nivel = r.nivel;
                }
                reply::own_nivel(r.nivel, self.is_admin(r.nivel))
            }
            Ok(r) => reply::nivel_of(&target, r.nivel),
            Err(status) => reply::service_error(&status),
        }
    }

    async fn adicionar(&self, chat: ChatId, usuario: String, senha: Secret, nivel: i32) -> String {
        // Refused here, before any call, unless an admin is logged in on this chat.
        let Some(session) = self.session(chat) else {
            return reply::NOT_LOGGED_IN.into();
        };
        if !self.is_admin(session.nivel) {
            return reply::admins_only("adicionar usuários", self.admin_nivel);
        }
        let Some(token) = &self.admin_token else {
            return reply::NO_ADMIN_TOKEN.into();
        };
        let mut request = self.request(pb::AdicionarUsuarioRequest {
            usuario: usuario.clone(),
            senha: senha.into_string(),
            nivel,
        });
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        let mut client = self.produto.clone();
        match self.call(client.adicionar_usuario(request)).await {
            Ok(r) => {
                tracing::info!(by = %session.usuario, %usuario, nivel, id = r.id, "user added");
                reply::added(&usuario, nivel, r.id)
            }
            Err(status) => reply::service_error(&status),
        }
    }

    async fn status(&self) -> String {
        let mut pool = self.pool.clone();
        let (health, pool) = tokio::join!(
            self.readiness(),
            self.call(pool.pool_status(self.request(pb::PoolStatusRequest {})))
        );
        let ready = match health {
            ServiceHealth::Ready => Some(true),
            ServiceHealth::NotReady => Some(false),
            ServiceHealth::Unreachable(status) => {
                if let Err(pool_status) = &pool {
                    // Nothing answered: the service is away.
                    tracing::debug!(health = ?status.code(), pool = ?pool_status.code(), "status: no answer");
                    return reply::service_error(pool_status);
                }
                None
            }
        };
        reply::status(ready, pool.ok().as_ref())
    }

    /// A request carrying the per-call deadline.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Awaits a call within the backstop, logging failures that are not the user's doing.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let result = match tokio::time::timeout(self.backstop, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(
                "no answer from the service in time",
            )),
        };
        result
            .map(Response::into_inner)
            .inspect_err(|status| match status.code() {
                Code::NotFound | Code::AlreadyExists | Code::InvalidArgument => {
                    tracing::debug!(code = ?status.code(), error = status.message(), "call refused")
                }
                code => tracing::warn!(?code, error = status.message(), "call failed"),
            })
    }

    fn is_admin(&self, nivel: i32) -> bool {
        nivel >= self.admin_nivel
    }

    fn session(&self, chat: ChatId) -> Option<Session> {
        self.sessions().get(&chat).cloned()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<ChatId, Session>> {
        // No code panics while holding the lock; should one, the map is still consistent.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
