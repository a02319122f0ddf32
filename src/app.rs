//! Building the server (binding its ports first, so tests can use port 0), serving it, and
//! the graceful shutdown: readiness off, Watch streams ended, in-flight calls drained within
//! a bound, the admin port stopped, the pool closed.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};
use tonic::{
    service::Routes,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::{
    Error,
    auth::{AdminToken, CallerAuth},
    config::{Limits, Settings, TlsSettings},
    db::{Db, ProbeConnection},
    middleware::RpcLayer,
    ops::{admin, metrics::Metrics},
    password::Hasher,
    pb::{pool_service_server::PoolServiceServer, produto_service_server::ProdutoServiceServer},
    ready::ReadyFlag,
    service::{PoolSvc, ProdutoSvc, Readiness},
    throttle::Throttle,
};

/// Largest request message accepted: the largest valid request is ~1.3 KiB.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Bound on closing the pool once serving has stopped.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two migration attempts while the database is unreachable.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on the admin port's own graceful stop (a scrape in flight).
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the users still on a legacy hash are counted for `/metrics` (a login that
/// replaces one lowers the gauge at once; the count catches imports and other instances).
const LEGACY_COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// A server bound to its port, ready to run.
pub struct Application {
    config: Settings,
    incoming: TcpIncoming,
    local_addr: SocketAddr,
    /// The admin HTTP port, when configured.
    admin: Option<(TcpListener, SocketAddr)>,
    db: Db,
    hasher: Hasher,
    tls: Option<ServerTlsConfig>,
    callers: Arc<CallerAuth>,
}

impl Application {
    /// Checks the configuration, builds the (lazy) pool and binds the listeners. Nothing here
    /// waits for the database: a database that is down at start only delays readiness.
    pub async fn build(config: Settings) -> Result<Self, Error> {
        if config
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            tracing::warn!("PRODUTO_ADMIN_TOKEN is shorter than 16 bytes: use a long random token");
        }
        let db = Db::new(&config.db)?;
        let hasher = Hasher::new(&config.hashing)?;
        let tls = config.tls.as_ref().map(tls_config).transpose()?;
        let callers =
            CallerAuth::from_file(config.caller_auth, config.caller_tokens_file.as_deref())
                .map_err(Error::Startup)?;
        let (listener, local_addr) = bind(config.addr, "").await?;
        let incoming = incoming(listener);
        let admin = match config.admin_addr {
            None => None,
            Some(addr) => Some(bind(addr, " (admin port)").await?),
        };
        Ok(Application {
            config,
            incoming,
            local_addr,
            admin,
            db,
            hasher,
            tls,
            callers: Arc::new(callers),
        })
    }

    /// The address actually bound (the port is chosen by the OS when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin HTTP port's address, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Caller authentication as configured (its `Debug` shows the caller names, never tokens).
    pub fn callers(&self) -> &CallerAuth {
        &self.callers
    }

    /// The shared pool, for tests and tools that want to look at it.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown` completes, then shuts down gracefully. Returns once the pool
    /// is closed, within `shutdown_delay` plus the drain timeout, the admin port's and the
    /// pool's close bounds.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let Application {
            config,
            incoming,
            admin,
            db,
            hasher,
            tls,
            callers,
            ..
        } = self;

        let (reporter, health_server) = tonic_health::server::health_reporter();
        let ready = ReadyFlag::default();
        let readiness = Readiness::new(reporter, ready.clone()).await;
        let metrics = Arc::new(Metrics::new(&db, ready.clone()));

        // Everything that can fail comes before anything is spawned.
        let throttle = Throttle::new(config.throttle, db.clone());
        let routes = grpc_routes(health_server, &config, &db, hasher, throttle.clone())?;
        let layer = RpcLayer::new(
            metrics.rpc(),
            config.limits.max_concurrent_calls,
            MAX_REQUEST_BYTES,
            callers,
        );
        let stop_serving = CancellationToken::new();
        let server = serve_grpc(incoming, tls, config.limits, layer, routes, &stop_serving)?;
        tokio::pin!(server);

        let stop_tasks = CancellationToken::new();
        let tasks = start_background(&config, &db, throttle, readiness, &stop_tasks);
        let admin = admin.map(|(listener, _)| {
            AdminPort::serve(listener, admin::router(db.clone(), ready, metrics.clone()))
        });

        let failed_early = tokio::select! {
            result = &mut server => Some(result),
            () = begin_shutdown(shutdown, &stop_tasks, &tasks, &stop_serving) => None,
        };
        let result = match failed_early {
            // The server ended on its own, before any shutdown was asked.
            Some(result) => {
                stop_tasks.cancel();
                result.map_err(|e| Error::Startup(format!("server failed: {e}")))
            }
            None => {
                drain(server, config.drain_timeout).await;
                Ok(())
            }
        };
        close(admin, &db).await;
        if result.is_ok() {
            tracing::info!("stopped");
        }
        result
    }
}

/// Binds `addr` (`what` names the port in the error) and reads back the address bound.
async fn bind(addr: SocketAddr, what: &str) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Startup(format!("cannot listen on {addr}{what}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Startup(format!("cannot read the bound address: {e}")))?;
    Ok((listener, bound))
}

/// The background tasks, until `stop`: the supervisor (migrations, the readiness probe, the
/// NOT_SERVING delay at shutdown), the throttle's purge of expired rows and the count of
/// users on legacy hashes.
fn start_background(
    config: &Settings,
    db: &Db,
    throttle: Throttle,
    readiness: Readiness,
    stop: &CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    tasks.spawn(supervise(
        db.clone(),
        throttle.clone(),
        readiness,
        config.probe_interval,
        !config.no_migrate,
        config.shutdown_delay,
        stop.clone(),
    ));
    tasks.spawn(throttle.purge_until_stopped(stop.clone()));
    tasks.spawn(count_legacy_hashes(db.clone(), stop.clone()));
    tasks
}

/// Counts the users on legacy hashes as soon as the schema is in place, then every
/// [`LEGACY_COUNT_INTERVAL`], until `stop`. A failed count keeps the last figures.
async fn count_legacy_hashes(db: Db, stop: CancellationToken) {
    // Until the supervisor has the schema in place, look again shortly.
    const SCHEMA_POLL: Duration = Duration::from_millis(200);
    loop {
        let pause = if db.is_migrated() {
            if let Err(e) = db.refresh_legacy_hash_counts().await {
                tracing::debug!(error = %e, "could not count the users on legacy hashes");
            }
            LEGACY_COUNT_INTERVAL
        } else {
            SCHEMA_POLL
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The admin HTTP port while it serves. It outlives the drain (the drain's metrics can still
/// be scraped) and stops before the pool closes, or is aborted when dropped.
struct AdminPort {
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl AdminPort {
    fn serve(listener: TcpListener, router: axum::Router) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(admin::serve(listener, router, stop.clone()));
        AdminPort {
            stop,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Stops it, waiting at most [`ADMIN_STOP_TIMEOUT`] for a scrape in flight.
    async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(ADMIN_STOP_TIMEOUT, self.task)
            .await
            .is_err()
        {
            tracing::warn!("admin port did not stop in time");
        }
    }
}

/// Every gRPC service: health; reflection of our services, the health service's and
/// google.rpc's error details (so that grpcurl can describe the services and decode our
/// errors' details), in v1 and in v1alpha for clients (older grpcurl, grpcio) that only speak
/// it; ProdutoService and PoolService, each refusing requests over [`MAX_REQUEST_BYTES`].
fn grpc_routes(
    health: HealthServer<impl Health>,
    config: &Settings,
    db: &Db,
    hasher: Hasher,
    throttle: Throttle,
) -> Result<Routes, Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::Startup(format!("reflection: {e}"));
    let produto = ProdutoSvc::new(
        db.clone(),
        hasher,
        AdminToken::new(config.admin_token.as_ref().map(ExposeSecret::expose_secret)),
        throttle,
    );
    Ok(Routes::new(health)
        .add_service(reflection().build_v1().map_err(reflection_error)?)
        .add_service(reflection().build_v1alpha().map_err(reflection_error)?)
        .add_service(
            ProdutoServiceServer::new(produto).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            PoolServiceServer::new(PoolSvc::new(db.clone()))
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
fn serve_grpc(
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
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()))
}

/// Waits for `shutdown`, then has the supervisor turn every health status NOT_SERVING, end
/// the Watch streams and wait `shutdown_delay` before the server stops accepting, so that
/// probes see NOT_SERVING, not a refusal. Bounded by the shutdown delay once asked.
async fn begin_shutdown(
    shutdown: impl Future<Output = ()>,
    stop_tasks: &CancellationToken,
    tasks: &TaskTracker,
    stop_serving: &CancellationToken,
) {
    shutdown.await;
    tracing::info!("shutdown requested: readiness off, draining");
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    stop_serving.cancel();
}

/// Lets the calls in flight finish, for at most `timeout`; the connections left are closed
/// when `server` is dropped.
async fn drain(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    timeout: Duration,
) {
    match tokio::time::timeout(timeout, server).await {
        Ok(Ok(())) => tracing::info!("in-flight calls drained"),
        Ok(Err(e)) => tracing::error!(error = %e, "server error while draining"),
        Err(_) => tracing::warn!(
            drain_timeout = ?timeout,
            "drain timed out; closing the remaining connections"
        ),
    }
}

/// Stops the admin port, then closes the pools: within [`ADMIN_STOP_TIMEOUT`] plus
/// [`POOL_CLOSE_TIMEOUT`].
async fn close(admin: Option<AdminPort>, db: &Db) {
    if let Some(admin) = admin {
        admin.stop().await;
    }
    db.close(POOL_CLOSE_TIMEOUT).await;
}

/// Reads the TLS files.
fn tls_config(settings: &TlsSettings) -> Result<ServerTlsConfig, Error> {
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

/// `produto-server migrate`: applies the migrations once and returns (an init container or
/// a Job retries on failure).
pub async fn migrate(config: Settings) -> Result<(), Error> {
    let db = Db::new(&config.db)?;
    let result = db
        .migrate()
        .await
        .map_err(|e| Error::Startup(format!("migrations failed: {e}")));
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}

/// `produto-server adicionar-usuario <usuario> <nivel>`: applies the migrations and creates
/// one user with the same rules as AdicionarUsuario, straight in the database (no token: the
/// operator who runs it already holds the database's credentials). Returns the new id.
pub async fn add_user(
    config: Settings,
    usuario: String,
    senha: String,
    nivel: i32,
) -> Result<i64, Error> {
    use crate::domain::{Nivel, Senha, Usuario};
    let usuario = Usuario::parse(usuario)?;
    let senha = Senha::parse_new(senha)?;
    let nivel = Nivel::parse(nivel)?;
    let db = Db::new(&config.db)?;
    let result = async {
        db.migrate()
            .await
            .map_err(|e| Error::Startup(format!("migrations failed: {e}")))?;
        let hash = Hasher::new(&config.hashing)?.hash(senha).await?;
        db.insert_user(&usuario, &hash, nivel).await
    }
    .await;
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}

/// `produto-server import-users`: the old bot's users into this server's database (see
/// [`crate::import`]). Applies the migrations first, unless dry: a dry run writes nothing, and
/// on a target not migrated yet it counts every valid row as one it would import.
pub async fn import_users(
    config: Settings,
    import: crate::import::ImportSettings,
) -> Result<crate::import::Report, Error> {
    let db = Db::new(&config.db)?;
    let result = async {
        let migrated = if import.dry_run {
            db.check_migrated().await.is_ok()
        } else {
            db.migrate()
                .await
                .map_err(|e| Error::Startup(format!("migrations failed: {e}")))?;
            true
        };
        let hasher = Hasher::new(&config.hashing)?;
        crate::import::import_users(&db, &hasher, &import, migrated).await
    }
    .await;
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}

/// Reads the connection budget and warns when this instance's
/// pool could not reach its maximum (README, "Running many instances").
async fn warn_if_over_budget(db: &Db) {
    match db.check_budget().await {
        Ok(Some(budget)) if !budget.ok() => tracing::warn!(
            max_connections = budget.max_connections,
            superuser_reserved = budget.reserved,
            in_use_by_others = budget.in_use_by_others,
            available = budget.available(),
            needed = budget.needed,
            "PostgreSQL cannot serve this instance's largest pool (PRODUTO_MAX_CONNECTIONS + \
             the probe): lower PRODUTO_MAX_CONNECTIONS or the replica count, or raise \
             max_connections"
        ),
        Ok(Some(budget)) => tracing::info!(
            max_connections = budget.max_connections,
            available = budget.available(),
            needed = budget.needed,
            "connection budget ok"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the connection budget"),
    }
}

/// Applies migrations (or, with `apply_migrations` false, waits until someone else has
/// applied them), retrying with a backoff while the database is unreachable. `None` when
/// stopped first.
async fn ensure_schema(db: &Db, apply_migrations: bool, stop: &CancellationToken) -> Option<()> {
    let mut backoff = Duration::from_millis(100);
    while !db.is_migrated() {
        let attempt = async {
            if apply_migrations {
                db.migrate().await.map_err(|e| e.to_string())
            } else {
                db.check_migrated().await
            }
        };
        tokio::select! {
            () = stop.cancelled() => return None,
            result = attempt => match result {
                Ok(()) if apply_migrations => {
                    tracing::info!(backend = db.backend_name(), "schema migrated");
                }
                Ok(()) => tracing::info!(backend = db.backend_name(), "schema found migrated"),
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "schema not in place; not ready");
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MIGRATE_RETRY_MAX);
                }
            }
        }
    }
    Some(())
}

/// The background task: applies migrations (or, with `apply_migrations` false, waits until
/// someone else has applied them), retrying while the database is unreachable; then probes
/// the database every `interval`, reports readiness and tells the throttle (which moves its
/// counting back to the database once the primary answers again), until stopped; then reports
/// NOT_SERVING for `shutdown_delay` before the listener may close.
async fn supervise(
    db: Db,
    throttle: Throttle,
    mut readiness: Readiness,
    interval: Duration,
    apply_migrations: bool,
    shutdown_delay: Duration,
    stop: CancellationToken,
) {
    // The probe's first connection is opened while the schema is checked: at startup each
    // new connection is a TLS handshake (~100 ms on loopback, docs/benchmarks.md). Only a healthy
    // early reading is used (one taken while the database was still down would hold
    // readiness back for a probe interval)...
    let mut probe = ProbeConnection::default();
    let (schema, (early, probed_at)) =
        tokio::join!(ensure_schema(&db, apply_migrations, &stop), async {
            (db.probe(&mut probe).await, Instant::now())
        },);
    if schema.is_none() {
        // Never ready: nobody is sending, no delay needed.
        readiness.shut_down(Duration::ZERO).await;
        return;
    }
    // Before readiness, so that no startup query runs under the first calls; after the
    // schema, because no query runs before the schema is in place.
    warn_if_over_budget(&db).await;
    let mut healthy_early = early && probed_at.elapsed() < interval;
    loop {
        let healthy = std::mem::take(&mut healthy_early)
            || tokio::select! {
                () = stop.cancelled() => break,
                healthy = db.probe(&mut probe) => healthy,
            };
        readiness.set(healthy).await;
        if !healthy {
            // Connections idle in the pool may have died with the database: have them
            // pinged before reuse, so the first calls after it returns do not fail.
            db.stats().mark_suspect();
            tracing::warn!("database probe failed; not ready");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = throttle.after_probe() => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    readiness.shut_down(shutdown_delay).await;
}
