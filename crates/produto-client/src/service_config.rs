//! The clients' retry policy: `proto/produto/v1/service_config.json`, the gRPC service config
//! that grpc-go, grpc-java and grpcio apply themselves, parsed into a small type for Rust
//! callers (tonic has no service-config support), plus [`call_with_retries`] to apply it.
//! One file, so every client of produto retries the same calls the same way.

use std::{future::Future, sync::LazyLock, time::Duration};

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The service config as JSON, as other languages' clients take it.
pub const SERVICE_CONFIG_JSON: &str = include_str!("../../../proto/produto/v1/service_config.json");

/// One method's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodConfig {
    /// `(service, method)` pairs this entry covers, e.g. `("produto.v1.PoolService", "PoolStatus")`.
    pub names: Vec<(String, String)>,
    /// The whole call's bound, retries included.
    pub timeout: Option<Duration>,
    /// `None`: the method is never retried (it is not idempotent).
    pub retry: Option<RetryPolicy>,
}

/// gRPC's retry policy (gRFC A6): attempt `n` (from 1) waits a random time up to
/// `min(initial_backoff * multiplier^(n-1), max_backoff)` before the next.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub backoff_multiplier: f64,
    pub retryable_codes: Vec<Code>,
}

/// The parsed service config.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub methods: Vec<MethodConfig>,
}

impl ServiceConfig {
    /// Parses a service config's `methodConfig` entries (names, timeout, retryPolicy).
    pub fn parse(json: &str) -> Result<Self, String> {
        let root: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let entries = root["methodConfig"]
            .as_array()
            .ok_or("methodConfig: expected a list")?;
        let methods = entries.iter().map(parse_method).collect::<Result<_, _>>()?;
        Ok(ServiceConfig { methods })
    }

    /// The settings for `service`/`method`, if any entry names it.
    pub fn method(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        self.methods.iter().find(|m| {
            m.names
                .iter()
                .any(|(s, me)| s == service && (me == method || me.is_empty()))
        })
    }

    /// The retry policy for `service`/`method`; `None` for a method never retried.
    pub fn retry_policy(&self, service: &str, method: &str) -> Option<&RetryPolicy> {
        self.method(service, method)?.retry.as_ref()
    }
}

/// produto's service config, parsed once.
pub fn service_config() -> &'static ServiceConfig {
    static CONFIG: LazyLock<ServiceConfig> = LazyLock::new(|| {
        ServiceConfig::parse(SERVICE_CONFIG_JSON).expect("the embedded service config parses")
    });
    &CONFIG
}

impl RetryPolicy {
    /// The most a caller waits after failed attempt `attempt` (1 = the first).
    pub fn max_backoff_after(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial_backoff.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        Duration::from_secs_f64(grown.min(self.max_backoff.as_secs_f64()))
    }

    /// Whether a status is worth another attempt under this policy.
    pub fn retries(&self, status: &Status) -> bool {
        self.retryable_codes.contains(&status.code())
    }
}

/// Runs `call` until it succeeds, fails with a code the policy does not retry, or has made
/// `max_attempts` attempts. Between attempts it waits the server's `RetryInfo` delay when
/// the status carries one (capped at `max_backoff`), else a random time up to the policy's
/// backoff. `call` must be idempotent: build a fresh request inside it.
pub async fn call_with_retries<T, F, Fut>(policy: &RetryPolicy, call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    call_with_retries_while(policy, |_| true, call).await
}

/// [`call_with_retries`], asking `retry_after(wait)` before each wait whether to go on (a
/// caller with a deadline, or one that knows no server is left, says no and gets the last
/// status at once).
pub async fn call_with_retries_while<T, F, Fut>(
    policy: &RetryPolicy,
    mut retry_after: impl FnMut(Duration) -> bool,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if attempt < policy.max_attempts && policy.retries(&status) => {
                let wait = match status.get_details_retry_info().and_then(|r| r.retry_delay) {
                    Some(server) => server.min(policy.max_backoff),
                    None => policy.max_backoff_after(attempt).mul_f64(jitter()),
                };
                if !retry_after(wait) {
                    return Err(status);
                }
                tracing::debug!(attempt, code = ?status.code(), ?wait, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// A number in [0, 1), random enough to spread retries apart.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

fn parse_method(entry: &serde_json::Value) -> Result<MethodConfig, String> {
    let names = entry["name"]
        .as_array()
        .ok_or("methodConfig.name: expected a list")?
        .iter()
        .map(|n| {
            let service = n["service"]
                .as_str()
                .ok_or("name.service: expected a string")?;
            let method = n["method"].as_str().unwrap_or_default();
            Ok((service.to_owned(), method.to_owned()))
        })
        .collect::<Result<_, String>>()?;
    let timeout = entry["timeout"].as_str().map(parse_duration).transpose()?;
    let retry = match &entry["retryPolicy"] {
        serde_json::Value::Null => None,
        policy => Some(parse_retry(policy)?),
    };
    Ok(MethodConfig {
        names,
        timeout,
        retry,
    })
}

fn parse_retry(policy: &serde_json::Value) -> Result<RetryPolicy, String> {
    let duration = |key: &str| {
        policy[key]
            .as_str()
            .ok_or(format!("retryPolicy.{key}: expected a duration"))
            .and_then(parse_duration)
    };
    let max_attempts = policy["maxAttempts"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 2)
        .ok_or("retryPolicy.maxAttempts: expected an integer >= 2")?;
    let backoff_multiplier = policy["backoffMultiplier"]
        .as_f64()
        .filter(|m| *m > 0.0)
        .ok_or("retryPolicy.backoffMultiplier: expected a number > 0")?;
    let retryable_codes = policy["retryableStatusCodes"]
        .as_array()
        .ok_or("retryPolicy.retryableStatusCodes: expected a list")?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(code_named)
                .ok_or(format!("unknown status code {c}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(RetryPolicy {
        // gRPC caps attempts at 5 whatever the config says; so do we.
        max_attempts: max_attempts.min(5),
        initial_backoff: duration("initialBackoff")?,
        max_backoff: duration("maxBackoff")?,
        backoff_multiplier,
        retryable_codes,
    })
}

/// A protobuf JSON duration: decimal seconds with an `s` suffix ("1s", "0.25s").
fn parse_duration(text: &str) -> Result<Duration, String> {
    text.strip_suffix('s')
        .and_then(|secs| secs.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or(format!("{text:?}: expected a duration such as \"1.5s\""))
}

fn code_named(name: &str) -> Option<Code> {
    Some(match name {
        "CANCELLED" => Code::Cancelled,
        "UNKNOWN" => Code::Unknown,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "ABORTED" => Code::Aborted,
        "INTERNAL" => Code::Internal,
        "UNAVAILABLE" => Code::Unavailable,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_idempotent_calls_retry_on_unavailable_and_adicionar_usuario_never_does() {
        let config = service_config();
        for (service, method) in [
            ("produto.v1.ProdutoService", "VerificarLogin"),
            ("produto.v1.ProdutoService", "ObterNivel"),
            ("produto.v1.ProdutoService", "ListarUsuarios"),
            ("produto.v1.ProdutoService", "AlterarNivel"),
            ("produto.v1.ProdutoService", "RemoverUsuario"),
            ("produto.v1.ProdutoService", "ObterSessao"),
            ("produto.v1.ProdutoService", "ListarAuditoria"),
            ("produto.v1.PoolService", "PoolStatus"),
            ("grpc.health.v1.Health", "Check"),
        ] {
            let policy = config
                .retry_policy(service, method)
                .unwrap_or_else(|| panic!("{method} has a retry policy"));
            assert_eq!(policy.retryable_codes, vec![Code::Unavailable]);
            assert_eq!(policy.max_attempts, 5);
        }
        // A retried AdicionarUsuario whose first attempt went through would fail
        // ALREADY_EXISTS, a retried AlterarSenha on its senha_atual (and count twice), a
        // retried AbrirSessao would open a second session.
        for method in ["AdicionarUsuario", "AlterarSenha", "AbrirSessao"] {
            let once = config
                .method("produto.v1.ProdutoService", method)
                .unwrap_or_else(|| panic!("{method} has an entry (its timeout)"));
            assert_eq!(once.retry, None, "{method}");
            assert_eq!(once.timeout, Some(Duration::from_secs(15)), "{method}");
        }
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let policy = service_config()
            .retry_policy("produto.v1.ProdutoService", "ObterNivel")
            .unwrap();
        assert_eq!(policy.max_backoff_after(1), Duration::from_secs(1));
        assert_eq!(policy.max_backoff_after(2), Duration::from_secs(2));
        assert_eq!(policy.max_backoff_after(4), Duration::from_secs(8));
        assert_eq!(policy.max_backoff_after(9), Duration::from_secs(10));
    }

    #[test]
    fn malformed_configs_are_refused_with_the_key() {
        let err = ServiceConfig::parse(
            r#"{"methodConfig":[{"name":[{"service":"s"}],"retryPolicy":{"maxAttempts":3,
            "initialBackoff":"1","maxBackoff":"2s","backoffMultiplier":2,
            "retryableStatusCodes":["UNAVAILABLE"]}}]}"#,
        )
        .unwrap_err();
        assert!(err.contains("expected a duration"), "{err}");
        assert!(ServiceConfig::parse("[]").is_err());
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
    }

    fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            backoff_multiplier: 2.0,
            retryable_codes: vec![Code::Unavailable],
        }
    }

    #[tokio::test]
    async fn retries_unavailable_until_success_and_stops_at_max_attempts() {
        let calls = AtomicU32::new(0);
        let result = call_with_retries(&fast_policy(), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Status::unavailable("down")),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retries(&fast_policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Status::unavailable("down"))
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_codes_are_not_retried_and_retry_info_is_honoured() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retries(&fast_policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Status::not_found("x"))
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Code::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The server's 5 s RetryInfo is capped at the policy's 5 ms maximum backoff.
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let result = call_with_retries(&fast_policy(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // What the server says while its database is down (`Error::DatabaseDown`),
                // built here so that this module needs nothing of the server.
                Err(Status::with_error_details(
                    Code::Unavailable,
                    "down",
                    tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(5))),
                ))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}
