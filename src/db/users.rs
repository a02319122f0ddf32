//! The queries on `usuarios` and `login_tentativas`. Each is written once and runs on
//! either backend through [`Db::run`]: the SQL is plain enough for both (`$n` placeholders,
//! `RETURNING`), and `per_backend!` compiles it for the backend's own connection type.

use super::{Access, Db, query::per_backend};
use crate::{
    Error,
    domain::{Nivel, UserPage, Usuario},
};

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
    /// The stored hash and level of a user, if the user exists.
    pub async fn credentials(&self, usuario: &Usuario) -> Result<Option<Credentials>, Error> {
        let row: Option<(i64, String, i32)> = self
            .read_confirmed(|server| {
                let select = per_backend!(|conn| {
                    sqlx::query_as("SELECT id, senha_hash, nivel FROM usuarios WHERE usuario = $1")
                        .bind(usuario.as_str())
                        .persistent(self.named_statements())
                        .fetch_optional(conn)
                        .await
                });
                self.run_on(server, Access::Read, "credentials", select)
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
            let select = per_backend!(|conn| {
                sqlx::query_scalar("SELECT nivel FROM usuarios WHERE usuario = $1")
                    .bind(usuario.as_str())
                    .persistent(self.named_statements())
                    .fetch_optional(conn)
                    .await
            });
            self.run_on(server, Access::Read, "nivel", select).await
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
        let insert = per_backend!(|conn| {
            sqlx::query_scalar(
                "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(usuario.as_str())
            .bind(senha_hash)
            .bind(nivel.get())
            .persistent(self.named_statements())
            .fetch_one(conn)
            .await
        });
        match self.run(Access::Primary, "insert_user", insert).await {
            Err(Error::Database(sqlx::Error::Database(e))) if is_usuario_taken(&*e) => Err(
                Error::AlreadyExists(format!("usuario '{usuario}' already exists")),
            ),
            other => other,
        }
    }

    /// Replaces a user's stored hash (after a login with outdated parameters).
    pub async fn update_hash(&self, id: i64, senha_hash: &str) -> Result<(), Error> {
        let update = per_backend!(|conn| {
            sqlx::query("UPDATE usuarios SET senha_hash = $1 WHERE id = $2")
                .bind(senha_hash)
                .bind(id)
                .persistent(self.named_statements())
                .execute(conn)
                .await
                // The two backends' results differ in type; only success matters here.
                .map(|_| ())
        });
        self.run(Access::Primary, "update_hash", update).await
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
        let claim = per_backend!(|conn| {
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
            .await
        });
        let n: i32 = self
            .run(Access::Primary, "claim_login_attempt", claim)
            .await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Gives back one attempt on `(usuario, identidade)` (never below zero).
    pub async fn refund_login_attempt(
        &self,
        usuario: &Usuario,
        identidade: &str,
    ) -> Result<(), Error> {
        let refund = per_backend!(|conn| {
            sqlx::query(
                "UPDATE login_tentativas
                 SET tentativas = CASE WHEN tentativas > 0 THEN tentativas - 1 ELSE 0 END
                 WHERE usuario = $1 AND identidade = $2",
            )
            .bind(usuario.as_str())
            .bind(identidade)
            .persistent(self.named_statements())
            .execute(conn)
            .await
            .map(|_| ())
        });
        self.run(Access::Primary, "refund_login_attempt", refund)
            .await
    }

    /// Forgets the attempts on `(usuario, identidade)`.
    pub async fn clear_login_attempts(
        &self,
        usuario: &Usuario,
        identidade: &str,
    ) -> Result<(), Error> {
        let clear = per_backend!(|conn| {
            sqlx::query("DELETE FROM login_tentativas WHERE usuario = $1 AND identidade = $2")
                .bind(usuario.as_str())
                .bind(identidade)
                .persistent(self.named_statements())
                .execute(conn)
                .await
                .map(|_| ())
        });
        self.run(Access::Primary, "clear_login_attempts", clear)
            .await
    }

    /// Deletes up to `limit` rows whose window has passed; returns how many it deleted.
    pub async fn purge_login_attempts(
        &self,
        window_start_ms: i64,
        limit: i64,
    ) -> Result<u64, Error> {
        let purge = per_backend!(|conn| {
            sqlx::query(
                "DELETE FROM login_tentativas WHERE (usuario, identidade) IN (
                   SELECT usuario, identidade FROM login_tentativas
                   WHERE janela_inicio_ms <= $1 LIMIT $2)",
            )
            .bind(window_start_ms)
            .bind(limit)
            .persistent(self.named_statements())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
        });
        self.run(Access::Primary, "purge_login_attempts", purge)
            .await
    }
}

/// A user as [`Db::list_users`] gives it: never the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub usuario: String,
    pub nivel: i32,
}

/// The listing on each backend: the same query, each in its database's code point collation
/// (PostgreSQL's `"C"`, SQLite's `BINARY`), whatever collation the database was created
/// with, so that a page token means the same on every server. The PostgreSQL one runs on the `usuarios_usuario_c` index (migrations/postgres), so a page
/// costs its rows, not the table.
const LIST_USERS_PG: &str = r#"SELECT id, usuario, nivel FROM usuarios
     WHERE usuario COLLATE "C" > $1 AND usuario COLLATE "C" >= $2 AND usuario COLLATE "C" < $3
     ORDER BY usuario COLLATE "C" LIMIT $4"#;
const LIST_USERS_SQLITE: &str = "SELECT id, usuario, nivel FROM usuarios
     WHERE usuario > $1 AND usuario >= $2 AND usuario < $3
     ORDER BY usuario LIMIT $4";

/// The administration of users: AlterarSenha, AlterarNivel, RemoverUsuario, ListarUsuarios.
/// Each change answers whether the user existed (`false`: NOT_FOUND for the caller).
impl Db {
    /// Replaces the hash of the user named `usuario`; with `id`, only while the name still
    /// belongs to that user (a password change checked against one user must not land on a
    /// user re-created under the same name in between).
    pub async fn set_password(
        &self,
        usuario: &Usuario,
        id: Option<i64>,
        senha_hash: &str,
    ) -> Result<bool, Error> {
        let update = per_backend!(|conn| {
            sqlx::query(
                "UPDATE usuarios SET senha_hash = $1 WHERE usuario = $2 AND ($3 IS NULL OR id = $3)",
            )
            .bind(senha_hash)
            .bind(usuario.as_str())
            .bind(id)
            .persistent(self.named_statements())
            .execute(conn)
            .await
            .map(|r| r.rows_affected() > 0)
        });
        self.run(Access::Primary, "set_password", update).await
    }

    /// Sets a user's level.
    pub async fn set_nivel(&self, usuario: &Usuario, nivel: Nivel) -> Result<bool, Error> {
        let update = per_backend!(|conn| {
            sqlx::query("UPDATE usuarios SET nivel = $1 WHERE usuario = $2")
                .bind(nivel.get())
                .bind(usuario.as_str())
                .persistent(self.named_statements())
                .execute(conn)
                .await
                .map(|r| r.rows_affected() > 0)
        });
        self.run(Access::Primary, "set_nivel", update).await
    }

    /// Removes a user and, in the same transaction, every login-attempt row of its name, so
    /// that a user created later under the name starts with no counts, as an unknown name
    /// does.
    pub async fn remove_user(&self, usuario: &Usuario) -> Result<bool, Error> {
        let remove = per_backend!(|conn| {
            // A savepoint when `Db::run` already opened a transaction (PgBouncer).
            let mut tx = sqlx::Connection::begin(conn).await?;
            let removed = sqlx::query("DELETE FROM usuarios WHERE usuario = $1")
                .bind(usuario.as_str())
                .persistent(self.named_statements())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            sqlx::query("DELETE FROM login_tentativas WHERE usuario = $1")
                .bind(usuario.as_str())
                .persistent(self.named_statements())
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map(|()| removed)
        });
        self.run(Access::Primary, "remove_user", remove).await
    }

    /// Up to `limit` users of `page` (its prefix, after its last name), in code point order
    /// of `usuario`. A read: a replica may answer, a little behind the primary.
    pub async fn list_users(&self, page: &UserPage, limit: i64) -> Result<Vec<UserSummary>, Error> {
        let until = page.until();
        let until = until.as_str();
        let sql = match self.backend() {
            super::Backend::Postgres(_) => LIST_USERS_PG,
            super::Backend::Sqlite(_) => LIST_USERS_SQLITE,
        };
        let select = per_backend!(|conn| {
            sqlx::query_as(sql)
                .bind(page.after.as_str())
                .bind(page.prefixo.as_str())
                .bind(until)
                .bind(limit)
                .persistent(self.named_statements())
                .fetch_all(conn)
                .await
        });
        let rows: Vec<(i64, String, i32)> = self.run(Access::Read, "list_users", select).await?;
        Ok(rows
            .into_iter()
            .map(|(id, usuario, nivel)| UserSummary { id, usuario, nivel })
            .collect())
    }
}
