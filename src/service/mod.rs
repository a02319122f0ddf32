//! The gRPC services: ProdutoService (users), PoolService (pool figures) and the health
//! readiness that the background probe drives.

pub mod health;
pub mod pool;
pub mod produto;

pub use health::Readiness;
pub use pool::PoolSvc;
pub use produto::ProdutoSvc;
