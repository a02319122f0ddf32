//! The database's spans in OpenTelemetry's terms (the semantic conventions for database
//! client spans): one client span per statement, the pool wait, and the ObterNivel batch
//! linked to the calls it serves. Built only inside a sampled trace (DEBUG besides), so that
//! without traces, or in a trace not sampled, each is a span that does nothing.
//! No parameter is ever an attribute (they may be passwords or hashes): a statement is
//! named by its static [`Query`], whose shape its feature wrote beside the SQL.

use opentelemetry::trace::SpanContext;

use super::named::Query;
use produto_client::otel;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Where a statement runs: the database system, the server's `host:port/database` and
/// whether it is the primary or a replica.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The backend, as [`super::Db::backend_name`] says it (`postgres`, `sqlite`).
    pub system: &'static str,
    pub address: &'a str,
    pub primary: bool,
}

/// The client span of one statement, `query`, on `target` (DEBUG: built only for export).
pub fn statement_span(query: Query, target: Target<'_>) -> Span {
    if !otel::recording_now() {
        return Span::none();
    }
    let span = tracing::debug_span!(
        "db",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = tracing::field::Empty,
        db.operation.name = tracing::field::Empty,
        db.collection.name = tracing::field::Empty,
        db.query.summary = tracing::field::Empty,
        db.namespace = tracing::field::Empty,
        db.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        produto.db.statement = query.name,
        produto.db.server.role = if target.primary { "primary" } else { "replica" },
    );
    if span.is_disabled() {
        return span;
    }
    let postgres = target.system == "postgres";
    span.record(
        "db.system.name",
        if postgres { "postgresql" } else { "sqlite" },
    );
    span.record("db.operation.name", query.operation);
    span.record("db.collection.name", query.collection);
    let summary = format!("{} {}", query.operation, query.collection);
    span.record("otel.name", summary.as_str());
    span.record("db.query.summary", summary.as_str());
    if postgres {
        // `host:port/database`, as the pool names its server (never the credentials).
        let (host_port, database) = target
            .address
            .split_once('/')
            .unwrap_or((target.address, ""));
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, ""));
        span.record("server.address", host);
        if let Ok(port) = port.parse::<u16>() {
            span.record("server.port", port);
        }
        if !database.is_empty() {
            span.record("db.namespace", database);
        }
    } else {
        span.record("db.namespace", target.address);
    }
    span
}

/// Records a statement's failure on its span: the SQLSTATE (`db.response.status_code`) when
/// the database answered with one, else the kind of failure.
pub fn statement_failed(span: &Span, error: Option<&sqlx::Error>) {
    if span.is_disabled() {
        return;
    }
    let kind = match error {
        Some(sqlx::Error::Database(e)) => {
            if let Some(code) = e.code() {
                span.record("db.response.status_code", code.as_ref());
            }
            "database"
        }
        Some(sqlx::Error::PoolTimedOut) => "pool_timeout",
        Some(sqlx::Error::Io(_)) => "io",
        Some(_) => "driver",
        None => "timeout",
    };
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
}

/// Records on a statement's span that it never ran: no connection could be had.
pub fn statement_not_started(span: &Span) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", "no_connection");
    span.record("otel.status_code", "error");
}

/// The span of the wait for a pooled connection.
pub fn pool_wait_span() -> Span {
    if !otel::recording_now() {
        return Span::none();
    }
    tracing::debug_span!("pool wait", otel.kind = "internal")
}

/// The caller's span context, kept by a lookup that a batch will serve (None without traces).
pub fn follows() -> Option<SpanContext> {
    if !otel::exporting_now() {
        return None;
    }
    otel::span_context(&Span::current())
}

/// The span of one ObterNivel batch query: a child of the one call it serves, or, serving
/// several, a root span linked to each of them (the OpenTelemetry way to show a batch).
/// Exported when a call it serves is sampled.
pub fn batch_span(size: usize, callers: impl Iterator<Item = Option<SpanContext>>) -> Span {
    let make = || tracing::debug_span!(parent: None, "nivel batch", otel.kind = "internal", produto.batch.size = size);
    if !otel::exporting_now() {
        return make();
    }
    let callers: Vec<SpanContext> = callers.flatten().filter(|c| c.is_sampled()).collect();
    let span = otel::decided(!callers.is_empty(), tracing::Level::DEBUG, make);
    if callers.is_empty() || span.is_disabled() {
        return span;
    }
    if let [only] = callers.as_slice() {
        use opentelemetry::trace::TraceContextExt;
        let parent = opentelemetry::Context::new().with_remote_span_context(only.clone());
        let _ = span.set_parent(parent);
    } else {
        for caller in callers {
            span.add_link(caller);
        }
    }
    span
}
