//! Traces: the OTLP/gRPC exporter both binaries install when the standard `OTEL_*`
//! variables ask for it, the layer that turns `tracing` spans into OpenTelemetry spans, and
//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata. Without an endpoint
//! nothing here is installed, and the helpers below return at their first check.

use std::time::Duration;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::{
    codegen::http::HeaderMap,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, filter::Targets, registry::LookupSpan};

/// How long shutdown waits for the last batch to reach the collector.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// The crates whose spans are exported, down to DEBUG (the statement, pool-wait, throttle,
/// hashing and attempt spans are DEBUG, so that logs at INFO never build them); other
/// crates' spans (tonic, h2, sqlx) are left out.
const TRACED_CRATES: [&str; 3] = ["produto", "produto_client", "produto_bot"];

/// The exporter's endpoint as the standard variables give it, `None` when traces are off:
/// no endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Fails on a protocol
/// other than gRPC, which this build does not speak (`http/protobuf`, `http/json`), rather
/// than sending nothing without saying so.
pub fn endpoint_from_env() -> Result<Option<String>, String> {
    endpoint_from(|name| std::env::var(name).ok())
}

/// [`endpoint_from_env`] over `lookup` (the environment, or a test's table).
fn endpoint_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let Some(endpoint) =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match protocol.as_deref() {
        None | Some("grpc") => Ok(Some(endpoint)),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: traces are sent with OTLP over \
             gRPC only; set it to grpc (or unset it) and point the endpoint at the collector's \
             gRPC port (4317)"
        )),
    }
}

/// The tracer provider with its batch exporter; dropping it flushes what is queued (bounded
/// by a few seconds) and stops the exporter.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports to the OTLP/gRPC collector at `endpoint` as `service` (unless
    /// `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names it). The SDK
    /// reads the rest of the standard variables itself: the resource attributes, the sampler
    /// (`OTEL_TRACES_SAMPLER`, `_ARG`; parent-based, always on by default), the batch
    /// processor's `OTEL_BSP_*`, the exporter's `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION}`.
    /// Must run inside a Tokio runtime (the exporter's channel lives there).
    pub fn start(endpoint: &str, service: &'static str) -> Result<Traces, String> {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("the OTLP exporter for {endpoint}: {e}"))?;
        let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        let mut resource = Resource::builder();
        if !named {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Traces { provider })
    }

    /// The layer that exports produto's spans through this provider.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("produto");
        let crates = TRACED_CRATES
            .iter()
            .fold(Targets::new(), |t, name| t.with_target(*name, Level::DEBUG));
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Thread names, source locations and busy/idle timings would be noise in every
            // span, and cost allocations and clock reads on every call, sampled or not.
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(TracedCrates(crates))
    }

    /// Sends what is queued now (blocks: from async code, call it on a blocking thread).
    pub fn flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_BOUND) {
            eprintln!("traces: the last spans were not all exported: {e}");
        }
    }
}

/// Whether `span` is recorded by an OpenTelemetry layer: the gate every helper checks first,
/// so that without traces the cost is one lookup.
pub fn exporting(span: &tracing::Span) -> bool {
    span.with_subscriber(|(_, dispatch)| dispatch.downcast_ref::<TracedCrates>().is_some())
        .unwrap_or(false)
}

/// Whether the current subscriber exports traces: [`exporting`] without a span at hand.
pub fn exporting_now() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.downcast_ref::<TracedCrates>().is_some())
}

/// Whether the current span belongs to a sampled trace that is exported: the spans that
/// only traces need (a statement's, the pool wait's) are not built otherwise, so that an
/// unsampled call costs little more than with traces off.
pub fn recording_now() -> bool {
    exporting_now()
        && tracing::Span::current()
            .context()
            .span()
            .span_context()
            .is_sampled()
}

/// Writes the current span's trace context into outgoing gRPC metadata (nothing when no
/// trace is being recorded). Works under any `tracing-opentelemetry` layer of this version,
/// so a service that calls produto with this crate and traces on its own propagates too.
pub fn inject(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut MetadataWriter(metadata));
    }
}

/// The trace context an incoming request carries (an empty context when none).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderReader(headers))
}

/// The client span of one attempt of `service`/`method` (the first is 1; DEBUG, so built
/// only for export): named `{rpc.method}` as the conventions say.
pub fn attempt_span(method: (&str, &str), attempt: u32) -> tracing::Span {
    let span = tracing::debug_span!(
        "attempt",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        rpc.system.name = "grpc",
        rpc.method = tracing::field::Empty,
        produto.attempt = attempt,
    );
    if !span.is_disabled() {
        let name = format!("{}/{}", method.0, method.1);
        span.record("otel.name", name.as_str());
        span.record("rpc.method", name.as_str());
    }
    span
}

/// `message` as a request carrying the current trace context.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    inject(request.metadata_mut());
    request
}

/// The span context of `span`, to link to it from another trace (a batch serving it).
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if !exporting(span) {
        return None;
    }
    let context = span.context().span().span_context().clone();
    context.is_valid().then_some(context)
}

/// The OpenTelemetry layer's filter, a type of its own so that [`exporting`] can find it in
/// any subscriber (the layer itself is generic over the subscriber).
struct TracedCrates(Targets);

impl<S> tracing_subscriber::layer::Filter<S> for TracedCrates {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        tracing_subscriber::layer::Filter::<S>::enabled(&self.0, meta, cx)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing_subscriber::layer::Filter::<S>::callsite_enabled(&self.0, meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        tracing_subscriber::layer::Filter::<S>::max_level_hint(&self.0)
    }
}

struct MetadataWriter<'a>(&'a mut MetadataMap);

impl Injector for MetadataWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vars: &[(&str, &str)]) -> Result<Option<String>, String> {
        endpoint_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn without_an_endpoint_traces_are_off() {
        assert_eq!(endpoint(&[]), Ok(None));
        assert_eq!(endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(endpoint(&[on, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(endpoint(&[on, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_general_one() {
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(endpoint(&both), Ok(Some("http://traces:4317".into())));
        assert_eq!(endpoint(&both[..1]), Ok(Some("http://general:4317".into())));
    }

    #[test]
    fn only_the_grpc_protocol_is_accepted() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert!(
            endpoint(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_ok_and(|e| e.is_some())
        );
        for other in ["http/protobuf", "http/json"] {
            let refused = endpoint(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", other)]).unwrap_err();
            assert!(
                refused.contains(other) && refused.contains("grpc"),
                "{refused}"
            );
            let refused = endpoint(&[on, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", other)]);
            assert!(refused.is_err());
        }
    }
}
