//! The tower layer every RPC passes through: one span and one log line per call (method,
//! gRPC code, latency, peer, request id), the RPC metrics, the request id returned in the
//! response metadata, and the caller's deadline (`grpc-timeout`) enforced as
//! DEADLINE_EXCEEDED, dropping the handler's future so its connection goes back to the pool.

use std::{
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
    transport::server::TcpConnectInfo,
};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::ops::{metrics::RpcMetrics, request_id};

/// Answer a little before the caller's deadline, so that the caller receives our
/// DEADLINE_EXCEEDED rather than tonic's generic CANCELLED for an expired timeout.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// Adds [`Rpc`] around the router. `RpcLayer::default()` records into metrics that no
/// registry exports.
#[derive(Debug, Clone, Default)]
pub struct RpcLayer {
    metrics: RpcMetrics,
}

impl RpcLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        RpcLayer { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S> Service<Request<Body>> for Rpc<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let method = req.uri().path().to_owned();
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        let deadline = grpc_timeout(req.headers());
        let request_id = request_id::from_headers(req.headers());
        let span = tracing::info_span!(
            "rpc",
            %method,
            %peer,
            request_id = request_id.to_str().unwrap_or_default()
        );
        let metrics = self.metrics.clone();

        Box::pin(
            async move {
                let started = Instant::now();
                let call = inner.call(req);
                let mut result = match deadline {
                    None => call.await,
                    Some(limit) => {
                        match tokio::time::timeout(limit.saturating_sub(DEADLINE_MARGIN), call)
                            .await
                        {
                            Ok(result) => result,
                            Err(_) => Ok(Status::deadline_exceeded(
                                "deadline exceeded before the call finished",
                            )
                            .into_http()),
                        }
                    }
                };
                let latency = started.elapsed();
                let latency_ms = latency.as_secs_f64() * 1000.0;
                if let Ok(response) = &mut result {
                    let code = response_code(response.headers());
                    metrics.record(&method, code, latency);
                    response
                        .headers_mut()
                        .insert(request_id::HEADER, request_id);
                    if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
                        tracing::error!(code = ?code, latency_ms, "rpc failed");
                    } else {
                        tracing::info!(code = ?code, latency_ms, "rpc");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The gRPC code of a response: errors are trailers-only responses with `grpc-status` in
/// the headers; a response without it is a success whose status follows in the trailers.
fn response_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// Parses `grpc-timeout` (`<1-8 digits><H|M|S|m|u|n>`); a malformed value is ignored, as
/// tonic does.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    fn parse(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
        grpc_timeout(&h)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "5", "S", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
