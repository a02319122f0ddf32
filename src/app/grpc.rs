//! The gRPC side of the server: the routes (health, reflection, our services, each with its
//! size limit), TLS from its files, and the one tonic server builder that produto-server and
//! the bench's floors share.

use std::{future::Future, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::{
    Error,
    audit::Audit,
    auth::AdminToken,
    config::{Limits, Settings, TlsSettings},
    login::{Login, LoginCounters},
    password::Hasher,
    pb::{pool_service_server::PoolServiceServer, produto_service_server::ProdutoServiceServer},
    rpc::middleware::RpcLayer,
    rpc::{PoolSvc, ProdutoSvc},
    sessions::{Rights, Sessions},
    users::Users,
};

/// Largest request message accepted: the largest valid request is ~1.3 KiB.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Every gRPC service: health; reflection of our services, the health service's and
/// google.rpc's error details (so that grpcurl can describe the services and decode our
/// errors' details), in v1 and in v1alpha for clients (older grpcurl, grpcio) that only speak
/// it; ProdutoService and PoolService, each refusing requests over [`MAX_REQUEST_BYTES`].
pub(super) fn grpc_routes(
    health: HealthServer<impl Health>,
    config: &Settings,
    users: &Users,
    login: Login,
    login_counters: Arc<LoginCounters>,
    hasher: Hasher,
    sessions: Sessions,
) -> Result<Routes, Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::Startup(format!("reflection: {e}"));
    let admin = AdminToken::new(config.admin_token.as_ref().map(ExposeSecret::expose_secret));
    let produto = ProdutoSvc::new(
        users.clone(),
        login,
        hasher,
        Rights::new(sessions, admin, Audit::new(users.db().clone())),
        config.password_policy,
    );
    Ok(Routes::new(health)
        .add_service(reflection().build_v1().map_err(reflection_error)?)
        .add_service(reflection().build_v1alpha().map_err(reflection_error)?)
        .add_service(
            ProdutoServiceServer::new(produto).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            PoolServiceServer::new(PoolSvc::new(users.db().clone(), login_counters))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        ))
}

/// tonic's server with produto's connection settings: the one place they are set, for
/// produto-server and for the bench's floors (`benches/load/floor.rs`), so that the two
/// compare like with like.
pub fn server_builder(limits: &Limits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Dead peers are noticed and their connections closed, not kept forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// The accepted connections of `listener`, as the server takes them.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    // Small request/response messages: Nagle's delay would dominate their latency.
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The gRPC server over `incoming`, every call through `layer`, until `stop` is cancelled
/// (then it stops accepting and finishes the calls in flight).
pub(super) fn serve_grpc(
    incoming: TcpIncoming,
    tls: Option<ServerTlsConfig>,
    limits: Limits,
    layer: RpcLayer,
    routes: Routes,
    stop: &CancellationToken,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, Error> {
    let mut builder = server_builder(&limits);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Startup(format!("TLS: {e}")))?;
    }
    Ok(builder
        .layer(layer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            super::coalesce::coalesced(incoming),
            stop.clone().cancelled_owned(),
        ))
}

/// Reads the TLS files.
pub(super) fn tls_config(settings: &TlsSettings) -> Result<ServerTlsConfig, Error> {
    let read = |path: &std::path::PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| Error::Startup(format!("cannot read {what} {}: {e}", path.display())))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&settings.cert, "PRODUTO_TLS_CERT")?,
        read(&settings.key, "PRODUTO_TLS_KEY")?,
    ));
    if let Some(ca) = &settings.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "PRODUTO_TLS_CLIENT_CA")?));
    }
    Ok(tls)
}
