//! How the commands call the service: the request's deadline and metadata (the bot's caller
//! token, the chat's end user, which names its session), idempotent calls retried through the balancing client, the others sent once,
//! every call bounded, timed and logged; and what a failed call becomes in the chat.

use std::{future::Future, time::Duration, time::Instant};

use tonic::{
    Code, Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use super::{Bot, Caller};
use crate::{metrics::Outcome, reply};
use produto_client::pb::produto_service_client::ProdutoServiceClient;

pub(super) const PRODUTO: &str = "produto.v1.ProdutoService";
pub(super) const POOL: &str = "produto.v1.PoolService";
pub(super) const HEALTH: &str = "grpc.health.v1.Health";

/// The metadata key that names the chat user a call is made for.
pub const END_USER_HEADER: &str = "produto-end-user";

pub(super) use crate::reply::reason as reason_of;

/// The reply to a failed call, and its outcome.
pub(super) fn service_error(status: &Status) -> (String, Outcome) {
    let outcome = match status.code() {
        // A login throttled for too many failed attempts (reason LOGIN_THROTTLED).
        Code::ResourceExhausted if reply::login_throttled(status).is_some() => Outcome::Refused,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            Outcome::Unavailable
        }
        Code::NotFound
        | Code::AlreadyExists
        | Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied => Outcome::Refused,
        _ => Outcome::Failed,
    };
    (reply::service_error(status), outcome)
}

/// `call`, or DEADLINE_EXCEEDED once `bound` has passed.
async fn within<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(bound, call).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(
            "no answer from the service in time",
        ))
    })
}

impl Bot {
    /// A request for the chat of `caller`: [`Bot::request`] with its end user, which names
    /// the chat's session to the service.
    pub(super) fn chat_request<T>(&self, message: T, caller: &Caller) -> Request<T> {
        self.request(message, caller.end_user.as_ref())
    }

    /// A call sent once, never retried (its first attempt may have taken effect), through
    /// the balancing channel, bounded by the per-call timeout.
    pub(super) async fn once<M, T, Fut>(
        &self,
        method: &'static str,
        request: impl FnOnce() -> Request<M>,
        call: impl FnOnce(ProdutoServiceClient<Channel>, Request<M>) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        // The one attempt is a client span, and the request is built inside it, so that the
        // service continues the trace from the attempt (as the balancing client's do).
        let span = produto_client::otel::attempt_span(("produto.v1.ProdutoService", method), 1);
        let request = span.in_scope(request);
        let sent = async {
            self.client.ensure_instances(self.timeout).await?;
            within(self.timeout, call(self.produto.clone(), request)).await
        };
        self.call(method, tracing::Instrument::instrument(sent, span))
            .await
    }

    /// A request carrying the per-call deadline, the bot's caller token and, when known,
    /// who asked.
    pub(super) fn request<T>(
        &self,
        message: T,
        end_user: Option<&MetadataValue<Ascii>>,
    ) -> Request<T> {
        let mut request = produto_client::otel::request(message);
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        if let Some(end_user) = end_user {
            request
                .metadata_mut()
                .insert(END_USER_HEADER, end_user.clone());
        }
        request
    }

    /// An idempotent call (`attempt` builds a fresh request each time) through the balancing
    /// client: each attempt bounded by the per-call timeout, retries (on UNAVAILABLE, as the
    /// service config says) only while that timeout has not passed since the first.
    pub(super) async fn idempotent<T, F, Fut>(
        &self,
        service: &str,
        method: &'static str,
        mut attempt: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.timeout;
        let retried = self.client.retried_within((service, method), timeout, || {
            let call = attempt();
            within(timeout, call)
        });
        self.call(method, retried).await
    }

    /// Awaits a call within the backstop, logging failures that are not the user's doing.
    async fn call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = within(self.backstop, call).await;
        self.metrics.service_call(method, started.elapsed());
        result
            .map(Response::into_inner)
            .inspect_err(|status| match status.code() {
                Code::NotFound | Code::AlreadyExists | Code::InvalidArgument => {
                    tracing::debug!(code = ?status.code(), error = status.message(), "call refused")
                }
                code => tracing::warn!(?code, error = status.message(), "call failed"),
            })
    }
}
