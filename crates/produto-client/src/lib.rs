//! produto-client: what a Rust program needs to call produto, and the small pieces both of
//! produto's binaries share. No storage, hashing or server code: another Rust service (and
//! `produto-bot`) depends on this crate alone.
//!
//! | module | what lives there |
//! | --- | --- |
//! | [`pb`] | the code generated from `proto/produto/v1/produto.proto`: messages, clients, and the server stubs the server crate implements |
//! | [`service_config`] | the clients' retry policy (`proto/produto/v1/service_config.json`) and the retry loop that applies it |
//! | [`client`] | the balancing, retrying client (over [`pb`] and [`service_config`] only) |
//! | [`telemetry`], [`signal`], [`cli`] | log setup, the shutdown signal and command-line parsing that names the environment variable of a bad value, shared by `produto-server` and `produto-bot` |
//! | [`otel`] | traces: the OTLP exporter both binaries install from the `OTEL_*` variables, trace context in gRPC metadata |
//! | `admin` (feature `admin`) | the admin HTTP ports' shared part: `/livez`, `/readyz`, the `/metrics` answer, serving until stopped |

#[cfg(feature = "admin")]
pub mod admin;
pub mod cli;
pub mod client;
pub mod otel;
pub mod service_config;
pub mod signal;
pub mod telemetry;

/// Code generated from `proto/produto/v1/produto.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("produto.v1");

    /// The encoded descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("produto_descriptor");
}
