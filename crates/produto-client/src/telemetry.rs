//! Logging: tracing to stderr, as text or one JSON object per line; levels from RUST_LOG.
//! With an OTLP endpoint in the environment, spans are exported too ([`crate::otel`]) and
//! each log line written inside a trace carries its `trace_id` and `span_id`.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{self, FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
};

use crate::otel::Traces;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber, exporting traces as `service` when the `OTEL_*` variables
/// name an endpoint. Call once, from a binary, inside its Tokio runtime; keep the returned
/// [`Traces`] until the end (dropping it flushes the last spans). Fails on an exporter
/// setting it cannot honour.
pub fn init(format: LogFormat, service: &'static str) -> Result<Option<Traces>, String> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let Some(endpoint) = crate::otel::endpoint_from_env()? else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            // Colour codes only for people at a terminal, not for log collectors.
            .with_ansi(std::io::stderr().is_terminal());
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .init(),
        }
        return Ok(None);
    };
    let traces = Traces::start(&endpoint, service)?;
    let dispatch = traced_dispatch(format, &traces, filter(), std::io::stderr);
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    tracing::info!(endpoint, "exporting traces over OTLP/gRPC");
    Ok(Some(traces))
}

/// A subscriber that logs (as `format`, lines filtered by `filter`, to `writer`) and exports
/// through `traces`, each log line inside a trace carrying its ids. Tests install it per
/// thread, with a provider of their own.
pub fn traced_dispatch<W>(
    format: LogFormat,
    traces: &Traces,
    filter: EnvFilter,
    writer: W,
) -> Dispatch
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let this = Arc::new(OnceLock::new());
    let logs = fmt::layer().with_writer(writer).with_ansi(false);
    let logs = match format {
        LogFormat::Text => logs
            .event_format(TraceIds::new(fmt::format(), false, this.clone()))
            .boxed(),
        LogFormat::Json => logs
            .json()
            .event_format(TraceIds::new(
                fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
                true,
                this.clone(),
            ))
            .boxed(),
    };
    let logged = Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    let subscriber = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.layer_beside_logs(logged));
    let dispatch = Dispatch::new(subscriber);
    let _ = this.set(dispatch.downgrade());
    dispatch
}

/// An event format that adds `trace_id` and `span_id` (of the innermost span) to the line of
/// an event inside a recorded trace: as fields at the end of a text line, as the first keys
/// of a JSON object.
struct TraceIds<F> {
    inner: F,
    json: bool,
    /// The subscriber this format belongs to, to look up the span's trace (set once built).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> TraceIds<F> {
    fn new(inner: F, json: bool, dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        TraceIds {
            inner,
            json,
            dispatch,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // Outside an exported span there are no ids to look up.
        let exported = crate::otel::inside_exported_span();
        let ids = exported
            .then(|| ctx.lookup_current())
            .flatten()
            .and_then(|span| {
                let dispatch = self.dispatch.get()?.upgrade()?;
                let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
                let span = cx.span();
                let ids = span.span_context();
                ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
            });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json && line.starts_with('{') {
            let ids = format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",");
            line.replace_range(..1, &ids);
        } else {
            let end = line.trim_end_matches('\n').len();
            line.insert_str(end, &format!(" trace_id={trace_id} span_id={span_id}"));
        }
        writer.write_str(&line)
    }
}
