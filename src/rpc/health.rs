//! Readiness and liveness on the standard `grpc.health.v1.Health` service.
//!
//! `""` and `produto.v1.ProdutoService` follow readiness (schema migrated and the last probe
//! succeeded); `liveness` and `produto.v1.PoolService` are SERVING while the process runs.
//! Only transitions are reported, because tonic-health repeats a status set twice to Watch
//! clients. The same readiness is shared, as a [`ReadyFlag`], with the admin HTTP port.

use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    pb::{pool_service_server::PoolServiceServer, produto_service_server::ProdutoServiceServer},
    ready::ReadyFlag,
    rpc::{PoolSvc, ProdutoSvc},
};

/// The services as served: their health names come from their generated `NamedService`.
type Produto = ProdutoServiceServer<ProdutoSvc>;
type Pool = PoolServiceServer<PoolSvc>;

/// The whole server's status (the gRPC health protocol's empty name).
const OVERALL: &str = "";
/// The health names that follow readiness.
pub const READINESS_SERVICES: [&str; 2] = [OVERALL, Produto::NAME];
/// The name for a liveness probe: SERVING while the process runs.
pub const LIVENESS: &str = "liveness";
pub const POOL_SERVICE: &str = Pool::NAME;

/// Owns the health reporter and remembers what it last reported.
pub struct Readiness {
    reporter: HealthReporter,
    ready: bool,
    flag: ReadyFlag,
}

impl Readiness {
    /// Registers every name, readiness NOT_SERVING (tonic-health starts `""` at SERVING);
    /// `flag` follows readiness from then on.
    pub async fn new(reporter: HealthReporter, flag: ReadyFlag) -> Self {
        flag.set(false);
        let readiness = Readiness {
            reporter,
            ready: false,
            flag,
        };
        readiness.report(false).await;
        readiness
            .reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        readiness.reporter.set_serving::<Pool>().await;
        readiness
    }

    /// Reports readiness if it changed.
    pub async fn set(&mut self, ready: bool) {
        if ready == self.ready {
            return;
        }
        self.ready = ready;
        self.flag.set(ready);
        tracing::info!(ready, "readiness changed");
        self.report(ready).await;
    }

    /// Sets the names that follow readiness.
    async fn report(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(OVERALL, status).await;
        if ready {
            self.reporter.set_serving::<Produto>().await;
        } else {
            self.reporter.set_not_serving::<Produto>().await;
        }
    }

    /// Shutdown: every name turns NOT_SERVING, stays so for `delay` (the port still serves),
    /// then is removed, which ends open Watch streams (they received NOT_SERVING first) so
    /// they do not hold the drain open.
    pub async fn shut_down(mut self, delay: std::time::Duration) {
        self.flag.set(false);
        self.report(false).await;
        self.reporter
            .set_service_status(LIVENESS, ServingStatus::NotServing)
            .await;
        self.reporter.set_not_serving::<Pool>().await;
        // Still serving, already NOT_SERVING: whoever polls readiness (a balancer, a probe
        // that is not Kubernetes') has this long to stop sending before the port closes.
        if !delay.is_zero() {
            tracing::info!(?delay, "not ready; serving on until the listener closes");
            tokio::time::sleep(delay).await;
        }
        // tonic-health clears by name only.
        for name in READINESS_SERVICES
            .into_iter()
            .chain([LIVENESS, POOL_SERVICE])
        {
            self.reporter.clear_service_status(name).await;
        }
    }
}
