//! The queries on `usuarios`. Each is written once and runs on either backend through
//! [`Db::run`]: the SQL is plain enough for both (`$n` placeholders, `RETURNING`), and
//! `per_backend!` compiles it for the backend's own connection type.

use super::{
    Users,
    legacy_counts::{legacy_count_sql, legacy_format_of},
};
use crate::{
    Error,
    db::{Access, Backend, Query, query::per_backend},
    domain::{Nivel, UserPage, Usuario},
};

/// The statements of this file, by name and shape (`db::Query`).
const CREDENTIALS: Query = Query::select("credentials", "usuarios");
const INSERT_USER: Query = Query::insert("insert_user", "usuarios");
const UPDATE_HASH: Query = Query::update("update_hash", "usuarios");
const INSERT_IMPORTED_USER: Query = Query::insert("insert_imported_user", "usuarios");
const EXISTING_USUARIOS: Query = Query::select("existing_usuarios", "usuarios");
const INSERT_IMPORTED_USERS: Query = Query::insert("insert_imported_users", "usuarios");
const LEGACY_HASH_COUNTS: Query = Query::select("legacy_hash_counts", "usuarios");
const SET_PASSWORD: Query = Query::update("set_password", "usuarios");
const SET_NIVEL: Query = Query::update("set_nivel", "usuarios");
const REMOVE_USER: Query = Query::delete("remove_user", "usuarios");
const LIST_USERS: Query = Query::select("list_users", "usuarios");

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

impl Users {
    /// The stored hash and level of a user, if the user exists, for a login: one query
    /// whether the user exists or not, so that an unknown username costs what a wrong
    /// password costs. It runs on the primary while the probe finds it reachable (the login
    /// writes its attempt there anyway, and a miss there needs no confirming: the replica
    /// path confirmed a replica's miss on the primary, one query more for unknown users
    /// only, a timing oracle), else on a replica.
    pub async fn credentials(&self, usuario: &Usuario) -> Result<Option<Credentials>, Error> {
        let servers = self.db.servers();
        let primary = servers.primary_index();
        let server = if servers.primary().reachable() {
            primary
        } else {
            servers.route(Access::Read)
        };
        let lookup = |server| {
            let select = per_backend!(|conn| {
                sqlx::query_as("SELECT id, senha_hash, nivel FROM usuarios WHERE usuario = $1")
                    .bind(usuario.as_str())
                    .persistent(self.db.named_statements())
                    .fetch_optional(conn)
                    .await
            });
            self.db.run_on(server, Access::Read, CREDENTIALS, select)
        };
        let row: Option<(i64, String, i32)> = match lookup(server).await {
            // The primary died since the last probe: a replica answers instead (a read on a
            // replica that fails is retried on the primary by `run_on` itself).
            Err(Error::Unavailable(_) | Error::DatabaseDown(_))
                if server == primary && servers.has_replicas() =>
            {
                let replica = (0..servers.all().len())
                    .find(|&i| i != primary && servers.readable(i))
                    .ok_or_else(|| Error::Unavailable("no server can read credentials".into()))?;
                lookup(replica).await?
            }
            other => other?,
        };
        Ok(row.map(|(id, senha_hash, nivel)| Credentials {
            id,
            senha_hash,
            nivel,
        }))
    }

    /// A user's level, if the user exists: batched with concurrent lookups when the batcher
    /// is on (see [`super::levels`]), one query of its own otherwise; a replica's miss is
    /// confirmed on the primary.
    pub async fn nivel(&self, usuario: &Usuario) -> Result<Option<i32>, Error> {
        self.db
            .read_confirmed(|server| self.levels.nivel(&self.db, server, usuario))
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
            .persistent(self.db.named_statements())
            .fetch_one(conn)
            .await
        });
        match self.db.run(Access::Primary, INSERT_USER, insert).await {
            Err(Error::Database(sqlx::Error::Database(e))) if is_usuario_taken(&*e) => Err(
                Error::AlreadyExists(format!("usuario '{usuario}' already exists")),
            ),
            other => other,
        }
    }

    /// Replaces a user's stored hash after a login with an outdated or legacy one, only if
    /// the row still holds `previous` (a password changed meanwhile is not overwritten).
    /// Returns whether the row changed; when it did and `previous` was a legacy hash, the
    /// legacy-hash gauge drops at once (the periodic count confirms it).
    pub async fn update_hash(
        &self,
        id: i64,
        previous: &str,
        senha_hash: &str,
    ) -> Result<bool, Error> {
        let update = per_backend!(|conn| {
            sqlx::query("UPDATE usuarios SET senha_hash = $1 WHERE id = $2 AND senha_hash = $3")
                .bind(senha_hash)
                .bind(id)
                .bind(previous)
                .persistent(self.db.named_statements())
                .execute(conn)
                .await
                // The two backends' results differ in type; only the row count matters here.
                .map(|r| r.rows_affected() > 0)
        });
        let changed = self.db.run(Access::Primary, UPDATE_HASH, update).await?;
        if changed && let Some(format) = legacy_format_of(previous) {
            self.legacy.forget_one(format);
        }
        Ok(changed)
    }

    /// Creates an imported user unless the name is taken: `Some(id)` when created, `None`
    /// when a user of that name was already there (left as it is).
    pub async fn insert_imported_user(
        &self,
        usuario: &Usuario,
        senha_hash: &str,
        nivel: Nivel,
    ) -> Result<Option<i64>, Error> {
        let insert = per_backend!(|conn| {
            sqlx::query_scalar(
                "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ($1, $2, $3)
                 ON CONFLICT (usuario) DO NOTHING RETURNING id",
            )
            .bind(usuario.as_str())
            .bind(senha_hash)
            .bind(nivel.get())
            .persistent(self.db.named_statements())
            .fetch_optional(conn)
            .await
        });
        self.db
            .run(Access::Primary, INSERT_IMPORTED_USER, insert)
            .await
    }

    /// Which of `names` are users already, read on the primary (an import checks before it
    /// hashes a plaintext password, and reads its own writes): a batch of rows at a time.
    pub async fn existing_usuarios(
        &self,
        names: &[&str],
    ) -> Result<std::collections::HashSet<String>, Error> {
        let names: Vec<&str> = names.to_vec();
        let json = serde_json::to_string(&names).map_err(|e| Error::Internal(e.to_string()))?;
        let named = self.db.named_statements();
        let select = crate::db::query::statement(|conn| {
            let (names, json) = (names.clone(), json.clone());
            Box::pin(async move {
                let found: Vec<String> = match conn {
                    crate::db::Conn::Postgres(c, _) => {
                        sqlx::query_scalar("SELECT usuario FROM usuarios WHERE usuario = ANY($1)")
                            .bind(names)
                            .persistent(named)
                            .fetch_all(c)
                            .await?
                    }
                    crate::db::Conn::Sqlite(c, _) => {
                        sqlx::query_scalar(
                            "SELECT usuario FROM usuarios \
                             WHERE usuario IN (SELECT value FROM json_each($1))",
                        )
                        .bind(json)
                        .fetch_all(c)
                        .await?
                    }
                };
                Ok(found.into_iter().collect())
            })
        });
        self.db
            .run(Access::Primary, EXISTING_USUARIOS, select)
            .await
    }

    /// Inserts imported users in one statement, each `(usuario, hash, nivel)`, leaving a
    /// name that is taken as it is; returns the names inserted. A row the database refuses
    /// (a constraint) fails them all: the caller then inserts them one by one.
    pub async fn insert_imported_users(
        &self,
        rows: &[(&Usuario, &str, Nivel)],
    ) -> Result<Vec<String>, Error> {
        let usuarios: Vec<&str> = rows.iter().map(|(u, _, _)| u.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|(_, h, _)| *h).collect();
        let niveis: Vec<i32> = rows.iter().map(|(_, _, n)| n.get()).collect();
        let json = serde_json::to_string(
            &rows
                .iter()
                .map(|(u, h, n)| (u.as_str(), *h, n.get()))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let named = self.db.named_statements();
        let insert = crate::db::query::statement(|conn| {
            let (usuarios, hashes, niveis, json) = (
                usuarios.clone(),
                hashes.clone(),
                niveis.clone(),
                json.clone(),
            );
            Box::pin(async move {
                match conn {
                    crate::db::Conn::Postgres(c, _) => {
                        sqlx::query_scalar(
                            "INSERT INTO usuarios (usuario, senha_hash, nivel) \
                             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[]) \
                             ON CONFLICT (usuario) DO NOTHING RETURNING usuario",
                        )
                        .bind(usuarios)
                        .bind(hashes)
                        .bind(niveis)
                        .persistent(named)
                        .fetch_all(c)
                        .await
                    }
                    // `WHERE true`: SQLite's upsert after a SELECT needs a WHERE to parse.
                    crate::db::Conn::Sqlite(c, _) => {
                        sqlx::query_scalar(
                            "INSERT INTO usuarios (usuario, senha_hash, nivel) \
                             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                                    json_extract(value, '$[2]') \
                             FROM json_each($1) WHERE true \
                             ON CONFLICT (usuario) DO NOTHING RETURNING usuario",
                        )
                        .bind(json)
                        .fetch_all(c)
                        .await
                    }
                }
            })
        });
        self.db
            .run(Access::Primary, INSERT_IMPORTED_USERS, insert)
            .await
    }

    /// Counts the users still on a legacy hash, by format, into the gauge `/metrics` shows.
    /// Cheap: the partial index `usuarios_senha_legada` holds only those rows, so the count
    /// costs nothing once every imported user has logged in.
    pub async fn refresh_legacy_hash_counts(&self) -> Result<(), Error> {
        let count = per_backend!(|conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(legacy_count_sql()))
                .persistent(self.db.named_statements())
                .fetch_all(conn)
                .await
        });
        let rows: Vec<(String, i64)> = self
            .db
            .run(Access::Primary, LEGACY_HASH_COUNTS, count)
            .await?;
        self.legacy.set(&rows);
        Ok(())
    }
}

/// A user as [`Users::list_users`] gives it: never the hash.
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
impl Users {
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
            .persistent(self.db.named_statements())
            .execute(conn)
            .await
            .map(|r| r.rows_affected() > 0)
        });
        self.db.run(Access::Primary, SET_PASSWORD, update).await
    }

    /// Sets a user's level.
    pub async fn set_nivel(&self, usuario: &Usuario, nivel: Nivel) -> Result<bool, Error> {
        let update = per_backend!(|conn| {
            sqlx::query("UPDATE usuarios SET nivel = $1 WHERE usuario = $2")
                .bind(nivel.get())
                .bind(usuario.as_str())
                .persistent(self.db.named_statements())
                .execute(conn)
                .await
                .map(|r| r.rows_affected() > 0)
        });
        self.db.run(Access::Primary, SET_NIVEL, update).await
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
                .persistent(self.db.named_statements())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            sqlx::query("DELETE FROM login_tentativas WHERE usuario = $1")
                .bind(usuario.as_str())
                .persistent(self.db.named_statements())
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map(|()| removed)
        });
        self.db.run(Access::Primary, REMOVE_USER, remove).await
    }

    /// Up to `limit` users of `page` (its prefix, after its last name), in code point order
    /// of `usuario`. A read: a replica may answer, a little behind the primary.
    pub async fn list_users(&self, page: &UserPage, limit: i64) -> Result<Vec<UserSummary>, Error> {
        let until = page.until();
        let until = until.as_str();
        let sql = match self.db.backend() {
            Backend::Postgres(_) => LIST_USERS_PG,
            Backend::Sqlite(_) => LIST_USERS_SQLITE,
        };
        let select = per_backend!(|conn| {
            sqlx::query_as(sql)
                .bind(page.after.as_str())
                .bind(page.prefixo.as_str())
                .bind(until)
                .bind(limit)
                .persistent(self.db.named_statements())
                .fetch_all(conn)
                .await
        });
        let rows: Vec<(i64, String, i32)> = self.db.run(Access::Read, LIST_USERS, select).await?;
        Ok(rows
            .into_iter()
            .map(|(id, usuario, nivel)| UserSummary { id, usuario, nivel })
            .collect())
    }
}
