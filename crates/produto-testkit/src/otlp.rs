//! An OTLP/gRPC trace receiver in process, on the OpenTelemetry project's own protos: what a
//! collector would be sent. It keeps the spans (for the trace tests) or only counts them
//! (for the bench, where keeping them would grow without bound).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tokio_util::task::AbortOnDropHandle;

/// What the receiver was sent.
#[derive(Default)]
struct Received {
    keep: bool,
    spans: Mutex<Vec<Span>>,
    count: AtomicU64,
    exports: AtomicU64,
}

struct Sink(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.exports.fetch_add(1, Relaxed);
        if self.0.keep {
            let mut kept = self.0.spans.lock().unwrap();
            let before = kept.len();
            kept.extend(spans);
            self.0
                .count
                .fetch_add((kept.len() - before) as u64, Relaxed);
        } else {
            self.0.count.fetch_add(spans.count() as u64, Relaxed);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver on a loopback port; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Received>,
    _server: AbortOnDropHandle<()>,
}

#[allow(dead_code, reason = "the tests read the spans, the bench counts them")]
impl Receiver {
    /// Starts on `127.0.0.1:0`, keeping the spans when `keep`.
    pub async fn start(keep: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received {
            keep,
            ..Received::default()
        });
        let service = TraceServiceServer::new(Sink(received.clone()));
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Receiver {
            addr,
            received,
            _server: AbortOnDropHandle::new(server),
        }
    }

    /// The endpoint to give the exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far (kept ones only).
    pub fn spans(&self) -> Vec<Span> {
        self.received.spans.lock().unwrap().clone()
    }

    /// How many spans were received.
    pub fn count(&self) -> u64 {
        self.received.count.load(Relaxed)
    }

    /// How many export calls were received.
    pub fn exports(&self) -> u64 {
        self.received.exports.load(Relaxed)
    }
}
