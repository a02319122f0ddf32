//! The service's readiness as the bot sees it: `grpc.health.v1` Check on `""`, and PoolStatus
//! beside it for `/status` and the bot's health page.

use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::{
    Bot,
    calls::{HEALTH, POOL},
};
use produto_client::pb;

/// What the service's readiness check (`grpc.health.v1` Check on `""`) answered.
#[derive(Debug)]
pub enum ServiceHealth {
    /// SERVING: the service and its database answer.
    Ready,
    /// The service answers, but is not ready (its database is away, or it is shutting down).
    NotReady,
    /// No answer: the service is down, unreachable or too slow.
    Unreachable(Status),
}

impl Bot {
    /// Asks the service whether it is ready, and logs the answer: for the start of a
    /// transport, so that whoever runs the bot learns at once that the service is away.
    pub async fn check_service(&self) -> ServiceHealth {
        let health = self.readiness().await;
        match &health {
            ServiceHealth::Ready => tracing::info!("service ready"),
            ServiceHealth::NotReady => {
                tracing::warn!("service up but not ready; commands may fail until it is")
            }
            ServiceHealth::Unreachable(status) => tracing::warn!(
                code = ?status.code(),
                error = status.message(),
                "service unreachable; commands will say so until it is back"
            ),
        }
        health
    }

    /// The service's readiness, without logging.
    pub async fn readiness(&self) -> ServiceHealth {
        self.readiness_for(None).await
    }

    /// The service's readiness and its pool's figures (`None` when PoolStatus failed), asked
    /// at once: for `/status` and the bot's health page.
    pub async fn service_snapshot(
        &self,
    ) -> (ServiceHealth, Result<pb::PoolStatusResponse, Status>) {
        self.snapshot_for(None).await
    }

    pub(super) async fn snapshot_for(
        &self,
        end_user: Option<&MetadataValue<Ascii>>,
    ) -> (ServiceHealth, Result<pb::PoolStatusResponse, Status>) {
        let pool = self.idempotent(POOL, "PoolStatus", || {
            let mut pool = self.pool.clone();
            let request = self.request(pb::PoolStatusRequest {}, end_user);
            async move { pool.pool_status(request).await }
        });
        tokio::join!(self.readiness_for(end_user), pool)
    }

    async fn readiness_for(&self, end_user: Option<&MetadataValue<Ascii>>) -> ServiceHealth {
        let check = self.idempotent(HEALTH, "Check", || {
            let mut health = self.health.clone();
            let request = self.request(
                HealthCheckRequest {
                    service: String::new(),
                },
                end_user,
            );
            async move { health.check(request).await }
        });
        match check.await {
            Ok(r) if r.status == ServingStatus::Serving as i32 => ServiceHealth::Ready,
            Ok(_) => ServiceHealth::NotReady,
            // A server that has not registered `""` (yet) is not ready either.
            Err(status) if status.code() == Code::NotFound => ServiceHealth::NotReady,
            Err(status) => ServiceHealth::Unreachable(status),
        }
    }
}
