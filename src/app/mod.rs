//! Building the server (binding its ports first, so tests can use port 0), serving it, and
//! the graceful shutdown: readiness off, Watch streams ended, in-flight calls drained within
//! a bound, the admin port stopped, the pool closed.
//!
//! Here the [`Application`] (build, run until stopped) and the shutdown's steps; beside it
//! the gRPC side (`grpc.rs`: routes, TLS, the one tonic builder; `coalesce.rs`: the
//! connections' coalesced writes), the background tasks
//! (`supervise.rs`: migrations, the readiness probe, the budget warning, the legacy-hash
//! count) and the one-shot commands (`commands.rs`).

mod coalesce;
mod commands;
mod grpc;
mod supervise;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};
use tonic::transport::{ServerTlsConfig, server::TcpIncoming};

use crate::{
    Error,
    auth::CallerAuth,
    config::Settings,
    db::Db,
    login::{Login, LoginCounters, throttle::Throttle},
    ops::{admin, metrics::Metrics},
    password::Hasher,
    ready::ReadyFlag,
    rpc::Readiness,
    rpc::middleware::RpcLayer,
    sessions::Sessions,
    users::Users,
};
use grpc::{grpc_routes, serve_grpc, tls_config};
use supervise::start_background;

pub use commands::{add_user, import_users, migrate};
pub use grpc::{MAX_REQUEST_BYTES, incoming, server_builder};

/// Bound on closing the pool once serving has stopped.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the admin port's own graceful stop (a scrape in flight).
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A server bound to its port, ready to run.
pub struct Application {
    config: Settings,
    incoming: TcpIncoming,
    local_addr: SocketAddr,
    /// The admin HTTP port, when configured.
    admin: Option<(TcpListener, SocketAddr)>,
    db: Db,
    /// The login feature's counters, shared by the login check, the throttle, PoolStatus
    /// and `/metrics`.
    login_counters: Arc<LoginCounters>,
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
            login_counters: Arc::default(),
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

    /// The login feature's counters, for tests and tools that want to look at them.
    pub fn login_counters(&self) -> &Arc<LoginCounters> {
        &self.login_counters
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
            login_counters,
            hasher,
            tls,
            callers,
            ..
        } = self;

        let (reporter, health_server) = tonic_health::server::health_reporter();
        let ready = ReadyFlag::default();
        let readiness = Readiness::new(reporter, ready.clone()).await;
        let users = Users::new(db.clone());
        let metrics = Arc::new(
            Metrics::new(&db, ready.clone())
                .with_users(&users)
                .with_login(&login_counters),
        );

        // Everything that can fail comes before anything is spawned.
        let throttle = Throttle::new(config.throttle, db.clone(), login_counters.clone());
        let login = Login::new(
            users.clone(),
            hasher.clone(),
            throttle.clone(),
            login_counters.clone(),
        );
        let sessions = Sessions::new(db.clone(), config.sessions);
        let routes = grpc_routes(
            health_server,
            &config,
            &users,
            login,
            login_counters,
            hasher,
            sessions.clone(),
        )?;
        let layer = RpcLayer::new(
            metrics.rpc(),
            config.limits.max_concurrent_calls,
            MAX_REQUEST_BYTES,
            callers,
        )
        .trust_all_traces(config.trace_trust_all);
        let stop_serving = CancellationToken::new();
        let server = serve_grpc(incoming, tls, config.limits, layer, routes, &stop_serving)?;
        tokio::pin!(server);

        let stop_tasks = CancellationToken::new();
        // A database that can never be used as configured stops the server.
        let (fatal, unusable) = tokio::sync::oneshot::channel();
        let tasks = start_background(
            &config,
            &users,
            (throttle, sessions),
            readiness,
            &stop_tasks,
            fatal,
        );
        let admin = admin.map(|(listener, _)| {
            AdminPort::serve(listener, admin::router(db.clone(), ready, metrics.clone()))
        });

        let failed_early = tokio::select! {
            result = &mut server => {
                Some(result.map_err(|e| Error::Startup(format!("server failed: {e}"))))
            }
            Ok(e) = unusable => Some(Err(e)),
            () = begin_shutdown(shutdown, &stop_tasks, &tasks, &stop_serving) => None,
        };
        let result = match failed_early {
            // The server ended on its own (or cannot go on), before any shutdown was asked.
            Some(result) => {
                stop_tasks.cancel();
                result
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
