//! `produto.v1.PoolService`: the pool's live figures, from memory.

use tonic::{Request, Response, Status};

use crate::{
    db::{Db, PoolSnapshot},
    pb::{self, pool_service_server::PoolService},
};

#[derive(Clone)]
pub struct PoolSvc {
    db: Db,
}

impl PoolSvc {
    pub fn new(db: Db) -> Self {
        PoolSvc { db }
    }
}

#[tonic::async_trait]
impl PoolService for PoolSvc {
    async fn pool_status(
        &self,
        _request: Request<pb::PoolStatusRequest>,
    ) -> Result<Response<pb::PoolStatusResponse>, Status> {
        Ok(Response::new(self.db.snapshot().into()))
    }
}

impl From<PoolSnapshot> for pb::PoolStatusResponse {
    fn from(s: PoolSnapshot) -> Self {
        pb::PoolStatusResponse {
            status: s.status.to_owned(),
            healthy: s.healthy,
            min_connections: s.min_connections,
            max_connections: s.max_connections,
            pool_size: s.pool_size,
            used_connections: s.used_connections,
            idle_connections: s.idle_connections,
            requests_waiting: s.requests_waiting,
            acquires_total: s.acquires_total,
            acquire_timeouts_total: s.acquire_timeouts_total,
            acquire_errors_total: s.acquire_errors_total,
            acquire_wait_ms_max: s.acquire_wait_ms_max,
            connections_opened_total: s.connections_opened_total,
            connections_lost_total: s.connections_lost_total,
            last_probe_latency_us: s.last_probe_latency_us,
            last_probe_unix_ms: s.last_probe_unix_ms,
            backend: s.backend.to_owned(),
            logins_throttled_total: s.logins_throttled_total,
        }
    }
}
