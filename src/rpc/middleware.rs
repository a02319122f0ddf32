//! The tower layer every RPC passes through: one span and one log line per call (method,
//! gRPC code, latency, peer, request id); the RPC metrics; the request id returned in the
//! response metadata; the caller's deadline (`grpc-timeout`) enforced as DEADLINE_EXCEEDED,
//! dropping the handler's future so its connection goes back to the pool; tonic's codes for
//! undecodable or oversized requests turned into the caller's errors; and a global limit on
//! calls in progress, past which calls are shed with RESOURCE_EXHAUSTED (health checks are
//! exempt, so that load never makes Kubernetes restart a busy pod); and caller
//! authentication (see [`crate::auth`]): the caller named in the span, the metrics and the
//! request's extensions, and a call without a required identity refused as UNAUTHENTICATED.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    Error,
    auth::CallerAuth,
    ops::{
        request_id,
        rpc_metrics::{self, RpcMetrics},
        traces,
    },
};

/// Answer a little before the caller's deadline (a tenth of it, 5 to 100 ms), so that the
/// caller receives our DEADLINE_EXCEEDED before its own timer fires: a client whose timer
/// wins resets the stream (tonic reports CANCELLED), and many resets look like an attack
/// to the HTTP/2 layer.
fn deadline_margin(deadline: Duration) -> Duration {
    (deadline / 10).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// Adds [`Rpc`] around the router.
#[derive(Debug, Clone)]
pub struct RpcLayer {
    metrics: RpcMetrics,
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    max_request_bytes: usize,
    callers: Arc<CallerAuth>,
    trust_all_traces: bool,
}

impl RpcLayer {
    /// Records into `metrics`, and lets at most `max_in_flight` calls run at once across all
    /// connections, identifying callers with `callers`. `max_request_bytes` is the decoding
    /// limit the services were given, named in the message of a request refused for its size.
    pub fn new(
        metrics: RpcMetrics,
        max_in_flight: usize,
        max_request_bytes: usize,
        callers: Arc<CallerAuth>,
    ) -> Self {
        RpcLayer {
            metrics,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            max_in_flight,
            max_request_bytes,
            callers,
            trust_all_traces: false,
        }
    }

    /// Continues the trace an incoming call names whoever the caller is, not only for
    /// authenticated callers (see [`traces::rpc_started`]).
    pub fn trust_all_traces(mut self, trust: bool) -> Self {
        self.trust_all_traces = trust;
        self
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            metrics: self.metrics.clone(),
            in_flight: self.in_flight.clone(),
            max_in_flight: self.max_in_flight,
            max_request_bytes: self.max_request_bytes,
            callers: self.callers.clone(),
            trust_all_traces: self.trust_all_traces,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
    metrics: RpcMetrics,
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    max_request_bytes: usize,
    callers: Arc<CallerAuth>,
    trust_all_traces: bool,
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let path = req.uri().path();
        let method = rpc_metrics::method_index(path);
        let deadline = grpc_timeout(req.headers());
        let request_id = request_id::from_headers(req.headers());
        // Health and reflection answer anyone: probes and grpcurl carry no identity.
        let health = path.starts_with("/grpc.health.v1.Health/");
        let exempt = health || path.starts_with("/grpc.reflection.");
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let identity = match self
            .callers
            .identify(req.headers(), certs.as_deref().map(Vec::as_slice))
        {
            Err(_) if exempt => Ok(None),
            other => other,
        };
        let caller = identity.as_ref().ok().cloned().flatten();
        let caller_label = self.callers.label(caller.as_ref());
        let trust = self.trust_all_traces;
        let (span, traced) = traces::rpc_span(req.headers(), path, caller.as_ref(), trust, || {
            tracing::info_span!(
                "rpc",
                method = path,
                peer = tracing::field::Empty,
                caller = caller.as_ref().map_or(crate::auth::ANONYMOUS, |c| &*c.name),
                request_id = request_id.to_str().unwrap_or_default(),
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        });
        // The peer's address is formatted only for a span that is recorded.
        if !span.is_disabled()
            && let Some(addr) = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
        {
            span.record("peer", tracing::field::display(addr));
        }
        if let Some(caller) = caller {
            req.extensions_mut().insert(caller);
        }
        let rpc_metrics = self.metrics.clone();
        // Health checks are never shed, refused calls take no slot; the rest take a slot or
        // are turned away.
        let permit = if health || identity.is_err() {
            Ok(None)
        } else {
            self.in_flight.clone().try_acquire_owned().map(Some)
        };
        let max_in_flight = self.max_in_flight;
        let max_request_bytes = self.max_request_bytes;

        Box::pin(
            async move {
                let started = Instant::now();
                let mut result = match (identity, permit) {
                    (Err(refused), _) => {
                        tracing::warn!("call refused: no caller identity");
                        Ok(Status::from(refused).into_http())
                    }
                    (Ok(_), Err(_)) => {
                        tracing::warn!(max_in_flight, "call shed: too many calls in progress");
                        Ok(Status::from(Error::ServerBusy { max_in_flight }).into_http())
                    }
                    (Ok(_), Ok(_permit)) => {
                        let call = inner.call(req);
                        match deadline {
                            None => call.await,
                            Some(limit) => match tokio::time::timeout(
                                limit.saturating_sub(deadline_margin(limit)),
                                call,
                            )
                            .await
                            {
                                Ok(result) => result,
                                Err(_) => Ok(Status::from(Error::DeadlineExceeded).into_http()),
                            },
                        }
                    }
                };
                let latency = started.elapsed();
                let latency_ms = latency.as_secs_f64() * 1000.0;
                if let Ok(response) = &mut result {
                    recode_request_errors(response.headers_mut(), max_request_bytes);
                    let code = response_code(response.headers());
                    rpc_metrics.record_method(method, &caller_label, code, latency);
                    if traced {
                        traces::rpc_finished(&tracing::Span::current(), code);
                    }
                    response
                        .headers_mut()
                        .insert(request_id::header_name(), request_id);
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

/// tonic answers INTERNAL for a request that does not decode (invalid UTF-8 in a string,
/// truncated fields) and OUT_OF_RANGE for one over the size limit. Both are the caller's
/// doing: say so with INVALID_ARGUMENT and RESOURCE_EXHAUSTED (gRPC's code for a message
/// larger than the server accepts), so callers do not retry them or page anyone. A request
/// cut off by a broken connection is CANCELLED, not UNKNOWN. The recoded status replaces
/// tonic's, error details included (see [`Error`]).
fn recode_request_errors(headers: &mut HeaderMap, max_request_bytes: usize) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let recoded = match status.code() {
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Error::MalformedRequest(status.message().to_owned())
        }
        Code::OutOfRange if status.message().contains("message length too large") => {
            Error::RequestTooLarge {
                limit_bytes: max_request_bytes,
            }
        }
        // The connection broke while the request was being read (h2 gives no reason): the
        // client went away. gRPC calls that CANCELLED; tonic says UNKNOWN, which would page
        // someone for every client that disconnects mid-call.
        Code::Unknown if status.message().starts_with("h2 protocol error") => {
            let _ = Status::cancelled(format!("the client went away: {}", status.message()))
                .add_header(headers);
            return;
        }
        _ => return,
    };
    let _ = Status::from(recoded).add_header(headers);
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
