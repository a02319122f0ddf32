//! [`Bot`]: runs a chat's command against the service and words the reply, keeping who each
//! chat is logged in as. One balancing client ([`BalancedClient`]) serves every chat.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use tonic::{
    Code, Request, Response, Status,
    codegen::http::Uri,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    BotConfig, ChatId, StartupError,
    command::{self, Command},
    metrics::{BotMetrics, Outcome},
    reply,
};
use produto_client::{
    client::{BalancedClient, ClientSettings},
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

/// One chat message, with who sent it and where.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Whose login state the message uses: the chat on stdin, the user on Telegram (so that
    /// a user logged in privately is not logged in for a whole group, and the other way round).
    pub session: ChatId,
    /// Who typed it, sent to the service as `produto-end-user` (e.g. `telegram:42`); `None`
    /// sends nothing.
    pub end_user: Option<&'a str>,
    /// Whether others can read the chat (a group): commands holding a password are refused
    /// there.
    pub shared_chat: bool,
    pub text: &'a str,
}

/// What came of one message.
#[derive(Debug)]
pub struct Handled {
    pub reply: String,
    /// The command's name (`None`: not a command), for metrics.
    pub command: Option<&'static str>,
    pub outcome: Outcome,
    /// The message may hold a password (`/login`, `/adicionar`, even malformed): a transport
    /// that can should delete it from the chat.
    pub held_password: bool,
}

/// The per-message context the calls need.
struct Caller {
    session: ChatId,
    /// The `produto-end-user` value, already validated as metadata.
    end_user: Option<MetadataValue<Ascii>>,
}

/// The chat handler. Cheap to share (`&Bot` from any task); clients are cloned per call.
pub struct Bot {
    /// Spreads the calls over every instance the server's name resolves to, and retries
    /// the idempotent ones as the service config says.
    client: BalancedClient,
    produto: ProdutoServiceClient<Channel>,
    pool: PoolServiceClient<Channel>,
    health: HealthClient<Channel>,
    /// Each call's deadline: sent as `grpc-timeout` so the service gives up too, and
    /// enforced on each attempt; retries stop when it has passed.
    timeout: Duration,
    /// Bound on a whole call, connecting included: whatever the network does, a command
    /// gets its reply.
    backstop: Duration,
    /// `Bearer <PRODUTO_ADMIN_TOKEN>`, marked sensitive so the HTTP/2 layers never log it.
    admin_token: Option<MetadataValue<Ascii>>,
    admin_nivel: i32,
    sessions: Mutex<HashMap<ChatId, Session>>,
    metrics: Arc<BotMetrics>,
}

const PRODUTO: &str = "produto.v1.ProdutoService";
const POOL: &str = "produto.v1.PoolService";
const HEALTH: &str = "grpc.health.v1.Health";

/// The metadata key that names the chat user a call is made for.
pub const END_USER_HEADER: &str = "produto-end-user";

/// The reply to a failed call, and its outcome.
fn service_error(status: &Status) -> (String, Outcome) {
    let outcome = match status.code() {
        // A login throttled for too many failed attempts (reason LOGIN_THROTTLED).
        Code::ResourceExhausted if reply::login_throttled(status).is_some() => Outcome::Refused,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            Outcome::Unavailable
        }
        Code::NotFound
        | Code::AlreadyExists
        | Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied => Outcome::Refused,
        _ => Outcome::Failed,
    };
    (reply::service_error(status), outcome)
}

/// The balancing client's settings for `PRODUTO_SERVER`: its `host:port`, resolved to
/// every address it has, and TLS checked against the host's name for `https://`.
fn client_settings(config: &BotConfig) -> Result<ClientSettings, StartupError> {
    let invalid = |why: &str| StartupError(format!("PRODUTO_SERVER {:?}: {why}", config.server));
    let uri: Uri = config
        .server
        .parse()
        .map_err(|e| invalid(&format!("{e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("expected http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut settings = ClientSettings::new([format!("{host}:{port}")]);
    settings.connect_timeout = config.connect_timeout;
    if tls {
        let domain = host.trim_start_matches('[').trim_end_matches(']');
        settings.tls = Some(client_tls(config)?.domain_name(domain));
    }
    Ok(settings)
}

/// `call`, or DEADLINE_EXCEEDED once `bound` has passed.
async fn within<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(bound, call).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(
            "no answer from the service in time",
        ))
    })
}

/// TLS settings for an `https://` server: the CA to trust (or the system's web roots) and,
/// for mutual TLS, the bot's own certificate.
fn client_tls(config: &BotConfig) -> Result<ClientTlsConfig, StartupError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| StartupError(format!("cannot read {}: {e}", path.display())))
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
    pub fn build(config: &BotConfig) -> Result<Bot, StartupError> {
        config.validate().map_err(StartupError)?;
        let client = BalancedClient::start(client_settings(config)?);
        let channel = client.channel();
        let admin_token = match config.admin_token.as_ref().map(ExposeSecret::expose_secret) {
            None => None,
            Some(token) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {token}").parse().map_err(|_| {
                        StartupError("PRODUTO_ADMIN_TOKEN must be printable ASCII".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Bot {
            client,
            produto: ProdutoServiceClient::new(channel.clone()),
            pool: PoolServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout: config.timeout,
            backstop: config.connect_timeout + config.timeout,
            admin_token,
            admin_nivel: config.admin_nivel,
            sessions: Mutex::new(HashMap::new()),
            metrics: Arc::new(BotMetrics::default()),
        })
    }

    /// Answers one chat message from a private chat with no known user. Never fails: errors
    /// become replies.
    pub async fn handle(&self, chat: ChatId, message: &str) -> String {
        self.handle_incoming(Incoming {
            session: chat,
            end_user: None,
            shared_chat: false,
            text: message,
        })
        .await
        .reply
    }

    /// Answers one chat message, saying what came of it. The one place commands are run;
    /// every transport comes here.
    #[tracing::instrument(skip_all, fields(session = incoming.session.0, end_user = incoming.end_user))]
    pub async fn handle_incoming(&self, incoming: Incoming<'_>) -> Handled {
        let held_password = command::names_a_password_command(incoming.text);
        let (command, reply, outcome) = self.run(incoming, held_password).await;
        self.metrics.command(command.unwrap_or("none"), outcome);
        Handled {
            reply,
            command,
            outcome,
            held_password,
        }
    }

    async fn run(
        &self,
        incoming: Incoming<'_>,
        held_password: bool,
    ) -> (Option<&'static str>, String, Outcome) {
        let command = match command::parse(incoming.text) {
            Ok(command) => command,
            Err(e) => {
                let reply = if held_password && incoming.shared_chat {
                    reply::PASSWORD_IN_GROUP.into()
                } else {
                    reply::parse_error(e)
                };
                return (None, reply, Outcome::Invalid);
            }
        };
        let name = command.name();
        tracing::debug!(command = name, "command");
        if held_password && incoming.shared_chat {
            return (
                Some(name),
                reply::PASSWORD_IN_GROUP.into(),
                Outcome::Refused,
            );
        }
        let caller = Caller {
            session: incoming.session,
            // An identity that cannot be metadata (not ASCII) is not sent rather than mangled.
            end_user: incoming.end_user.and_then(|u| u.parse().ok()),
        };
        let (reply, outcome) = match command {
            Command::Ajuda => (reply::HELP.into(), Outcome::Ok),
            Command::Login { usuario, senha } => self.login(&caller, usuario, senha).await,
            Command::Nivel { usuario } => self.nivel(&caller, usuario).await,
            Command::Adicionar {
                usuario,
                senha,
                nivel,
            } => self.adicionar(&caller, usuario, senha, nivel).await,
            Command::Status => self.status(&caller).await,
            Command::Logout => {
                let session = self.sessions().remove(&caller.session);
                let reply = reply::logged_out(session.as_ref().map(|s| s.usuario.as_str()));
                (reply, Outcome::Ok)
            }
        };
        (Some(name), reply, outcome)
    }

    /// Call attempts repeated after an UNAVAILABLE so far.
    pub fn retries(&self) -> u64 {
        self.client.retries()
    }

    /// The bot's metrics, for a transport to count into and an admin page to expose.
    pub fn metrics(&self) -> &Arc<BotMetrics> {
        &self.metrics
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
        self.readiness_for(None).await
    }

    /// The service's readiness and its pool's figures (`None` when PoolStatus failed), asked
    /// at once: for `/status` and the bot's health page.
    pub async fn service_snapshot(
        &self,
    ) -> (ServiceHealth, Result<pb::PoolStatusResponse, Status>) {
        self.snapshot_for(None).await
    }

    async fn snapshot_for(
        &self,
        end_user: Option<&MetadataValue<Ascii>>,
    ) -> (ServiceHealth, Result<pb::PoolStatusResponse, Status>) {
        let pool = self.idempotent(POOL, "PoolStatus", || {
            let mut pool = self.pool.clone();
            let request = self.request(pb::PoolStatusRequest {}, end_user);
            async move { pool.pool_status(request).await }
        });
        tokio::join!(self.readiness_for(end_user), pool)
    }

    async fn readiness_for(&self, end_user: Option<&MetadataValue<Ascii>>) -> ServiceHealth {
        let check = self.idempotent(HEALTH, "Check", || {
            let mut health = self.health.clone();
            let request = self.request(
                HealthCheckRequest {
                    service: String::new(),
                },
                end_user,
            );
            async move { health.check(request).await }
        });
        match check.await {
            Ok(r) if r.status == ServingStatus::Serving as i32 => ServiceHealth::Ready,
            Ok(_) => ServiceHealth::NotReady,
            // A server that has not registered `""` (yet) is not ready either.
            Err(status) if status.code() == Code::NotFound => ServiceHealth::NotReady,
            Err(status) => ServiceHealth::Unreachable(status),
        }
    }

    async fn login(
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

    async fn nivel(&self, caller: &Caller, usuario: Option<String>) -> (String, Outcome) {
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

    async fn adicionar(
        &self,
        caller: &Caller,
        usuario: String,
        senha: SecretString,
        nivel: i32,
    ) -> (String, Outcome) {
        // Refused here, before any call, unless an admin is logged in on this chat.
        let Some(session) = self.session(caller.session) else {
            return (reply::NOT_LOGGED_IN.into(), Outcome::Refused);
        };
        if !self.is_admin(session.nivel) {
            let reply = reply::admins_only("adicionar usuários", self.admin_nivel);
            return (reply, Outcome::Refused);
        }
        let Some(token) = &self.admin_token else {
            return (reply::NO_ADMIN_TOKEN.into(), Outcome::Refused);
        };
        let mut request = self.request(
            pb::AdicionarUsuarioRequest {
                usuario: usuario.clone(),
                senha: senha.expose_secret().to_owned(),
                nivel,
            },
            caller.end_user.as_ref(),
        );
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        // Sent once, never retried: an attempt that timed out may have created the user.
        let client = &self.client;
        let add = async {
            client.ensure_instances(self.timeout).await?;
            within(self.timeout, client.adicionar_usuario(request)).await
        };
        match self.call("AdicionarUsuario", add).await {
            Ok(r) => {
                tracing::info!(by = %session.usuario, %usuario, nivel, id = r.id, "user added");
                (reply::added(&usuario, nivel, r.id), Outcome::Ok)
            }
            Err(status) => service_error(&status),
        }
    }

    async fn status(&self, caller: &Caller) -> (String, Outcome) {
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

    /// A request carrying the per-call deadline and, when known, who asked.
    fn request<T>(&self, message: T, end_user: Option<&MetadataValue<Ascii>>) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(end_user) = end_user {
            request
                .metadata_mut()
                .insert(END_USER_HEADER, end_user.clone());
        }
        request
    }

    /// An idempotent call (`attempt` builds a fresh request each time) through the balancing
    /// client: each attempt bounded by the per-call timeout, retries (on UNAVAILABLE, as the
    /// service config says) only while that timeout has not passed since the first.
    async fn idempotent<T, F, Fut>(
        &self,
        service: &str,
        method: &'static str,
        mut attempt: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.timeout;
        let retried = self.client.retried_within((service, method), timeout, || {
            let call = attempt();
            within(timeout, call)
        });
        self.call(method, retried).await
    }

    /// Awaits a call within the backstop, logging failures that are not the user's doing.
    async fn call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = within(self.backstop, call).await;
        self.metrics.service_call(method, started.elapsed());
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
