//! The bot's own admin HTTP port: `GET /health` in the old bot's JSON shape (the service's
//! readiness and pool figures plus the transport's state), `/livez`, `/readyz` and Prometheus
//! `/metrics`. The service is asked at most once a second, however many probes arrive.
//! `/livez`, `/readyz`, the `/metrics` answer and serving are the server's too: they live in
//! `produto_client::admin`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{Bot, ServiceHealth};
use produto_client::{
    admin::{metrics_response, probes, status},
    pb::PoolStatusResponse,
};

pub use produto_client::admin::serve;

/// How long one answer of the service is reused for.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Whether the chat transport is doing its job: polling running, or webhook registered.
/// Set by the transport, read by the health page.
#[derive(Debug)]
pub struct TransportState {
    /// `polling`, `webhook` or `stdin`.
    pub mode: &'static str,
    ready: AtomicBool,
}

impl TransportState {
    pub fn new(mode: &'static str) -> Arc<Self> {
        Arc::new(TransportState {
            mode,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// What the service answered, as the health page shows it.
#[derive(Clone)]
struct ServiceView {
    /// `None`: ready; otherwise why not.
    not_ready: Option<String>,
    pool: Option<PoolStatusResponse>,
}

#[derive(Clone)]
struct Admin {
    bot: Arc<Bot>,
    transport: Arc<TransportState>,
    /// The last answer and when it came. A tokio mutex, held across the call, so that a
    /// storm of probes waits for one call instead of making many.
    cache: Arc<Mutex<Option<(Instant, ServiceView)>>>,
}

/// The admin routes.
pub fn router(bot: Arc<Bot>, transport: Arc<TransportState>) -> Router {
    Router::new()
        .route("/health", get(health))
        // Ready when the transport is: a bot whose service is down still answers its users
        // (with "serviço indisponível"), so it stays in rotation.
        .merge(probes(|admin: &Admin| admin.transport.is_ready()))
        .route("/metrics", get(metrics_page))
        .with_state(Admin {
            bot,
            transport,
            cache: Arc::new(Mutex::new(None)),
        })
}

impl Admin {
    async fn service(&self) -> ServiceView {
        let mut cache = self.cache.lock().await;
        if let Some((at, view)) = cache.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return view.clone();
        }
        let (health, pool) = self.bot.service_snapshot().await;
        let not_ready = match health {
            ServiceHealth::Ready => None,
            ServiceHealth::NotReady => Some("the service answers but is not ready".to_string()),
            ServiceHealth::Unreachable(status) => {
                Some(format!("the service is unreachable ({:?})", status.code()))
            }
        };
        let view = ServiceView {
            not_ready,
            pool: pool.ok(),
        };
        *cache = Some((Instant::now(), view.clone()));
        view
    }
}

/// The old bot's shape: 200 when the service, its database and the transport are ready, 503
/// with the reasons otherwise.
async fn health(State(admin): State<Admin>) -> Response {
    let service = admin.service().await;
    let transport_ready = admin.transport.is_ready();
    let database_healthy = service.pool.as_ref().is_some_and(|p| p.healthy);
    let mut reasons = Vec::new();
    if let Some(why) = &service.not_ready {
        reasons.push(why.clone());
    }
    if service.not_ready.is_none() && !database_healthy {
        reasons.push("the service's database is not healthy".to_string());
    }
    if !transport_ready {
        reasons.push(format!(
            "the {} transport is not ready",
            admin.transport.mode
        ));
    }
    let healthy = reasons.is_empty();
    let pool = service.pool.as_ref().map(|p| {
        json!({
            "status": p.status,
            "min_connections": p.min_connections,
            "max_connections": p.max_connections,
            "pool_size": p.pool_size,
            "used_connections": p.used_connections,
        })
    });
    let mut body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "database": { "healthy": database_healthy, "pool": pool },
        "bot": { "ready": transport_ready, "transport": admin.transport.mode },
    });
    if !healthy {
        body["reason"] = json!(reasons.join("; "));
    }
    (
        status(healthy),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics_page(State(admin): State<Admin>) -> Response {
    metrics_response(admin.bot.metrics().encode())
}
