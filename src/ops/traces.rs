//! The RPC span in OpenTelemetry's terms (the semantic conventions for RPC): its name, kind,
//! status, the trace it continues, and whether it is sampled. Without traces it costs one
//! lookup per call; unsampled, a few more. The database's spans are `db/traces.rs`.

use opentelemetry::trace::Status;
use produto_client::otel;
use tonic::{
    Code,
    codegen::http::{HeaderMap, HeaderName},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::{Caller, Via};

/// The RPC span, made by `make` (declared with empty `otel.name`, `otel.kind` and
/// `otel.status_code` fields), and whether it is exported. The sampler decides before the
/// span is made, so that an unsampled call's span never reaches the OpenTelemetry layer.
/// Exported, the span is named `{rpc.method}` as the conventions say, a server span,
/// continuing the caller's trace when the caller is authenticated (or `trust_all`),
/// otherwise a new trace linked to the one the request names: an anonymous caller cannot
/// graft its calls into our traces, nor make us sample them.
pub fn rpc_span(
    headers: &HeaderMap,
    path: &str,
    caller: Option<&Caller>,
    trust_all: bool,
    make: impl FnOnce() -> Span,
) -> (Span, bool) {
    use opentelemetry::trace::TraceContextExt;
    let method = path.trim_start_matches('/');
    let traceparent = HeaderName::from_static("traceparent");
    let incoming = (headers.contains_key(traceparent) && otel::exporting_now())
        .then(|| otel::extract(headers))
        .filter(|cx| cx.span().span_context().is_valid());
    let trusted = caller.is_some() || trust_all;
    let parent = incoming.as_ref().filter(|_| trusted);
    let (span, sampled) = otel::root_continuing(parent, method, tracing::Level::INFO, make);
    if !sampled || span.is_disabled() {
        return (span, false);
    }
    span.record("otel.name", method);
    span.record("otel.kind", "server");
    if let Some(incoming) = incoming {
        if trusted {
            let _ = span.set_parent(incoming);
        } else {
            span.add_link(incoming.span().span_context().clone());
        }
    }
    span.set_attribute("rpc.system.name", "grpc");
    span.set_attribute("rpc.method", method.to_owned());
    if let Some(caller) = caller {
        span.set_attribute("produto.caller.name", caller.name.to_string());
        let via = match caller.via {
            Via::Token => "token",
            Via::Certificate => "certificate",
        };
        span.set_attribute("produto.caller.via", via);
    }
    (span, true)
}

/// Records the call's gRPC code on its exported span: `rpc.response.status_code`, and an
/// error status only for the codes the conventions count as the server's failures.
pub fn rpc_finished(span: &Span, code: Code) {
    let name = code_name(code);
    span.set_attribute("rpc.response.status_code", name);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_attribute("error.type", name);
        span.set_status(Status::error(name));
    }
}

/// gRPC's name for a code, as the conventions record it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_name() {
        for (n, name) in [
            (0, "OK"),
            (4, "DEADLINE_EXCEEDED"),
            (5, "NOT_FOUND"),
            (14, "UNAVAILABLE"),
            (16, "UNAUTHENTICATED"),
        ] {
            assert_eq!(code_name(Code::from_i32(n)), name);
        }
    }
}
