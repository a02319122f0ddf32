//! A client for other Rust services (and the bot) that spreads calls over every instance:
//! a tonic balancing channel fed by a resolver task that re-resolves the target names
//! (a Kubernetes headless Service returns one address per ready pod), adds the addresses
//! that answer and drops those that stop answering; idempotent calls are retried as
//! produto's service config says ([`crate::service_config`]: on UNAVAILABLE, bounded,
//! jittered exponential backoff). Depends on tonic, the generated client code and the
//! service config only.

use std::{
    collections::BTreeSet,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc::Sender, watch};
use tokio_util::task::AbortOnDropHandle;
use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, ClientTlsConfig, Endpoint, channel::Change},
};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};
use tracing::Instrument;

use crate::otel::{self, attempt_span};
use crate::pb::{
    AdicionarUsuarioRequest, AdicionarUsuarioResponse, ObterNivelRequest, ObterNivelResponse,
    PoolStatusRequest, PoolStatusResponse, VerificarLoginRequest, VerificarLoginResponse,
    pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient,
};
use crate::service_config::{RetryPolicy, call_with_retries_while, service_config};

const PRODUTO: &str = "produto.v1.ProdutoService";

/// Where the instances are and how to treat them.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `host:port` names, each resolved to every address it has (a headless Service's name,
    /// `localhost`, or a fixed list of instances).
    pub targets: Vec<String>,
    /// How often the names are resolved again and the addresses checked.
    pub resolve_every: Duration,
    /// Bound on each connection attempt, and on the check that an address answers.
    pub connect_timeout: Duration,
    /// TLS for every address (`https`); the certificate is checked against the
    /// `domain_name` set in it, since the addresses are IPs. None: plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// Replaces the service config's retry policy for every retried method (tests use
    /// shorter backoffs); None: the service config's.
    pub retry: Option<RetryPolicy>,
}

impl ClientSettings {
    /// Defaults: re-resolve every 5 s, 2 s connect bound, plaintext, the service config's
    /// retry policy.
    pub fn new(targets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientSettings {
            targets: targets.into_iter().map(Into::into).collect(),
            resolve_every: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            retry: None,
        }
    }
}

/// A status made by the client from a failed connection, not sent by a server: tonic gives
/// those the code UNKNOWN (or CANCELLED, for a stream the dying connection reset) and keeps
/// the transport error as the source. This is the instance going away mid-call: retryable,
/// for idempotent calls, like UNAVAILABLE.
fn transport_failure_is_unavailable(status: Status) -> Status {
    let local = std::error::Error::source(&status).is_some();
    if local && matches!(status.code(), Code::Unknown | Code::Cancelled) {
        Status::unavailable(format!("connection lost mid-call: {}", status.message()))
    } else {
        status
    }
}

/// A balancing, retrying client of every produto instance behind the targets. Cheap to
/// clone; the resolver task stops when the last clone is dropped.
#[derive(Clone)]
pub struct BalancedClient {
    channel: Channel,
    retry: Option<RetryPolicy>,
    /// Attempts repeated after a retryable failure, over the client's life.
    retries: Arc<AtomicU64>,
    addresses: Arc<Mutex<BTreeSet<SocketAddr>>>,
    targets: Arc<str>,
    /// Wakes the resolver for a refresh now.
    refresh: Arc<Notify>,
    /// Counts the resolver's refreshes, to wait for the one asked for.
    refreshed: watch::Receiver<u64>,
    _resolver: Arc<AbortOnDropHandle<()>>,
}

impl BalancedClient {
    /// Resolves the targets once (an error when none resolves to an address that answers,
    /// so a typo fails fast), then keeps resolving in the background.
    pub async fn connect(settings: ClientSettings) -> Result<Self, String> {
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let mut resolver = Resolver {
            settings: settings.clone(),
            changes,
            addresses: Arc::default(),
        };
        resolver.refresh().await?;
        if resolver.current().is_empty() {
            return Err(format!(
                "no instance answers at {}",
                settings.targets.join(", ")
            ));
        }
        Ok(Self::spawn(channel, resolver, false))
    }

    /// Starts without waiting for any instance (for a process that must come up while the
    /// service is down, as the bot): the resolver task resolves at once and adds the
    /// instances as they answer. Calls made while none is known fail fast with UNAVAILABLE
    /// (see [`BalancedClient::ensure_instances`]). Must run inside a Tokio runtime.
    pub fn start(settings: ClientSettings) -> Self {
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let resolver = Resolver {
            settings,
            changes,
            addresses: Arc::default(),
        };
        Self::spawn(channel, resolver, true)
    }

    fn spawn(channel: Channel, mut resolver: Resolver, refresh_first: bool) -> Self {
        let refresh = Arc::new(Notify::new());
        let (refreshed_tx, refreshed) = watch::channel(0u64);
        let settings = resolver.settings.clone();
        let addresses = resolver.addresses.clone();
        let wake = refresh.clone();
        let task = tokio::spawn(async move {
            let mut first = refresh_first;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::select! {
                        _ = tokio::time::sleep(resolver.settings.resolve_every) => {}
                        _ = wake.notified() => {}
                    }
                }
                if let Err(e) = resolver.refresh().await {
                    tracing::warn!(error = %e, "resolving the produto instances failed; keeping the last addresses");
                }
                refreshed_tx.send_modify(|n| *n += 1);
            }
        });
        BalancedClient {
            channel,
            retry: settings.retry,
            retries: Arc::default(),
            addresses,
            targets: settings.targets.join(", ").into(),
            refresh,
            refreshed,
            _resolver: Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// Asks the resolver to refresh now and waits (up to `bound`) for it to finish.
    pub async fn refresh_now(&self, bound: Duration) {
        let mut refreshed = self.refreshed.clone();
        refreshed.mark_unchanged();
        self.refresh.notify_one();
        let _ = tokio::time::timeout(bound, refreshed.changed()).await;
    }

    /// Ok when an instance is known; otherwise refreshes once (up to `bound`) and fails
    /// with UNAVAILABLE if still none answers, so that a call never waits on an empty
    /// balancer.
    pub async fn ensure_instances(&self, bound: Duration) -> Result<(), Status> {
        if self.current().is_empty() {
            self.refresh_now(bound).await;
        }
        if self.current().is_empty() {
            return Err(Status::unavailable(format!(
                "no produto instance answers at {}",
                self.targets
            )));
        }
        Ok(())
    }

    /// An idempotent call of `service`/`method` (`call` builds a fresh request each time),
    /// retried under its policy but never past `within` from now, nor once no instance
    /// answers: a failed attempt makes the resolver check the instances at once, so that
    /// a stopped one is dropped before the next attempt. For a caller with its own
    /// deadline, such as the bot.
    pub async fn retried_within<T, F, Fut>(
        &self,
        method: (&str, &str),
        within: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + within;
        let bound = within.min(Duration::from_secs(1));
        self.ensure_instances(bound).await?;
        let Some(policy) = self.policy(method) else {
            let span = attempt_span(method, 1);
            let attempt = span.in_scope(&mut call);
            return attempt
                .instrument(span)
                .await
                .map_err(transport_failure_is_unavailable);
        };
        let mut attempts = 0;
        call_with_retries_while(
            policy,
            |wait| Instant::now() + wait < deadline,
            || {
                attempts += 1;
                // The request is built in the attempt's span, so that it carries its context.
                let span = attempt_span(method, attempts);
                let attempt = span.in_scope(&mut call);
                async move {
                    if attempts > 1 {
                        self.retries.fetch_add(1, Relaxed);
                        self.refresh_now(bound).await;
                        self.ensure_instances(bound).await?;
                    }
                    attempt.await.map_err(transport_failure_is_unavailable)
                }
                .instrument(span)
            },
        )
        .await
    }

    /// The retry policy of `service`/`method`: the settings' override, else the service
    /// config's (None: never retried).
    fn policy(&self, method: (&str, &str)) -> Option<&RetryPolicy> {
        self.retry
            .as_ref()
            .or_else(|| service_config().retry_policy(method.0, method.1))
    }

    /// Attempts repeated after a retryable failure so far (a figure for metrics and tests).
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Runs an idempotent call of `service`/`method` under its retry policy, counting the
    /// repeated attempts; a call cut by its connection counts as UNAVAILABLE. A failed
    /// attempt wakes the resolver (without waiting for it), so that an instance that stopped
    /// is dropped now rather than at the next resolve, and the calls after this one do not
    /// meet it too.
    async fn retrying<T, F, Fut>(&self, method: (&str, &str), mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let Some(policy) = self.policy(method) else {
            return call().await.map_err(transport_failure_is_unavailable);
        };
        let mut attempts = 0;
        call_with_retries_while(
            policy,
            |_| true,
            || {
                attempts += 1;
                if attempts > 1 {
                    self.retries.fetch_add(1, Relaxed);
                    self.refresh.notify_one();
                }
                let span = attempt_span(method, attempts);
                let attempt = span.in_scope(&mut call);
                async move { attempt.await.map_err(transport_failure_is_unavailable) }
                    .instrument(span)
            },
        )
        .await
    }

    /// The addresses calls are spread over right now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.current().into_iter().collect()
    }

    fn current(&self) -> BTreeSet<SocketAddr> {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The balancing channel, for generated clients of services this type does not wrap
    /// (no retries on it).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// ObterNivel, retried on UNAVAILABLE (a read).
    pub async fn obter_nivel(
        &self,
        request: ObterNivelRequest,
    ) -> Result<Response<ObterNivelResponse>, Status> {
        let client = ProdutoServiceClient::new(self.channel.clone());
        self.retrying((PRODUTO, "ObterNivel"), || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.obter_nivel(otel::request(request)).await }
        })
        .await
    }

    /// VerificarLogin, retried on UNAVAILABLE: an attempt that failed that way did not
    /// check the password (the server answers UNAVAILABLE before or instead of it).
    pub async fn verificar_login(
        &self,
        request: VerificarLoginRequest,
    ) -> Result<Response<VerificarLoginResponse>, Status> {
        let client = ProdutoServiceClient::new(self.channel.clone());
        self.retrying((PRODUTO, "VerificarLogin"), || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.verificar_login(otel::request(request)).await }
        })
        .await
    }

    /// AdicionarUsuario, sent once: never retried, since a first attempt that timed out or
    /// lost its connection may have created the user (a retry would then say ALREADY_EXISTS).
    pub async fn adicionar_usuario(
        &self,
        request: Request<AdicionarUsuarioRequest>,
    ) -> Result<Response<AdicionarUsuarioResponse>, Status> {
        ProdutoServiceClient::new(self.channel.clone())
            .adicionar_usuario(request)
            .await
    }

    /// PoolStatus of whichever instance answers, retried on UNAVAILABLE.
    pub async fn pool_status(&self) -> Result<Response<PoolStatusResponse>, Status> {
        let client = PoolServiceClient::new(self.channel.clone());
        self.retrying(("produto.v1.PoolService", "PoolStatus"), || {
            let mut client = client.clone();
            async move {
                client
                    .pool_status(otel::request(PoolStatusRequest {}))
                    .await
            }
        })
        .await
    }

    /// A health check of whichever instance answers (`""`: readiness), retried on UNAVAILABLE.
    pub async fn health(&self, service: &str) -> Result<Response<HealthCheckResponse>, Status> {
        let client = HealthClient::new(self.channel.clone());
        self.retrying(("grpc.health.v1.Health", "Check"), || {
            let mut client = client.clone();
            let request = HealthCheckRequest {
                service: service.into(),
            };
            async move { client.check(otel::request(request)).await }
        })
        .await
    }
}

/// Turns resolved addresses into changes of the balancing channel.
struct Resolver {
    settings: ClientSettings,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    addresses: Arc<Mutex<BTreeSet<SocketAddr>>>,
}

impl Resolver {
    fn current(&self) -> BTreeSet<SocketAddr> {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves every target, keeps the addresses that accept a TCP connection, and sends
    /// the channel what changed. Errors only when no target resolves at all.
    async fn refresh(&mut self) -> Result<(), String> {
        let mut resolved = BTreeSet::new();
        let mut errors = Vec::new();
        for target in &self.settings.targets {
            match tokio::time::timeout(
                self.settings.connect_timeout,
                tokio::net::lookup_host(target.as_str()),
            )
            .await
            {
                Ok(Ok(addrs)) => resolved.extend(addrs),
                Ok(Err(e)) => errors.push(format!("{target}: {e}")),
                Err(_) => errors.push(format!("{target}: resolving timed out")),
            }
        }
        if resolved.is_empty() && !errors.is_empty() {
            return Err(errors.join("; "));
        }
        // An address that refuses connections (its pod is gone, its process killed) is
        // dropped now rather than when each call finds out.
        let bound = self.settings.connect_timeout;
        let checks = resolved.into_iter().map(|addr| async move {
            let answers = tokio::time::timeout(bound, tokio::net::TcpStream::connect(addr))
                .await
                .is_ok_and(|r| r.is_ok());
            (addr, answers)
        });
        let answering: BTreeSet<SocketAddr> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(|(addr, answers)| answers.then_some(addr))
            .collect();
        let before = self.current();
        for gone in before.difference(&answering) {
            tracing::info!(addr = %gone, "produto instance removed");
            let _ = self.changes.send(Change::Remove(*gone)).await;
        }
        for new in answering.difference(&before) {
            let endpoint = self.endpoint(*new)?;
            tracing::info!(addr = %new, "produto instance added");
            let _ = self.changes.send(Change::Insert(*new, endpoint)).await;
        }
        *self.addresses.lock().unwrap_or_else(|e| e.into_inner()) = answering;
        Ok(())
    }

    fn endpoint(&self, addr: SocketAddr) -> Result<Endpoint, String> {
        let scheme = if self.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.settings.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {addr}: {e}"))?;
        }
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_by_its_connection_is_unavailable_and_a_server_answer_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cut = Status::from_error(Box::new(io));
        assert_eq!(cut.code(), Code::Unknown);
        assert_eq!(
            transport_failure_is_unavailable(cut).code(),
            Code::Unavailable
        );
        let answered = Status::unknown("from the server");
        assert_eq!(
            transport_failure_is_unavailable(answered).code(),
            Code::Unknown
        );
    }

    #[test]
    fn the_idempotent_calls_are_retried_and_adicionar_usuario_is_not() {
        let config = service_config();
        for (service, method) in [
            (PRODUTO, "ObterNivel"),
            (PRODUTO, "VerificarLogin"),
            ("produto.v1.PoolService", "PoolStatus"),
            ("grpc.health.v1.Health", "Check"),
        ] {
            assert!(config.retry_policy(service, method).is_some(), "{method}");
        }
        assert!(config.retry_policy(PRODUTO, "AdicionarUsuario").is_none());
    }
}
