//! Users and their levels: the feature behind AdicionarUsuario, ObterNivel, AlterarSenha,
//! AlterarNivel, RemoverUsuario and ListarUsuarios, and the credentials a login reads. It owns
//! its SQL (`store.rs`), the ObterNivel batcher with its one lookup query (`levels.rs`) and
//! the count of users still on a legacy hash (`legacy_counts.rs`); every statement runs
//! through [`Db::run`].

mod legacy_counts;
pub mod levels;
mod store;

use std::sync::Arc;

pub use legacy_counts::LegacyHashCounts;
pub use levels::{Levels, NivelBatcher};
pub use store::{Credentials, UserSummary};

use crate::db::Db;

/// The users feature over one database handle: cheap to clone, shared by the handlers, the
/// login, the background count and the metrics.
#[derive(Clone, Debug)]
pub struct Users {
    db: Db,
    /// The ObterNivel batchers, one per PostgreSQL server when lookups are batched.
    levels: Arc<Levels>,
    /// Users still on a legacy hash, by format.
    legacy: Arc<LegacyHashCounts>,
}

impl Users {
    pub fn new(db: Db) -> Self {
        Users {
            levels: Arc::new(Levels::new(&db)),
            legacy: Arc::default(),
            db,
        }
    }

    /// The database handle the feature runs its statements on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The ObterNivel batchers.
    pub fn levels(&self) -> &Levels {
        &self.levels
    }

    /// Users still on a legacy hash, by format, as last counted.
    pub fn legacy_hashes(&self) -> &LegacyHashCounts {
        &self.legacy
    }
}
