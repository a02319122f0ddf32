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
//! Dependencies point one way, top to bottom: [`app`] (the wiring) over [`rpc`] and [`ops`]
//! (serving), over the features ([`users`], [`login`], [`sessions`], [`audit`], [`import`]:
//! each owns its SQL, its counters and its policy), over the engine and its peers ([`db`],
//! [`password`], [`auth`]), over [`domain`] and [`error`]. A request goes handler -> feature
//! -> `db` -> feature -> handler. docs/architecture.md has the full table (which file owns
//! what); `tests/architecture.rs` checks the layers and that no two files import each other,
//! even through others.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod import;
pub mod login;
pub mod ops;
pub mod password;
pub mod ready;
pub mod rpc;
pub mod sessions;
pub mod users;

// What moved to the client crate, under the names the server's code and tests have always
// used (`crate::pb`, `produto::client`...).
pub use produto_client::{client, pb, service_config, signal, telemetry};

pub use app::Application;
pub use config::{Config, Settings};
pub use error::Error;
