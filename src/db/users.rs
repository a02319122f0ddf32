//! The queries on `usuarios`. Each is written once and runs on either backend: the SQL is
//! plain enough for both (`$n` placeholders, `RETURNING`), and [`on_conn!`] instantiates it
//! for the backend's own connection type.

use futures_util::FutureExt;

use super::{Access, Backend, Db};
use crate::{
    Error,
    domain::{Nivel, Usuario},
};

/// Runs `$query` (a sqlx future over `$conn`) on a leased connection of a server of `$db`
/// (the primary, or for `read:` the server index given), bounded by the query timeout and
/// timed under `$name` (the `query` label of the latency histogram and the slow-query log),
/// with the outcome classified into [`Error`].
///
/// `read:` marks a statement that is safe to repeat, so it is retried once: on another
/// connection of the same server when its connection turns out to be dead (cut by the
/// network, or the database restarted; the pool pings the next one first, see
/// `Db::acquire`), so a cut that happened while the pool was idle costs the caller nothing;
/// and on the primary when it failed on a replica (the replica died since the last probe).
/// Writes are never repeated: the first attempt may have committed.
macro_rules! on_conn {
    (read: $db:expr, $server:expr, $name:literal, |$conn:ident| $query:expr) => {
        on_conn!(@run true, $db, $server, $name, |$conn| $query)
    };
    ($db:expr, $name:literal, |$conn:ident| $query:expr) => {
        on_conn!(@run false, $db, $db.servers().route(Access::Primary), $name, |$conn| $query)
    };
    (@run $read:expr, $db:expr, $server:expr, $name:literal, |$conn:ident| $query:expr) => {{
        let mut server: usize = $server;
        let mut attempt = 1;
        loop {
            if $read {
                $db.servers().get(server).count_read();
            }
            let (result, lost) = match &$db.servers().get(server).backend {
                Backend::Postgres(pool) => on_conn!(@once $db, server, $name, pool, |$conn| $query),
                Backend::Sqlite(pool) => on_conn!(@once $db, server, $name, pool, |$conn| $query),
            };
            let on_replica = server != $db.servers().primary_index();
            let failed = matches!(&result, Err(Error::Unavailable(_) | Error::DatabaseDown(_)));
            if !($read && attempt < 2 && (lost || (on_replica && failed))) {
                break result;
            }
            attempt += 1;
            if on_replica {
                server = $db.servers().primary_index();
            }
            tracing::debug!(query = $name, "read failed on its connection or replica; retrying once");
        }
    }};
    (@once $db:expr, $server:ident, $name:literal, $pool:ident, |$conn:ident| $query:expr) => {
        match $db.acquire($server, $pool).await {
            Err(e) => (Err(e), false),
            Ok(mut lease) => {
                let outcome = if $db.in_transaction() {
                    // Transaction pooling: BEGIN pins one server connection for the
                    // statement's parse and execution (see `Db::named_statements`).
                    $db.bounded_as($name, async {
                        let mut tx = sqlx::Connection::begin(&mut *lease).await?;
                        let value = {
                            let $conn = &mut *tx;
                            $query.await
                        };
                        match value {
                            Ok(value) => tx.commit().await.map(|()| value),
                            Err(e) => {
                                let _ = tx.rollback().await;
                                Err(e)
                            }
                        }
                    })
                    .await
                } else {
                    let $conn = &mut *lease;
                    $db.bounded_as($name, $query).await
                };
                let lost = matches!(&outcome, Ok(Err(e)) if crate::error::is_connection_error(e));
                ($db.classify($server, &mut lease, outcome), lost)
            }
        }
    };
}

/// The unique key on `usuarios.usuario`, as migrations/postgres names it.
const USUARIO_KEY: &str = "usuarios_usuario_key";

/// Whether an insert failed because the username is taken: PostgreSQL names the constraint;
/// SQLite reports no constraint names, only the column (`UNIQUE constraint failed:
/// usuarios.usuario`), so there the only unique key of the table decides.
fn is_usuario_taken(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.is_unique_violation()
        && match e.constraint() {
            Some(name) => name == USUARIO_KEY,
            None => e.message().contains("usuarios.usuario"),
        }
}

/// What a login needs of a user.
#[derive(Debug)]
pub struct Credentials {
    pub id: i64,
    pub senha_hash: String,
    pub nivel: i32,
}

impl Db {
    /// Runs a lookup on the server reads are routed to; a miss there, when it is a replica,
    /// is asked again of the primary, since a user added moments ago may not have reached
    /// the replica yet. While the primary cannot answer (down at the last probe, or
    /// UNAVAILABLE now), the replica's miss stands.
    async fn read_confirmed<T, F, Fut>(&self, lookup: F) -> Result<Option<T>, Error>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Option<T>, Error>>,
    {
        let server = self.servers().route(Access::Read);
        let found = lookup(server).await?;
        let primary = self.servers().primary_index();
        // A primary the probe found down is not asked: the answer would be UNAVAILABLE,
        // after a wait.
        if found.is_some() || server == primary || !self.servers().primary().reachable() {
            return Ok(found);
        }
        match lookup(primary).await {
            Err(Error::Unavailable(e) | Error::DatabaseDown(e)) => {
                tracing::debug!(error = %e, "cannot confirm a replica's miss on the primary");
                Ok(None)
            }
            other => other,
        }
    }

    /// The stored hash and level of a user, if the user exists.
    pub async fn credentials(&self, usuario: &Usuario) -> Result<Option<Credentials>, Error> {
        let row: Option<(i64, String, i32)> = self
            .read_confirmed(|server| async move {
                on_conn!(read: self, server, "credentials", |conn| {
                    sqlx::query_as("SELECT id, senha_hash, nivel FROM usuarios WHERE usuario = $1")
                        .bind(usuario.as_str())
                        .persistent(self.named_statements())
                        .fetch_optional(conn)
                })
            })
            .await?;
        Ok(row.map(|(id, senha_hash, nivel)| Credentials {
            id,
            senha_hash,
            nivel,
        }))
    }

    /// A user's level, if the user exists: batched with concurrent lookups when the batcher
    /// is on (see [`super::batch`]), one query of its own otherwise.
    pub async fn nivel(&self, usuario: &Usuario) -> Result<Option<i32>, Error> {
        self.read_confirmed(|server| async move {
            if let Some(batch) = &self.servers().get(server).nivel_batch {
                return batch.nivel(self, server, usuario).await;
            }
            on_conn!(read: self, server, "nivel", |conn| {
                sqlx::query_scalar("SELECT nivel FROM usuarios WHERE usuario = $1")
                    .bind(usuario.as_str())
                    .persistent(self.named_statements())
                    .fetch_optional(conn)
            })
        })
        .await
    }

    /// Creates a user and returns its id; ALREADY_EXISTS when the name is taken.
    pub async fn insert_user(
        &self,
        usuario: &Usuario,
        senha_hash: &str,
        nivel: Nivel,
    ) -> Result<i64, Error> {
        let inserted = on_conn!(self, "insert_user", |conn| {
            sqlx::query_scalar(
                "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(usuario.as_str())
            .bind(senha_hash)
            .bind(nivel.get())
            .persistent(self.named_statements())
            .fetch_one(conn)
        });
        match inserted {
            Err(Error::Database(sqlx::Error::Database(e))) if is_usuario_taken(&*e) => Err(
                Error::AlreadyExists(format!("usuario '{usuario}' already exists")),
            ),
            other => other,
        }
    }

    /// Replaces a user's stored hash (after a login with outdated parameters).
    pub async fn update_hash(&self, id: i64, senha_hash: &str) -> Result<(), Error> {
        on_conn!(self, "update_hash", |conn| {
            sqlx::query("UPDATE usuarios SET senha_hash = $1 WHERE id = $2")
                .bind(senha_hash)
                .bind(id)
                .persistent(self.named_statements())
                .execute(conn)
                // The two backends' results differ in type; only success matters here.
                .map(|r| r.map(|_| ()))
        })?;
        Ok(())
    }
}

/// Login-attempt bookkeeping for brute-force throttling (see [`crate::throttle`]). Times
/// are Unix milliseconds from the service's clock, passed in so that the SQL is the same on
/// both backends; a row whose window began at or before `window_start_ms` counts as empty.
impl Db {
    /// Counts one attempt on `(usuario, identidade)`, opening a new window when the last
    /// one has passed, and returns the count including it. One atomic upsert, so that
    /// attempts begun at the same time on any instance each get a different count.
    pub async fn claim_login_attempt(
        &self,
        usuario: &Usuario,
        identidade: &str,
        now_ms: i64,
        window_start_ms: i64,
    ) -> Result<u32, Error> {
        let n: i32 = on_conn!(self, "claim_login_attempt", |conn| {
            sqlx::query_scalar(
                "INSERT INTO login_tentativas (usuario, identidade, tentativas, janela_inicio_ms)
                 VALUES ($1, $2, 1, $3)
                 ON CONFLICT (usuario, identidade) DO UPDATE SET
                   tentativas = CASE WHEN login_tentativas.janela_inicio_ms <= $4 THEN 1
                                     ELSE login_tentativas.tentativas + 1 END,
                   janela_inicio_ms = CASE WHEN login_tentativas.janela_inicio_ms <= $4 THEN $3
                                           ELSE login_tentativas.janela_inicio_ms END
                 RETURNING tentativas",
            )
            .bind(usuario.as_str())
            .bind(identidade)
            .bind(now_ms)
            .bind(window_start_ms)
            .persistent(self.named_statements())
            .fetch_one(conn)
        })?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Gives back one attempt on `(usuario, identidade)` (never below zero).
    pub async fn refund_login_attempt(
        &self,
        usuario: &Usuario,
        identidade: &str,
    ) -> Result<(), Error> {
        on_conn!(self, "refund_login_attempt", |conn| {
            sqlx::query(
                "UPDATE login_tentativas
                 SET tentativas = CASE WHEN tentativas > 0 THEN tentativas - 1 ELSE 0 END
                 WHERE usuario = $1 AND identidade = $2",
            )
            .bind(usuario.as_str())
            .bind(identidade)
            .persistent(self.named_statements())
            .execute(conn)
            .map(|r| r.map(|_| ()))
        })
    }

    /// Forgets the attempts on `(usuario, identidade)`.
    pub async fn clear_login_attempts(
        &self,
        usuario: &Usuario,
        identidade: &str,
    ) -> Result<(), Error> {
        on_conn!(self, "clear_login_attempts", |conn| {
            sqlx::query("DELETE FROM login_tentativas WHERE usuario = $1 AND identidade = $2")
                .bind(usuario.as_str())
                .bind(identidade)
                .persistent(self.named_statements())
                .execute(conn)
                .map(|r| r.map(|_| ()))
        })
    }

    /// Deletes up to `limit` rows whose window has passed; returns how many it deleted.
    pub async fn purge_login_attempts(
        &self,
        window_start_ms: i64,
        limit: i64,
    ) -> Result<u64, Error> {
        on_conn!(self, "purge_login_attempts", |conn| {
            sqlx::query(
                "DELETE FROM login_tentativas WHERE (usuario, identidade) IN (
                   SELECT usuario, identidade FROM login_tentativas
                   WHERE janela_inicio_ms <= $1 LIMIT $2)",
            )
            .bind(window_start_ms)
            .bind(limit)
            .persistent(self.named_statements())
            .execute(conn)
            .map(|r| r.map(|r| r.rows_affected()))
        })
    }
}
