//! produto: a gRPC service for user logins and access levels over one shared sqlx pool.
//!
//! The workspace's root package: the server. The library holds the server's code;
//! `produto-server` is a thin binary over it, and the integration tests start the same
//! [`app::Application`] on a loopback port. Beside it, `crates/produto-client` (the generated
//! code, the balancing client, log setup and the shutdown signal: re-exported here under
//! their old names) and `crates/produto-bot` (the chat bot, over the client crate only). See
//! docs/architecture.md for the picture: which crate and module owns what.
//!
//! # Map
//!
//! Dependencies point down this table, never up; a module may also use one of its own layer
//! (`domain` uses `error`, `throttle` uses `auth`, `middleware` uses `ops`).
//! `tests/architecture.rs` checks both, and that there is no import circle:
//!
//! | layer | module | what lives there |
//! | --- | --- | --- |
//! | bottom | [`pb`], [`service_config`], [`telemetry`], [`signal`] | from `produto-client`: the generated code, the clients' retry policy, log setup, the shutdown signal |
//! | | [`error`] | the one [`Error`] and its mapping to gRPC status codes |
//! | | [`domain`] | validated request values: `Usuario`, `Senha`, `Nivel` |
//! | | [`ready`] | the readiness flag health and ops share |
//! | storage, hashing | [`db`] | the pools ([`db::DbSettings`] and their flags, `db/settings.rs`): the handle, migrations and figures (`db/mod.rs`), building the pools (`db/connect.rs`), the probe (`db/probe.rs`), the primary and read replicas with their routing (`db/replicas.rs`), the one query path every statement takes (`db/query.rs`: acquire, time, classify, retry a read once), every SQL query (`db/users.rs`), the ObterNivel batcher, pool figures and histograms, the connection budget (`db/budget.rs`) |
//! | | [`password`] | argon2id ([`password::HashSettings`], [`password::HashFlags`]) on dedicated threads (`password/threads.rs`, each keeping its block: `password/reused_memory.rs`); the legacy hashes of imported users (`password/legacy.rs`) |
//! | | [`import`] | `import-users`: the old bot's users copied in with their passwords ([`import::ImportSettings`]) |
//! | | [`throttle`], [`auth`] | brute-force throttling of logins (the claim in `throttle/mod.rs`, the policy, flags and caller identity in `throttle/policy.rs`, the database's counts in `throttle/store.rs`, this instance's in `throttle/local.rs`); caller authentication (tokens, certificates) and the admin token check; each with its flags |
//! | | [`client`] | from `produto-client`: the balancing, retrying client |
//! | settings | [`config`] | the command line: each component's flags flattened, the serving flags, turned into each component's settings in one place: [`Config::into_settings`] |
//! | serving | [`service`] | the RPC handlers: `service/produto.rs` (ProdutoService), `service/pool.rs`, `service/health.rs` |
//! | | [`middleware`], [`ops`] | per call: span, metrics, caller identification, deadline, size limit, load shedding; the metrics registry (`ops/metrics.rs`), the RPC recorder (`ops/rpc_metrics.rs`), the database's figures at scrape time (`ops/pool_metrics.rs`), the admin HTTP port, request ids, the RPC span as OpenTelemetry sees it (`ops/traces.rs`; the statements' spans are `db/traces.rs`) |
//! | top | [`app`] | wiring: build (bind ports), serve, shut down (`app/mod.rs`); the gRPC routes, TLS and the one tonic builder (`app/grpc.rs`); the background tasks (`app/supervise.rs`); `migrate`, `adicionar-usuario` and `import-users` (`app/commands.rs`) |

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod import;
pub mod middleware;
pub mod ops;
pub mod password;
pub mod ready;
pub mod service;
pub mod throttle;

// What moved to the client crate, under the names the server's code and tests have always
// used (`crate::pb`, `produto::client`...).
pub use produto_client::{client, pb, service_config, signal, telemetry};

pub use app::Application;
pub use config::{Config, Settings};
pub use error::Error;
