//! Readiness and liveness on the standard `grpc.health.v1.Health` service.
//!
//! `""` and `produto.v1.ProdutoService` follow readiness (schema migrated and the last probe
//! succeeded); `liveness` and `produto.v1.PoolService` are SERVING while the process runs.
//! Only transitions are reported, because tonic-health repeats a status set twice to Watch
//! clients. The same readiness is shared, as a [`ReadyFlag`], with the admin HTTP port.

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::ready::ReadyFlag;

/// The health service names this server registers.
pub const READINESS_SERVICES: [&str; 2] = ["", "produto.v1.ProdutoService"];
pub const LIVENESS: &str = "liveness";
pub const POOL_SERVICE: &str = "produto.v1.PoolService";

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
        for name in READINESS_SERVICES {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        for name in [LIVENESS, POOL_SERVICE] {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        Readiness {
            reporter,
            ready: false,
            flag,
        }
    }

    /// Reports readiness if it changed.
    pub async fn set(&mut self, ready: bool) {
        if ready == self.ready {
            return;
        }
        self.ready = ready;
        self.flag.set(ready);
        tracing::info!(ready, "readiness changed");
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in READINESS_SERVICES {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Shutdown: every name turns NOT_SERVING, stays so for `delay` (the port still serves),
    /// then is removed, which ends open Watch streams (they received NOT_SERVING first) so
    /// they do not hold the drain open.
    pub async fn shut_down(mut self, delay: std::time::Duration) {
        self.flag.set(false);
        for name in READINESS_SERVICES
            .into_iter()
            .chain([LIVENESS, POOL_SERVICE])
        {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        // Still serving, already NOT_SERVING: whoever polls readiness (a balancer, a probe
        // that is not Kubernetes') has this long to stop sending before the port closes.
        if !delay.is_zero() {
            tracing::info!(?delay, "not ready; serving on until the listener closes");
            tokio::time::sleep(delay).await;
        }
        for name in READINESS_SERVICES
            .into_iter()
            .chain([LIVENESS, POOL_SERVICE])
        {
            self.reporter.clear_service_status(name).await;
        }
    }
}
