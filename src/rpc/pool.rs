//! `produto.v1.PoolService`: the pool's live figures and the throttled logins, from memory.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    db::{Db, PoolSnapshot},
    login::LoginCounters,
    pb::{self, pool_service_server::PoolService},
};

#[derive(Clone)]
pub struct PoolSvc {
    db: Db,
    logins: Arc<LoginCounters>,
}

impl PoolSvc {
    pub fn new(db: Db, logins: Arc<LoginCounters>) -> Self {
        PoolSvc { db, logins }
    }
}

#[tonic::async_trait]
impl PoolService for PoolSvc {
    async fn pool_status(
        &self,
        _request: Request<pb::PoolStatusRequest>,
    ) -> Result<Response<pb::PoolStatusResponse>, Status> {
        let mut response: pb::PoolStatusResponse = self.db.snapshot().into();
        response.logins_throttled_total = self.logins.snapshot().logins_throttled_total;
        response.pools = self
            .db
            .server_views()
            .into_iter()
            .map(|v| pb::ServerPool {
                role: v.role.as_str().to_owned(),
                address: v.address,
                healthy: v.pool.healthy,
                readable: v.readable,
                replay_lag_ms: v
                    .lag
                    .map_or(-1, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)),
                pool_size: v.pool.pool_size,
                idle_connections: v.pool.idle_connections,
                used_connections: v.pool.used_connections,
                requests_waiting: v.pool.requests_waiting,
                acquires_total: v.pool.acquires_total,
                acquire_timeouts_total: v.pool.acquire_timeouts_total,
                reads_total: v.reads_total,
                min_connections: v.pool.min_connections,
                max_connections: v.pool.max_connections,
            })
            .collect();
        Ok(Response::new(response))
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
            // The login feature's, set by the service.
            logins_throttled_total: 0,
            pools: Vec::new(),
        }
    }
}
