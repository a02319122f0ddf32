//! The admin HTTP port: `GET /metrics` (Prometheus), `GET /health` (the old bot's JSON
//! health page), `GET /livez` and `GET /readyz`. Readiness is the one the gRPC health
//! service reports; liveness is "the process serves".

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    db::Db,
    ops::metrics::{CONTENT_TYPE, Metrics},
    ready::ReadyFlag,
};

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
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Admin { db, ready, metrics })
}

/// Serves the admin routes on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

async fn metrics_page(State(admin): State<Admin>) -> Response {
    match admin.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    let ready = admin.ready.get();
    (status(ready), if ready { "ready\n" } else { "not ready\n" })
}

fn status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
