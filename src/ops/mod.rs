//! Operations: Prometheus metrics (the registry in [`metrics`], the RPC recorder in
//! [`rpc_metrics`], the database's figures in [`pool_metrics`], the features' in
//! [`login_metrics`] and [`user_metrics`]), the admin HTTP port (`/metrics`, `/health`,
//! `/livez`, `/readyz`), the request ids that tie a call's log lines together, and the spans
//! exported as traces ([`traces`]).

pub mod admin;
pub mod login_metrics;
pub mod metrics;
pub mod pool_metrics;
pub mod request_id;
pub mod rpc_metrics;
pub mod traces;
pub mod user_metrics;
