//! Operations: Prometheus metrics, the admin HTTP port (`/metrics`, `/health`, `/livez`,
//! `/readyz`) and the request ids that tie a call's log lines together.

pub mod admin;
pub mod metrics;
pub mod pool_metrics;
pub mod request_id;
