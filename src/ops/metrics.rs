//! Prometheus metrics (`prometheus-client`, one registry per [`crate::Application`], so that
//! tests running side by side each see their own figures).
//!
//! Counted where things happen: RPCs in the middleware, queries and acquire waits in
//! [`crate::db::Db`]. Pool gauges and counters are read from [`crate::db::Db::snapshot`]
//! at scrape time instead of being counted twice.

use std::{
    fmt,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{
    db::{
        Db,
        metrics::{HistogramFamily, latency_histogram},
    },
    ready::ReadyFlag,
};

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

/// The label of `produto_users_legacy_hash`: a legacy password format.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
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
pub const KNOWN_METHODS: [(&str, &str); 12] = [
    ("produto.v1.ProdutoService", "VerificarLogin"),
    ("produto.v1.ProdutoService", "ObterNivel"),
    ("produto.v1.ProdutoService", "AdicionarUsuario"),
    ("produto.v1.ProdutoService", "AlterarSenha"),
    ("produto.v1.ProdutoService", "AlterarNivel"),
    ("produto.v1.ProdutoService", "RemoverUsuario"),
    ("produto.v1.ProdutoService", "ListarUsuarios"),
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

/// The registry of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc: RpcMetrics,
}

impl Metrics {
    /// Registers every metric of the server over `db` and its readiness.
    pub fn new(db: &Db, ready: ReadyFlag) -> Self {
        let mut registry = Registry::default();
        let rpc = RpcMetrics::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed, by method and gRPC status code",
            rpc.handled.clone(),
        );
        registry.register(
            "produto_rpc_caller",
            "RPCs completed, by caller (a configured name, `anonymous` or `unknown`), method and code",
            rpc.callers.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from a call's arrival to its response headers, by method",
            Unit::Seconds,
            rpc.handling.clone(),
        );
        db.metrics().register(&mut registry);
        registry.register(
            "produto_build",
            "Version and git commit of the running binary",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_commit", env!("PRODUTO_GIT_COMMIT")),
            ]),
        );
        registry.register_collector(Box::new(PoolCollector {
            db: db.clone(),
            ready,
        }));
        registry.register_collector(Box::new(super::pool_metrics::ServersCollector {
            db: db.clone(),
        }));
        Metrics { registry, rpc }
    }

    /// The recorder the RPC middleware writes to.
    pub fn rpc(&self) -> RpcMetrics {
        self.rpc.clone()
    }

    /// The OpenMetrics text exposition of every metric (served as
    /// `produto_client::admin::METRICS_CONTENT_TYPE`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the pool's figures and readiness at scrape time.
#[derive(Debug)]
struct PoolCollector {
    db: Db,
    ready: ReadyFlag,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.db.snapshot();
        let gauges: [(&str, &str, i64); 10] = [
            (
                "produto_db_pool_connections_open",
                "Connections the pool holds, idle or in use",
                s.pool_size.into(),
            ),
            (
                "produto_db_pool_connections_idle",
                "Idle connections in the pool",
                s.idle_connections.into(),
            ),
            (
                "produto_db_pool_connections_in_use",
                "Connections checked out by callers",
                s.used_connections.into(),
            ),
            (
                "produto_db_pool_requests_waiting",
                "Callers waiting for a connection",
                s.requests_waiting.into(),
            ),
            (
                "produto_db_pool_connections_min",
                "Configured minimum of open connections",
                s.min_connections.into(),
            ),
            (
                "produto_db_pool_connections_max",
                "Configured maximum of open connections",
                s.max_connections.into(),
            ),
            (
                "produto_db_up",
                "1 if the last database probe succeeded",
                s.healthy.into(),
            ),
            (
                "produto_db_schema_migrated",
                "1 once every migration this binary knows is applied",
                self.db.is_migrated().into(),
            ),
            (
                "produto_ready",
                "1 while the server is ready (same source as gRPC health and /readyz)",
                self.ready.get().into(),
            ),
            (
                "produto_login_throttle_in_memory",
                "1 while login attempts are counted in this instance's memory (throttling table unreachable)",
                s.throttle_in_memory.into(),
            ),
        ];
        // The connection budget, once read at start (PostgreSQL only).
        let budget = self.db.budget().map(|(max, available, needed)| {
            [
                (
                    "produto_db_connection_budget_ok",
                    "1 if PostgreSQL had room for this instance's largest pool at start",
                    i64::from(needed <= available),
                ),
                (
                    "produto_db_max_connections",
                    "PostgreSQL's max_connections, read at start",
                    i64::from(max),
                ),
                (
                    "produto_db_connections_available",
                    "Connections ordinary roles had left at start, besides this instance's pool",
                    i64::from(available),
                ),
            ]
        });
        for (name, help, value) in gauges.into_iter().chain(budget.into_iter().flatten()) {
            encode_one(&mut encoder, name, help, None, ConstGauge::new(value))?;
        }
        // Users still on an imported legacy hash, once counted (see `db::users`).
        if let Some(counts) = self.db.stats().legacy_hashes.get() {
            let mut family = encoder.encode_descriptor(
                "produto_users_legacy_hash",
                "Users still on an imported legacy password hash, by format (each is replaced \
                 by argon2id at the user's first login).",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (format, users) in counts {
                ConstGauge::new(users).encode(family.encode_family(&FormatLabels { format })?)?;
            }
        }
        let counters: [(&str, &str, u64); 8] = [
            (
                "produto_db_pool_acquires",
                "Connection acquire attempts",
                s.acquires_total,
            ),
            (
                "produto_db_pool_acquire_timeouts",
                "Acquire attempts that found no connection in time",
                s.acquire_timeouts_total,
            ),
            (
                "produto_db_pool_acquire_errors",
                "Acquire attempts that failed otherwise (e.g. could not connect)",
                s.acquire_errors_total,
            ),
            (
                "produto_db_pool_connections_opened",
                "Connections opened",
                s.connections_opened_total,
            ),
            (
                "produto_db_pool_connections_lost",
                "Connections found broken or discarded mid-statement",
                s.connections_lost_total,
            ),
            (
                "produto_logins_throttled",
                "Logins refused unchecked by brute-force throttling",
                s.logins_throttled_total,
            ),
            (
                "produto_password_verifications",
                "Passwords checked against a user's stored hash (the dummy hash not counted)",
                s.password_verifications_total,
            ),
            (
                "produto_login_attempts_in_memory",
                "Login attempts counted in memory because the throttling table could not be written",
                s.logins_counted_in_memory_total,
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, None, ConstCounter::new(value))?;
        }
        let seconds = [
            (
                "produto_db_probe_duration",
                "Round trip of the last database probe",
                s.last_probe_latency_us as f64 / 1e6,
            ),
            (
                "produto_db_probe_last_timestamp",
                "When the last database probe ran (Unix time)",
                s.last_probe_unix_ms as f64 / 1e3,
            ),
        ];
        for (name, help, value) in seconds {
            encode_one(
                &mut encoder,
                name,
                help,
                Some(&Unit::Seconds),
                ConstGauge::new(value),
            )?;
        }
        Ok(())
    }
}

/// Encodes one metric read at scrape time, its help text ending in a full stop.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> Result<(), fmt::Error> {
    metric.encode(encoder.encode_descriptor(
        name,
        &format!("{help}."),
        unit,
        metric.metric_type(),
    )?)
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
