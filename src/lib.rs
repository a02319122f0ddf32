//! produto: a gRPC service for user logins and access levels over one shared sqlx pool.
//!
//! The library holds everything; `produto-server` and `produto-bot` are thin binaries over it,
//! and the integration tests start the same [`app::Application`] on a loopback port.

pub mod app;
pub mod auth;
pub mod bot;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod middleware;
pub mod ops;
pub mod password;
pub mod service;
pub mod service_config;
pub mod telemetry;
pub mod throttle;

/// Code generated from `proto/produto/v1/produto.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("produto.v1");

    /// The encoded descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("produto_descriptor");
}

pub use app::Application;
pub use config::Config;
pub use error::Error;
