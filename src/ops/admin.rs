//! The admin HTTP port: `GET /metrics` (Prometheus), `GET /health` (the old bot's JSON
//! health page), `GET /livez` and `GET /readyz`. Readiness is the one the gRPC health
//! service reports; liveness is "the process serves". `/livez`, `/readyz`, the `/metrics`
//! answer and serving are the bot's too: they live in `produto_client::admin`.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use produto_client::admin::{metrics_response, probes, status};
use serde_json::json;

use crate::{db::Db, ops::metrics::Metrics, ready::ReadyFlag};

pub use produto_client::admin::serve;

/// What the handlers read.
#[derive(Clone)]
struct Admin {
    db: Db,
    ready: ReadyFlag,
    metrics: Arc<Metrics>,
}

/// The admin routes.
pub fn router(db: Db, ready: ReadyFlag, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .merge(probes(|admin: &Admin| admin.ready.get()))
        .with_state(Admin { db, ready, metrics })
}

async fn metrics_page(State(admin): State<Admin>) -> Response {
    metrics_response(admin.metrics.encode())
}

/// The old bot's shape, with a few more fields: 200 when ready, 503 when not.
async fn health(State(admin): State<Admin>) -> Response {
    let ready = admin.ready.get();
    let s = admin.db.snapshot();
    let body = json!({
        "status": if ready { "healthy" } else { "unhealthy" },
        "ready": ready,
        "database": {
            "healthy": s.healthy,
            "backend": s.backend,
            "migrated": admin.db.is_migrated(),
            "last_probe_latency_ms": s.last_probe_latency_us as f64 / 1000.0,
            "last_probe_unix_ms": s.last_probe_unix_ms,
            "pool": {
                "status": s.status,
                "min_connections": s.min_connections,
                "max_connections": s.max_connections,
                "pool_size": s.pool_size,
                "used_connections": s.used_connections,
                "idle_connections": s.idle_connections,
                "requests_waiting": s.requests_waiting,
            },
        },
        "servers": admin.db.server_views().iter().map(|v| json!({
            "role": v.role.as_str(),
            "address": v.address,
            "healthy": v.pool.healthy,
            "readable": v.readable,
            "replay_lag_ms": v.lag.map(|l| l.as_secs_f64() * 1000.0),
            "reads_total": v.reads_total,
            "pool_size": v.pool.pool_size,
            "used_connections": v.pool.used_connections,
            "idle_connections": v.pool.idle_connections,
            "requests_waiting": v.pool.requests_waiting,
        })).collect::<Vec<_>>(),
    });
    (
        status(ready),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
