//! [`Bot`]: runs a chat's command against the service and words the reply. The bot keeps no
//! logins: the service keeps each chat's session, bound to this bot (its caller token or
//! client certificate) and the chat's end user (`telegram:42`), so a restart or another
//! instance sees the same logins, and every admin command acts with the chat user's own
//! session, at the user's level now. One balancing client ([`BalancedClient`]) serves every
//! chat.
//!
//! Here the handler's state and the dispatch of a message to its command; beside it the
//! commands ([`commands`]), the call plumbing they share ([`calls`]: deadlines, retries,
//! metadata), the service's readiness ([`health`]) and the client's settings from the
//! configuration ([`connect`]).

mod calls;
mod commands;
mod connect;
mod health;

use std::{sync::Arc, time::Duration};

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

/// One chat message, with who sent it and where.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Whose login the message uses: the chat on stdin, the user on Telegram (so that a user
    /// logged in privately is not logged in for a whole group, and the other way round).
    pub session: ChatId,
    /// Who typed it, sent to the service as `produto-end-user` (e.g. `telegram:42`): the end
    /// user the chat's session is bound to. `None`: `chat:<session>`.
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
    /// The `produto-end-user` value, already validated as metadata: the key of the chat's
    /// session in the service. `None` only for a name that cannot be metadata.
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
    /// `Bearer <PRODUTO_TOKEN>`, the bot's caller token, marked sensitive so the HTTP/2
    /// layers never log it. `None`: the bot names itself by its client certificate, or not
    /// at all.
    token: Option<MetadataValue<Ascii>>,
    metrics: Arc<BotMetrics>,
}

impl Bot {
    /// Builds the handler without connecting: a service that is down at start does not stop
    /// the bot, and each call (re)connects when needed. Must run inside a Tokio runtime.
    pub fn build(config: &BotConfig) -> Result<Bot, StartupError> {
        config.validate().map_err(StartupError)?;
        let client = BalancedClient::start(connect::client_settings(config)?);
        let channel = client.channel();
        if config.admin_token.is_some() {
            tracing::warn!(
                "PRODUTO_ADMIN_TOKEN is set but no longer used: the bot acts with each chat \
                 user's session; remove it from the bot's environment"
            );
        }
        let token = match config.caller_token().map_err(StartupError)? {
            None => {
                if config.tls_cert.is_none() {
                    tracing::warn!(
                        "neither PRODUTO_TOKEN nor a client certificate: the service cannot \
                         tell this bot from anyone, so no chat can stay logged in"
                    );
                }
                None
            }
            Some(token) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.expose_secret())
                    .parse()
                    .map_err(|_| StartupError("PRODUTO_TOKEN must be printable ASCII".into()))?;
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
            token,
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
    /// Each message is the root of its own trace (docs/tracing.md), sampled or not there.
    pub async fn handle_incoming(&self, incoming: Incoming<'_>) -> Handled {
        let span = produto_client::otel::root("chat message", tracing::Level::INFO, || {
            tracing::info_span!(
                parent: None,
                "chat message",
                session = incoming.session.0,
                end_user = incoming.end_user,
            )
        });
        let held_password = command::names_a_password_command(incoming.text);
        // On the heap: the commands' futures add up to tens of kilobytes (more in debug
        // builds), which every caller's future would otherwise carry inline per await.
        let run = tracing::Instrument::instrument(self.run(incoming, held_password), span);
        let (command, reply, outcome) = Box::pin(run).await;
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
        let end_user = match incoming.end_user {
            Some(end_user) => end_user.to_owned(),
            None => format!("chat:{}", incoming.session.0),
        };
        let caller = Caller {
            // An identity that cannot be metadata (not ASCII) is not sent rather than mangled.
            end_user: end_user.parse().ok(),
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
            Command::Auditoria { usuario } => self.auditoria(&caller, usuario).await,
            Command::Logout => self.logout(&caller).await,
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
}
