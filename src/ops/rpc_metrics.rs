//! What the RPC middleware records per call: `grpc_server_handled_total`,
//! `grpc_server_handling_seconds` (go-grpc-prometheus's names and labels) and
//! `produto_rpc_caller_total`, labelled only with the methods the server serves
//! ([`KNOWN_METHODS`]), so that callers cannot create series at will.

use std::{
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::db::metrics::{HistogramFamily, latency_histogram};

/// The labels of one RPC outcome (the names of go-grpc-prometheus, so that existing
/// dashboards work).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

/// The labels of one RPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// The labels of the calls of one caller (see [`crate::auth::CallerAuth::label`]: the
/// configured names, `anonymous` and `unknown`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    pub caller: String,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

/// What the RPC middleware records.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    handled: Family<RpcLabels, Counter>,
    callers: Family<CallerLabels, Counter>,
    handling: HistogramFamily<MethodLabels>,
    /// The series of each method's common outcomes (by [`method_index`], `unknown` last),
    /// resolved on its first call: a family lookup hashes the labels and takes a lock, once per
    /// series per call otherwise. Resolved lazily so that a method never called has no series,
    /// as before.
    resolved: Arc<[OnceLock<Resolved>; KNOWN_METHODS.len() + 1]>,
}

/// One method's handles (each shares its value with the family's series).
#[derive(Debug)]
struct Resolved {
    handling: Histogram,
    /// Resolved on the first OK call, so that a method that never succeeded has no OK series.
    handled_ok: OnceLock<Counter>,
    /// `(caller label, its OK counter)`, for the first [`CALLERS_RESOLVED`] callers seen.
    callers_ok: RwLock<Vec<(Arc<str>, Counter)>>,
}

/// Callers per method whose OK counter is kept resolved; the rest are looked up per call.
const CALLERS_RESOLVED: usize = 16;

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            handled: Family::default(),
            callers: Family::default(),
            handling: Family::new_with_constructor(latency_histogram),
            resolved: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }
}

impl RpcMetrics {
    /// Registers the RPC series in `registry` (they share their values with this recorder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_handled",
            "RPCs completed, by method and gRPC status code",
            self.handled.clone(),
        );
        registry.register(
            "produto_rpc_caller",
            "RPCs completed, by caller (a configured name, `anonymous` or `unknown`), method and code",
            self.callers.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from a call's arrival to its response headers, by method",
            Unit::Seconds,
            self.handling.clone(),
        );
    }

    /// One finished call. `path` is the HTTP/2 path `/package.Service/Method`; a path the
    /// server does not serve is recorded as `unknown`, whatever its code (a call shed, timed
    /// out or refused before routing has one too), so that callers cannot create series at
    /// will.
    pub fn record(&self, path: &str, caller: &Arc<str>, code: tonic::Code, latency: Duration) {
        self.record_method(method_index(path), caller, code, latency);
    }

    /// [`RpcMetrics::record`] for a path already resolved by [`method_index`].
    pub fn record_method(
        &self,
        method: Option<usize>,
        caller: &Arc<str>,
        code: tonic::Code,
        latency: Duration,
    ) {
        let (index, (service, name)) = match method {
            Some(i) => (i, KNOWN_METHODS[i]),
            None => (KNOWN_METHODS.len(), ("unknown", "unknown")),
        };
        let resolved = self.resolved[index].get_or_init(|| {
            let labels = MethodLabels {
                grpc_service: service,
                grpc_method: name,
            };
            Resolved {
                handling: self.handling.get_or_create_owned(&labels),
                handled_ok: OnceLock::new(),
                callers_ok: RwLock::default(),
            }
        });
        resolved.handling.observe(latency.as_secs_f64());
        if code != tonic::Code::Ok {
            self.handled
                .get_or_create(&RpcLabels {
                    grpc_service: service,
                    grpc_method: name,
                    grpc_code: code_name(code),
                })
                .inc();
            self.caller_counter(caller, name, code).inc();
            return;
        }
        resolved
            .handled_ok
            .get_or_init(|| {
                self.handled.get_or_create_owned(&RpcLabels {
                    grpc_service: service,
                    grpc_method: name,
                    grpc_code: code_name(tonic::Code::Ok),
                })
            })
            .inc();
        let read = resolved
            .callers_ok
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, counter)) = read.iter().find(|(c, _)| **c == **caller) {
            counter.inc();
            return;
        }
        drop(read);
        let counter = self.caller_counter(caller, name, code);
        counter.inc();
        let mut write = resolved
            .callers_ok
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if write.len() < CALLERS_RESOLVED && !write.iter().any(|(c, _)| **c == **caller) {
            write.push((caller.clone(), counter));
        }
    }

    fn caller_counter(&self, caller: &str, method: &'static str, code: tonic::Code) -> Counter {
        self.callers.get_or_create_owned(&CallerLabels {
            caller: caller.to_owned(),
            grpc_method: method,
            grpc_code: code_name(code),
        })
    }
}

/// Every RPC the server serves, as `(service, method)`: the only label values besides
/// `unknown`. A test checks it against the services' descriptors.
pub const KNOWN_METHODS: [(&str, &str); 18] = [
    ("produto.v1.ProdutoService", "VerificarLogin"),
    ("produto.v1.ProdutoService", "ObterNivel"),
    ("produto.v1.ProdutoService", "AdicionarUsuario"),
    ("produto.v1.ProdutoService", "AlterarSenha"),
    ("produto.v1.ProdutoService", "AlterarNivel"),
    ("produto.v1.ProdutoService", "RemoverUsuario"),
    ("produto.v1.ProdutoService", "ListarUsuarios"),
    ("produto.v1.ProdutoService", "AbrirSessao"),
    ("produto.v1.ProdutoService", "ObterSessao"),
    ("produto.v1.ProdutoService", "EncerrarSessao"),
    ("produto.v1.ProdutoService", "ListarSessoes"),
    ("produto.v1.ProdutoService", "EncerrarSessoes"),
    ("produto.v1.ProdutoService", "ListarAuditoria"),
    ("produto.v1.PoolService", "PoolStatus"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// The `(service, method)` of a path the server serves, as static strings.
pub fn known_method(path: &str) -> Option<(&'static str, &'static str)> {
    method_index(path).map(|i| KNOWN_METHODS[i])
}

/// The index in [`KNOWN_METHODS`] of a path the server serves.
pub fn method_index(path: &str) -> Option<usize> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    KNOWN_METHODS
        .iter()
        .position(|(s, m)| *s == service && *m == method)
}

/// The canonical name of a gRPC code, as other implementations label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn paths_the_server_does_not_serve_are_unknown_whatever_their_code() {
        let rpc = RpcMetrics::default();
        for (i, code) in [
            tonic::Code::ResourceExhausted,
            tonic::Code::DeadlineExceeded,
        ]
        .into_iter()
        .enumerate()
        {
            rpc.record(
                &format!("/x{i}.Svc/M{i}"),
                &"anonymous".into(),
                code,
                Duration::ZERO,
            );
        }
        rpc.record(
            "/produto.v1.ProdutoService/Nope",
            &"anonymous".into(),
            tonic::Code::Unimplemented,
            Duration::ZERO,
        );
        rpc.record(
            "/produto.v1.ProdutoService/ObterNivel",
            &"anonymous".into(),
            tonic::Code::Ok,
            Duration::ZERO,
        );
        let mut registry = Registry::default();
        registry.register("handled", "", rpc.handled.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(!text.contains("x0.Svc") && !text.contains("Nope"), "{text}");
        assert!(
            text.contains(
                r#"grpc_service="unknown",grpc_method="unknown",grpc_code="ResourceExhausted""#
            ),
            "{text}"
        );
        assert!(text.contains(r#"grpc_method="ObterNivel""#), "{text}");
        // A method that never succeeded has no OK series (not even a zero one).
        assert!(
            !text.contains(r#"grpc_service="unknown",grpc_method="unknown",grpc_code="OK""#),
            "{text}"
        );
    }

    #[test]
    fn resolved_series_count_with_the_family() {
        let rpc = RpcMetrics::default();
        let anonymous: Arc<str> = "anonymous".into();
        let callers: Vec<Arc<str>> = (0..CALLERS_RESOLVED + 2)
            .map(|i| format!("c{i}").into())
            .collect();
        for _ in 0..3 {
            rpc.record(
                "/grpc.health.v1.Health/Check",
                &anonymous,
                tonic::Code::Ok,
                Duration::ZERO,
            );
            for caller in &callers {
                rpc.record(
                    "/produto.v1.ProdutoService/ObterNivel",
                    caller,
                    tonic::Code::Ok,
                    Duration::ZERO,
                );
            }
        }
        rpc.record(
            "/grpc.health.v1.Health/Check",
            &anonymous,
            tonic::Code::Unavailable,
            Duration::ZERO,
        );
        let mut registry = Registry::default();
        registry.register("handled", "", rpc.handled.clone());
        registry.register("caller", "", rpc.callers.clone());
        registry.register("handling", "", rpc.handling.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="Unavailable"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"handled_total{grpc_service="produto.v1.ProdutoService",grpc_method="ObterNivel",grpc_code="OK"} 54"#),
            "{text}"
        );
        // Callers past the resolved ones are counted too, through the family.
        for caller in ["c0", "c17"] {
            let line = format!(
                r#"caller_total{{caller="{caller}",grpc_method="ObterNivel",grpc_code="OK"}} 3"#
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(
            text.contains(
                r#"caller_total{caller="anonymous",grpc_method="Check",grpc_code="OK"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"handling_seconds_count{grpc_service="grpc.health.v1.Health",grpc_method="Check"} 4"#)
                || text.contains(r#"handling_count{grpc_service="grpc.health.v1.Health",grpc_method="Check"} 4"#),
            "{text}"
        );
        assert!(
            !text.contains("AdicionarUsuario"),
            "a method never called has no series: {text}"
        );
    }

    #[test]
    fn the_known_methods_are_every_rpc_of_our_proto() {
        let proto = include_str!("../../proto/produto/v1/produto.proto");
        let ours: Vec<_> = KNOWN_METHODS
            .iter()
            .filter(|(s, _)| s.starts_with("produto."))
            .collect();
        assert_eq!(proto.matches("  rpc ").count(), ours.len(), "{proto}");
        for (_, method) in ours {
            assert!(proto.contains(&format!("rpc {method}(")), "{method}");
        }
    }
}
