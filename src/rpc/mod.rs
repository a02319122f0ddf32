//! The gRPC side: the services ProdutoService (users, logins), PoolService (pool figures)
//! and the health readiness that the background probe drives, and the per-call middleware.
//! A handler parses the request into domain values, calls the feature and maps its answer.

pub mod health;
pub mod middleware;
pub mod pool;
pub mod produto;

pub use health::Readiness;
pub use pool::PoolSvc;
pub use produto::ProdutoSvc;
