//! The queries on `usuarios`. Each is written once and runs on either backend: the SQL is
//! plain enough for both (`$n` placeholders, `RETURNING`), and [`on_conn!`] instantiates it
//! for the backend's own connection type.

use futures_util::FutureExt;

use super::{Backend, Db};
use crate::{
    Error,
    domain::{Nivel, Usuario},
};

/// Runs `$query` (a sqlx future over `$conn`) on a leased connection of whichever backend
/// `$db` has, bounded by the query timeout, with the outcome classified into [`Error`].
macro_rules! on_conn {
    ($db:expr, |$conn:ident| $query:expr) => {
        match $db.backend() {
            Backend::Postgres(pool) => {
                let mut lease = $db.acquire(pool).await?;
                let outcome = {
                    let $conn = &mut *lease;
                    $db.bounded($query).await
                };
                $db.classify(&mut lease, outcome)
            }
            Backend::Sqlite(pool) => {
                let mut lease = $db.acquire(pool).await?;
                let outcome = {
                    let $conn = &mut *lease;
                    $db.bounded($query).await
                };
                $db.classify(&mut lease, outcome)
            }
        }
    };
}

/// What a login needs of a user.
#[derive(Debug)]
pub struct Credentials {
    pub id: i64,
    pub senha_hash: String,
    pub nivel: i32,
}

impl Db {
    /// The stored hash and level of a user, if the user exists.
    pub async fn credentials(&self, usuario: &Usuario) -> Result<Option<Credentials>, Error> {
        let row: Option<(i64, String, i32)> = on_conn!(self, |conn| {
            sqlx::query_as("SELECT id, senha_hash, nivel FROM usuarios WHERE usuario = $1")
                .bind(usuario.as_str())
                .fetch_optional(conn)
        })?;
        Ok(row.map(|(id, senha_hash, nivel)| Credentials {
            id,
            senha_hash,
            nivel,
        }))
    }

    /// A user's level, if the user exists: batched with concurrent lookups when the batcher
    /// is on (see [`super::batch`]), one query of its own otherwise.
    pub async fn nivel(&self, usuario: &Usuario) -> Result<Option<i32>, Error> {
        if let Some(batch) = self.nivel_batch() {
            return batch.nivel(self, usuario).await;
        }
        on_conn!(self, |conn| {
            sqlx::query_scalar("SELECT nivel FROM usuarios WHERE usuario = $1")
                .bind(usuario.as_str())
                .fetch_optional(conn)
        })
    }

    /// Creates a user and returns its id; ALREADY_EXISTS when the name is taken.
    pub async fn insert_user(
        &self,
        usuario: &Usuario,
        senha_hash: &str,
        nivel: Nivel,
    ) -> Result<i64, Error> {
        let inserted = on_conn!(self, |conn| {
            sqlx::query_scalar(
                "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(usuario.as_str())
            .bind(senha_hash)
            .bind(nivel.get())
            .fetch_one(conn)
        });
        match inserted {
            Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => Err(
                Error::AlreadyExists(format!("usuario '{usuario}' already exists")),
            ),
            other => other,
        }
    }

    /// Replaces a user's stored hash (after a login with outdated parameters).
    pub async fn update_hash(&self, id: i64, senha_hash: &str) -> Result<(), Error> {
        on_conn!(self, |conn| {
            sqlx::query("UPDATE usuarios SET senha_hash = $1 WHERE id = $2")
                .bind(senha_hash)
                .bind(id)
                .execute(conn)
                // The two backends' results differ in type; only success matters here.
                .map(|r| r.map(|_| ()))
        })?;
        Ok(())
    }
}
