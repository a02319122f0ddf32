//! Traces: the OTLP/gRPC exporter both binaries install when the standard `OTEL_*`
//! variables ask for it, the layer that turns `tracing` spans into OpenTelemetry spans, and
//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata. Without an endpoint
//! nothing here is installed, and the helpers below return at their first check.
//!
//! Sampling is decided where a trace starts, before its root span is made ([`root`],
//! [`root_continuing`], [`decided`]): a span the sampler refused, and everything under it, never reaches
//! the OpenTelemetry layer, so an unsampled call costs what it costs with traces off (the
//! layer builds every span it sees, and the SDK's own sampler only decides afterwards).

use std::{cell::Cell, time::Duration};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, SpanKind, TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{
        IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracerProvider, ShouldSample,
    },
};
use tonic::{
    codegen::http::HeaderMap,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tracing::{Level, Subscriber, level_filters::LevelFilter};
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

/// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name (parent-based, always
/// on, when unset). Fails on a sampler this build does not have (`jaeger_remote`, `xray`) or
/// a ratio outside 0..=1, where the SDK would fall back to sampling everything without a word.
pub fn sampler_from_env() -> Result<Sampler, String> {
    sampler_from(|name| std::env::var(name).ok())
}

/// [`sampler_from_env`] over `lookup`.
fn sampler_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Sampler, String> {
    let var = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let ratio = || match var("OTEL_TRACES_SAMPLER_ARG") {
        None => Ok(1.0),
        Some(arg) => arg
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                format!(
                    "OTEL_TRACES_SAMPLER_ARG={arg} is not a ratio: give a number from 0 to 1 \
                     (0.01 samples one trace in a hundred)"
                )
            }),
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match var("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => parent_based(Sampler::AlwaysOn),
        Some("parentbased_always_off") => parent_based(Sampler::AlwaysOff),
        Some("parentbased_traceidratio") => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported: use parentbased_always_on (the \
                 default), parentbased_traceidratio, parentbased_always_off, always_on, \
                 always_off or traceidratio"
            ));
        }
    })
}

/// The tracer provider with its batch exporter; dropping it flushes what is queued (bounded
/// by a few seconds) and stops the exporter.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    /// Decides at each trace's root (see the module docs); the SDK's own sampler is always
    /// on, as everything it sees was sampled already.
    sampler: Sampler,
}

impl Traces {
    /// Exports to the OTLP/gRPC collector at `endpoint` as `service` (unless
    /// `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names it), sampling
    /// as [`sampler_from_env`] says. The SDK reads the rest of the standard variables itself:
    /// the resource attributes, the batch processor's `OTEL_BSP_*`, the exporter's
    /// `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION}`.
    /// Must run inside a Tokio runtime (the exporter's channel lives there).
    pub fn start(endpoint: &str, service: &'static str) -> Result<Traces, String> {
        Traces::with_sampler(endpoint, service, sampler_from_env()?)
    }

    /// [`Traces::start`] with `sampler` instead of the one the environment names.
    pub fn with_sampler(
        endpoint: &str,
        service: &'static str,
        sampler: Sampler,
    ) -> Result<Traces, String> {
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
            .with_sampler(Sampler::AlwaysOn)
            .build();
        Ok(Traces { provider, sampler })
    }

    /// The layer that exports produto's spans through this provider.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        self.layer_beside_logs(LevelFilter::TRACE)
    }

    /// [`Traces::layer`] beside a log layer that writes nothing above `logs`: a root span
    /// that is neither sampled nor logged is then not made at all (see [`decided`]).
    pub fn layer_beside_logs<S>(&self, logs: LevelFilter) -> impl Layer<S> + Send + Sync + 'static
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
            .with_filter(TracedCrates {
                crates,
                sampler: self.sampler.clone(),
                logs,
            })
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

thread_local! {
    /// The decision for the next span made on this thread, set by [`decided`].
    static DECIDED: Cell<Option<bool>> = const { Cell::new(None) };
    /// How many exported spans this thread is inside now (entered, not yet exited): kept by
    /// the layer's filter, so that asking "is this inside a sampled trace?" costs no lookup.
    static EXPORTED_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is inside an exported (so sampled) span now.
pub(crate) fn inside_exported_span() -> bool {
    EXPORTED_DEPTH.get() > 0
}

/// Makes a trace's root span at `level` with `make`, exported only if `sampled` (decided
/// by the caller, e.g. from the calls a batch serves). A span made otherwise is exported only inside an exported span: a span
/// outside any trace (a background task's, or one under an unsampled call) is never a trace
/// of its own. A span neither exported nor logged is not made at all: the registry would
/// keep it anyway (a span that every per-layer filter refuses is still registered, entered
/// and closed), which is most of what an unsampled call would otherwise cost.
pub fn decided(sampled: bool, level: Level, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !sampled && !logged(level) {
        return tracing::Span::none();
    }
    made_as(sampled, make)
}

/// `make`'s span, which the layer's filter exports if `sampled`.
fn made_as(sampled: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    DECIDED.set(Some(sampled));
    let made = make();
    DECIDED.set(None);
    made
}

/// Whether the exporting subscriber's logs may want a span at `level` (true when unknown).
fn logged(level: Level) -> bool {
    tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .downcast_ref::<TracedCrates>()
            .is_none_or(|filter| level <= filter.logs)
    })
}

/// A new trace's root span at `level`, made by `make` and exported if the sampler says so.
pub fn root(name: &str, level: Level, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    root_continuing(None, name, level, make).0
}

/// A trace's root span at `level`, continuing `parent` (a remote span context from a caller
/// that is trusted) or starting a new trace, made by `make`; and whether it is exported: the
/// exporting subscriber's sampler asked before the span is made, then as [`decided`]. Without
/// traces, `make`'s span as it is.
pub fn root_continuing(
    parent: Option<&Context>,
    name: &str,
    level: Level,
    make: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, bool) {
    let decision = tracing::dispatcher::get_default(|dispatch| {
        let filter = dispatch.downcast_ref::<TracedCrates>()?;
        Some((filter.sample(parent, name), level <= filter.logs))
    });
    match decision {
        None => (make(), false),
        Some((false, false)) => (tracing::Span::none(), false),
        Some((sampled, _)) => (made_as(sampled, make), sampled),
    }
}

/// Whether the current span belongs to a sampled trace that is exported: the spans that
/// only traces need (a statement's, the pool wait's) are not built otherwise, so that an
/// unsampled call costs little more than with traces off.
pub fn recording_now() -> bool {
    inside_exported_span()
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

/// The OpenTelemetry layer's filter, a type of its own so that [`exporting`] and
/// [`root_continuing`] can find it in any subscriber (the layer itself is generic over the subscriber). It lets
/// through produto's spans that a root decided to sample ([`decided`]) and what happens
/// inside them, nothing else.
struct TracedCrates {
    crates: Targets,
    sampler: Sampler,
    /// The most verbose level the logs beside this layer write.
    logs: LevelFilter,
}

impl TracedCrates {
    fn sample(&self, parent: Option<&Context>, name: &str) -> bool {
        let remote = parent.map(|p| p.span().span_context().clone());
        let trace_id = match remote {
            Some(context) if context.is_valid() => context.trace_id(),
            _ => RandomIdGenerator::default().new_trace_id(),
        };
        let result =
            self.sampler
                .should_sample(parent, trace_id, name, &SpanKind::Internal, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }
}

/// DEBUG and TRACE events are never span events, so that the hot path's debug lines cost
/// nothing while logs are at INFO or above.
fn debug_event(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event() && *meta.level() > Level::INFO
}

impl<S> tracing_subscriber::layer::Filter<S> for TracedCrates
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if debug_event(meta)
            || !tracing_subscriber::layer::Filter::<S>::enabled(&self.crates, meta, cx)
        {
            return false;
        }
        if meta.is_span()
            && let Some(sampled) = DECIDED.take()
        {
            return sampled;
        }
        inside_exported_span()
    }

    fn on_enter(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        EXPORTED_DEPTH.set(EXPORTED_DEPTH.get() + 1);
    }

    fn on_exit(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        EXPORTED_DEPTH.set(EXPORTED_DEPTH.get().saturating_sub(1));
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Asked for each span and event: whether it is exported depends on the trace it is in.
        if debug_event(meta)
            || tracing_subscriber::layer::Filter::<S>::callsite_enabled(&self.crates, meta)
                .is_never()
        {
            tracing::subscriber::Interest::never()
        } else {
            tracing::subscriber::Interest::sometimes()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        tracing_subscriber::layer::Filter::<S>::max_level_hint(&self.crates)
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

    fn sampler(vars: &[(&str, &str)]) -> Result<String, String> {
        sampler_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .map(|s| format!("{s:?}"))
    }

    #[test]
    fn the_sampler_is_the_one_the_standard_variables_name() {
        let named = |name: &str, arg: &str| {
            sampler(&[
                ("OTEL_TRACES_SAMPLER", name),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ])
        };
        assert_eq!(sampler(&[]).unwrap(), "ParentBased(AlwaysOn)");
        assert_eq!(
            named("parentbased_traceidratio", "0.01").unwrap(),
            "ParentBased(TraceIdRatioBased(0.01))"
        );
        assert_eq!(named("traceidratio", "").unwrap(), "TraceIdRatioBased(1.0)");
        assert_eq!(named("always_off", "").unwrap(), "AlwaysOff");
        assert_eq!(
            named("parentbased_always_off", "").unwrap(),
            "ParentBased(AlwaysOff)"
        );
        for arg in ["1.5", "-0.1", "one"] {
            let refused = named("parentbased_traceidratio", arg).unwrap_err();
            assert!(refused.contains("OTEL_TRACES_SAMPLER_ARG"), "{refused}");
        }
        let refused = named("jaeger_remote", "").unwrap_err();
        assert!(refused.contains("parentbased_traceidratio"), "{refused}");
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
