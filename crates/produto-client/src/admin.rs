//! What the admin HTTP ports of `produto-server` and `produto-bot` share (feature `admin`):
//! `/livez` and `/readyz` over the binary's own notion of readiness, the `/metrics` answer,
//! the 200/503 of a health page, and serving until stopped. Each binary adds its `/health`.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of an OpenMetrics text exposition (`prometheus-client`'s `encode`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /livez` ("the process serves": always 200) and `GET /readyz` (200 while `ready` says
/// so, 503 otherwise), over the router's state `S`.
pub fn probes<S>(ready: fn(&S) -> bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/livez", get(livez)).route(
        "/readyz",
        get(move |State(state): State<S>| async move { readyz(ready(&state)) }),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

fn readyz(ready: bool) -> (StatusCode, &'static str) {
    (status(ready), if ready { "ready\n" } else { "not ready\n" })
}

/// 200 when ready, 503 when not: the status of `/readyz` and of a health page.
pub fn status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The `/metrics` answer for an encoded registry: the text, or a logged 500.
pub fn metrics_response(encoded: Result<String, std::fmt::Error>) -> Response {
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled (then lets requests in flight
/// finish).
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}
