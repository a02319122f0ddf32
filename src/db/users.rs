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
                let outcome = {
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
                .execute(conn)
                // The two backends' results differ in type; only success matters here.
                .map(|r| r.map(|_| ()))
        })?;
        Ok(())
    }
}

/// Failed-login bookkeeping for brute-force throttling. Times are Unix milliseconds from
/// the service's clock, passed in so that the SQL is the same on both backends.
impl Db {
    /// The failures recorded for `usuario` in the window that began after
    /// `window_start_ms`: `None` when nothing is recorded at all.
    pub async fn login_failures(
        &self,
        usuario: &Usuario,
        window_start_ms: i64,
    ) -> Result<Option<u32>, Error> {
        // On the primary: the count must include the failures just recorded there.
        let primary = self.servers().route(Access::Primary);
        let row: Option<(i32, i64)> = on_conn!(read: self, primary, "login_failures", |conn| {
            sqlx::query_as("SELECT falhas, janela_inicio_ms FROM login_falhas WHERE usuario = $1")
                .bind(usuario.as_str())
                .fetch_optional(conn)
        })?;
        Ok(row.map(|(falhas, since)| {
            if since > window_start_ms {
                u32::try_from(falhas).unwrap_or(0)
            } else {
                0
            }
        }))
    }

    /// Counts one failed login, opening a new window when the last one has passed. One
    /// atomic upsert, so concurrent failures from several instances all count.
    pub async fn record_login_failure(
        &self,
        usuario: &Usuario,
        now_ms: i64,
        window_start_ms: i64,
    ) -> Result<(), Error> {
        on_conn!(self, "record_login_failure", |conn| {
            sqlx::query(
                "INSERT INTO login_falhas (usuario, falhas, janela_inicio_ms) VALUES ($1, 1, $2)
                 ON CONFLICT (usuario) DO UPDATE SET
                   falhas = CASE WHEN login_falhas.janela_inicio_ms <= $3 THEN 1
                                 ELSE login_falhas.falhas + 1 END,
                   janela_inicio_ms = CASE WHEN login_falhas.janela_inicio_ms <= $3 THEN $2
                                           ELSE login_falhas.janela_inicio_ms END",
            )
            .bind(usuario.as_str())
            .bind(now_ms)
            .bind(window_start_ms)
            .execute(conn)
            .map(|r| r.map(|_| ()))
        })
    }

    /// Forgets a user's failures after a successful login.
    pub async fn clear_login_failures(&self, usuario: &Usuario) -> Result<(), Error> {
        on_conn!(self, "clear_login_failures", |conn| {
            sqlx::query("DELETE FROM login_falhas WHERE usuario = $1")
                .bind(usuario.as_str())
                .execute(conn)
                .map(|r| r.map(|_| ()))
        })
    }
}
