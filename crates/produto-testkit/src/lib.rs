//! What produto's test binaries and load bench share: the real server on 127.0.0.1:0 with
//! real gRPC clients ([`app`]), a database per test ([`database`]), throwaway PostgreSQL
//! clusters and standbys ([`cluster`]), a fault-injecting TCP proxy ([`proxy`]), PgBouncer
//! ([`pgbouncer`]), the workspace's binaries as child processes ([`process`]), a tiny HTTP
//! GET ([`http`]) and the timing statistics ([`stats`]).
//!
//! Only [`app`] knows the server library's types (`Application`, `Settings`, `Db`, `pb`).

pub mod app;
pub mod cluster;
pub mod database;
pub mod http;
pub mod otlp;
pub mod pgbouncer;
pub mod process;
pub mod proxy;
pub mod stats;

pub use app::{
    ADMIN_TOKEN, BACKGROUND_STATEMENTS, BOT_TOKEN, OTHER_CALLER_TOKEN, TestApp, admin, as_caller,
    caller_tokens_file, senha_request, spawn_app, spawn_on, spawn_with, test_config, with_session,
};
pub use database::{Backend, TestDb, postgres_admin_url};
