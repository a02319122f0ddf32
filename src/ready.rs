//! What readiness last reported, shared by the gRPC health service (which sets it) and the
//! admin port and metrics (which read it). It sits at the bottom so both can use it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering::Relaxed},
};

/// Whether the server is ready (schema migrated and the last probe succeeded).
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    pub fn get(&self) -> bool {
        self.0.load(Relaxed)
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Relaxed);
    }
}
