//! produto: a gRPC service for user logins and access levels over one shared sqlx pool.
//!
//! The library holds everything; `produto-server` and `produto-bot` are thin binaries over it,
//! and the integration tests start the same [`app::Application`] on a loopback port. The
//! `server` feature (default) gates every module the bot does not use (marked *server* below).
//!
//! # Map
//!
//! Dependencies point down this table, never up; a module may also use one of its own layer
//! (`domain` uses `error`, `throttle` uses `auth`, `middleware` uses `ops`, `bot` uses
//! `client`). `tests/architecture.rs` checks both, and that there is no import circle:
//!
//! | layer | module | what lives there |
//! | --- | --- | --- |
//! | bottom | [`pb`] | the code generated from `proto/produto/v1/produto.proto` |
//! | | [`error`] | *server*: the one [`Error`] and its mapping to gRPC status codes |
//! | | [`domain`] | *server*: validated request values: `Usuario`, `Senha`, `Nivel` |
//! | | [`telemetry`], [`ready`], [`signal`] | log setup; the readiness flag health and ops share (*server*); the shutdown signal |
//! | | [`service_config`] | the clients' retry policy (`proto/produto/v1/service_config.json`) |
//! | storage, hashing | [`db`] | *server*: the pools ([`db::DbSettings`]): the primary and read replicas with their routing (`db/replicas.rs`), the one query path every statement takes (`db/query.rs`: acquire, time, classify, retry a read once), every SQL query (`db/users.rs`), the ObterNivel batcher, pool figures and histograms, the connection budget (`db/budget.rs`) |
//! | | [`password`] | *server*: argon2id on dedicated threads ([`password::HashSettings`]); the legacy hashes of imported users (`password/legacy.rs`) |
//! | | [`import`] | *server*: `import-users`, the old bot's users copied in with their passwords ([`import::ImportSettings`]) |
//! | | [`throttle`], [`auth`] | *server*: brute-force throttling of logins; caller authentication (tokens, certificates) and the admin token check |
//! | | [`client`] | the balancing, retrying client for other Rust services (generated code and service config only) |
//! | settings | [`config`] | *server*: the flags (clap), turned into each component's settings in one place: [`Config::into_settings`] |
//! | serving | [`service`] | *server*: the RPC handlers: `service/produto.rs` (ProdutoService), `service/pool.rs`, `service/health.rs` |
//! | | [`middleware`], [`ops`] | *server*: per call: span, metrics, caller identification, deadline, size limit, load shedding; the metrics registry, the admin HTTP port, request ids |
//! | | [`bot`] | the chat bot: commands, replies, its gRPC client, the stdin and Telegram transports (`bot/telegram/`), its admin page |
//! | top | [`app`] | *server*: wiring: build (bind ports), serve, shut down; `migrate`, `adicionar-usuario` and `import-users` |

// Without the `server` feature the library is the generated code, the balancing client and
// the bot, so that `produto-bot` builds without the server's crates (sqlx, argon2...).
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod auth;
pub mod bot;
pub mod client;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod import;
#[cfg(feature = "server")]
pub mod middleware;
#[cfg(feature = "server")]
pub mod ops;
#[cfg(feature = "server")]
pub mod password;
#[cfg(feature = "server")]
pub mod ready;
#[cfg(feature = "server")]
pub mod service;
pub mod service_config;
pub mod signal;
pub mod telemetry;
#[cfg(feature = "server")]
pub mod throttle;

/// Code generated from `proto/produto/v1/produto.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("produto.v1");

    /// The encoded descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("produto_descriptor");
}

#[cfg(feature = "server")]
pub use app::Application;
#[cfg(feature = "server")]
pub use config::{Config, Settings};
#[cfg(feature = "server")]
pub use error::Error;
