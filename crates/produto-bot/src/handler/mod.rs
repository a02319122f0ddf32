//! [`Bot`]: runs a chat's command against the service and words the reply, keeping who each
//! chat is logged in as. One balancing client ([`BalancedClient`]) serves every chat.
//!
//! Here the handler's state and the dispatch of a message to its command; beside it the
//! commands ([`commands`]), the call plumbing they share ([`calls`]: deadlines, retries,
//! metadata), the service's readiness ([`health`]) and the client's settings from the
//! configuration ([`connect`]).

mod calls;
mod commands;
mod connect;
mod health;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use secrecy::ExposeSecret;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::health_client::HealthClient;

use crate::{
    BotConfig, ChatId, StartupError,
    command::{self, Command},
    metrics::{BotMetrics, Outcome},
    reply,
};
use produto_client::{
    client::BalancedClient,
    pb::{pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient},
};

pub use calls::END_USER_HEADER;
pub use health::ServiceHealth;

/// Who a chat is logged in as. The level is the one the service gave at login (or at the
/// chat's last `/nivel`); admin checks use it without asking the service again.
#[derive(Debug, Clone)]
struct Session {
    usuario: String,
    nivel: i32,
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

impl Bot {
    /// Builds the handler without connecting: a service that is down at start does not stop
    /// the bot, and each call (re)connects when needed. Must run inside a Tokio runtime.
    pub fn build(config: &BotConfig) -> Result<Bot, StartupError> {
        config.validate().map_err(StartupError)?;
        let client = BalancedClient::start(connect::client_settings(config)?);
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
    /// Each message is the root of its own trace (docs/tracing.md).
    #[tracing::instrument(name = "chat message", parent = None, skip_all, fields(session = incoming.session.0, end_user = incoming.end_user))]
    pub async fn handle_incoming(&self, incoming: Incoming<'_>) -> Handled {
        let held_password = command::names_a_password_command(incoming.text);
        // On the heap: the commands' futures add up to tens of kilobytes (more in debug
        // builds), which every caller's future would otherwise carry inline per await.
        let (command, reply, outcome) = Box::pin(self.run(incoming, held_password)).await;
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
            Command::Senha { atual, nova } => self.senha(&caller, atual, nova).await,
            Command::DefinirSenha { usuario, nova } => {
                self.definir_senha(&caller, usuario, nova).await
            }
            Command::AlterarNivel { usuario, nivel } => {
                self.alterar_nivel(&caller, usuario, nivel).await
            }
            Command::Remover { usuario } => self.remover(&caller, usuario).await,
            Command::Usuarios { prefixo } => self.usuarios(&caller, prefixo).await,
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

    /// Logs out every chat logged in as `usuario`, but `keep`.
    fn forget_sessions(&self, usuario: &str, keep: Option<ChatId>) {
        self.sessions()
            .retain(|chat, s| s.usuario != usuario || Some(*chat) == keep);
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
