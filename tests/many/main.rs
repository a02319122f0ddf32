//! Many instances: PgBouncer in session and transaction pooling in front of PostgreSQL,
//! three `produto-server` processes on one database, and the library's balancing client.

mod bouncer;
mod budget;
mod client;
mod cost;
mod instances;
mod mixed;

use std::collections::BTreeMap;

use tonic::Code;

/// Counts of gRPC codes.
#[derive(Default, Debug)]
pub struct Tally(BTreeMap<String, u32>);

impl Tally {
    pub fn add<T>(&mut self, result: &Result<T, tonic::Status>) {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        *self.0.entry(format!("{code:?}")).or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for (code, n) in other.0 {
            *self.0.entry(code).or_default() += n;
        }
    }

    pub fn count(&self, code: Code) -> u32 {
        self.0.get(&format!("{code:?}")).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }
}
