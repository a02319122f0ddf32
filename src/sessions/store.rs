//! The SQL of sessions, on either backend through the engine's one query path
//! ([`Db::run`]): open (replacing the end user's previous one, bounding the user's count),
//! find by token or by end user with the user's current level, record a use, end, list,
//! purge.

use crate::{
    Error,
    db::{Access, Db, Query, query::per_backend},
};

/// The statements of this file, by name and shape (`db::Query`).
const OPEN_SESSION: Query = Query::insert("open_session", "sessoes");
const FIND_SESSION: Query = Query::select("find_session", "sessoes");
const FIND_SESSION_BY_END_USER: Query = Query::select("find_session_by_end_user", "sessoes");
const TOUCH_SESSION: Query = Query::update("touch_session", "sessoes");
const END_SESSION: Query = Query::delete("end_session", "sessoes");
const END_SESSIONS: Query = Query::delete("end_sessions", "sessoes");
const LIST_SESSIONS: Query = Query::select("list_sessions", "sessoes");
const SESSION_USER_ID: Query = Query::select("session_user_id", "usuarios");
const PURGE_SESSIONS: Query = Query::delete("purge_sessions", "sessoes");
const COUNT_SESSIONS: Query = Query::select("count_sessions", "sessoes");

/// A session as read, with its user's row as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub usuario_id: i64,
    pub usuario: String,
    pub nivel: i32,
    pub chamador: Option<String>,
    pub usuario_final: Option<String>,
    pub criada_ms: i64,
    pub expira_ms: i64,
    pub usada_ms: i64,
}

type RowTuple = (
    i64,
    i64,
    String,
    i32,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

fn row(
    (id, usuario_id, usuario, nivel, chamador, usuario_final, criada_ms, expira_ms, usada_ms): RowTuple,
) -> Row {
    Row {
        id,
        usuario_id,
        usuario,
        nivel,
        chamador,
        usuario_final,
        criada_ms,
        expira_ms,
        usada_ms,
    }
}

/// The columns of a [`Row`], then its `FROM`: the start of each session lookup (written out
/// whole in each, so that every statement is a constant prepared once per connection).
macro_rules! select_rows {
    ($where:literal) => {
        concat!(
            "SELECT s.id, s.usuario_id, u.usuario, u.nivel, s.chamador, s.usuario_final,
                    s.criada_ms, s.expira_ms, s.usada_ms
             FROM sessoes s JOIN usuarios u ON u.id = s.usuario_id ",
            $where
        )
    };
}
const FIND_BY_TOKEN: &str = select_rows!("WHERE s.token_hash = $1");
const FIND_BY_END_USER: &str = select_rows!("WHERE s.chamador = $1 AND s.usuario_final = $2");
const LIST: &str = select_rows!(
    "WHERE u.usuario = $1 AND s.expira_ms > $2 AND s.usada_ms > $3 ORDER BY s.id DESC LIMIT $4"
);

/// How a call names its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The SHA-256 (hex) of the token it sent.
    TokenHash(String),
    /// The end user an authenticated caller opened it for.
    EndUser {
        chamador: String,
        usuario_final: String,
    },
}

/// What a new session is.
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub usuario_id: i64,
    pub bound: Option<(&'a str, &'a str)>,
    pub now_ms: i64,
    pub expira_ms: i64,
    /// Sessions unused since this are idle: deleted with the new one's opening.
    pub idle_before_ms: i64,
    pub max_per_user: i64,
}

/// Opens a session: inserts it (replacing the one its end user had, for the same caller),
/// then deletes the user's expired, idle and excess sessions, oldest first, in one
/// transaction. Returns its id.
pub async fn open(db: &Db, new: &NewSession<'_>) -> Result<i64, Error> {
    let (chamador, usuario_final) = new.bound.unzip();
    let open = per_backend!(|conn| {
        let mut tx = sqlx::Connection::begin(conn).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sessoes
               (token_hash, usuario_id, chamador, usuario_final, criada_ms, expira_ms, usada_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $5)
             ON CONFLICT (chamador, usuario_final) DO UPDATE SET
               token_hash = excluded.token_hash, usuario_id = excluded.usuario_id,
               criada_ms = excluded.criada_ms, expira_ms = excluded.expira_ms,
               usada_ms = excluded.usada_ms
             RETURNING id",
        )
        .bind(new.token_hash)
        .bind(new.usuario_id)
        .bind(chamador)
        .bind(usuario_final)
        .bind(new.now_ms)
        .bind(new.expira_ms)
        .persistent(db.named_statements())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM sessoes WHERE usuario_id = $1 AND (
               expira_ms <= $2 OR usada_ms <= $3 OR id NOT IN (
                 SELECT id FROM sessoes WHERE usuario_id = $1 ORDER BY id DESC LIMIT $4))",
        )
        .bind(new.usuario_id)
        .bind(new.now_ms)
        .bind(new.idle_before_ms)
        .bind(new.max_per_user)
        .persistent(db.named_statements())
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map(|()| id)
    });
    db.run(Access::Primary, OPEN_SESSION, open).await
}

/// The session `key` names, with its user's current name and level. On the primary: a
/// session opened a moment ago, or a level changed a moment ago, must be seen at once.
pub async fn find(db: &Db, key: &Key) -> Result<Option<Row>, Error> {
    let found = match key {
        Key::TokenHash(hash) => {
            let select = per_backend!(|conn| {
                sqlx::query_as(FIND_BY_TOKEN)
                    .bind(hash.as_str())
                    .persistent(db.named_statements())
                    .fetch_optional(conn)
                    .await
            });
            db.run(Access::Primary, FIND_SESSION, select).await?
        }
        Key::EndUser {
            chamador,
            usuario_final,
        } => {
            let select = per_backend!(|conn| {
                sqlx::query_as(FIND_BY_END_USER)
                    .bind(chamador.as_str())
                    .bind(usuario_final.as_str())
                    .persistent(db.named_statements())
                    .fetch_optional(conn)
                    .await
            });
            db.run(Access::Primary, FIND_SESSION_BY_END_USER, select)
                .await?
        }
    };
    Ok(found.map(row))
}

/// Records a use of session `id` at `now_ms`.
pub async fn touch(db: &Db, id: i64, now_ms: i64) -> Result<(), Error> {
    let touch = per_backend!(|conn| {
        sqlx::query("UPDATE sessoes SET usada_ms = $2 WHERE id = $1 AND usada_ms < $2")
            .bind(id)
            .bind(now_ms)
            .persistent(db.named_statements())
            .execute(conn)
            .await
            .map(|_| ())
    });
    db.run(Access::Primary, TOUCH_SESSION, touch).await
}

/// Ends session `id`; whether it was there.
pub async fn end(db: &Db, id: i64) -> Result<bool, Error> {
    let end = per_backend!(|conn| {
        sqlx::query("DELETE FROM sessoes WHERE id = $1")
            .bind(id)
            .persistent(db.named_statements())
            .execute(conn)
            .await
            .map(|r| r.rows_affected() > 0)
    });
    db.run(Access::Primary, END_SESSION, end).await
}

/// Ends every session of user `usuario_id` but `keep`; how many ended.
pub async fn end_all(db: &Db, usuario_id: i64, keep: Option<i64>) -> Result<u64, Error> {
    let end = per_backend!(|conn| {
        sqlx::query("DELETE FROM sessoes WHERE usuario_id = $1 AND ($2 IS NULL OR id <> $2)")
            .bind(usuario_id)
            .bind(keep)
            .persistent(db.named_statements())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    });
    db.run(Access::Primary, END_SESSIONS, end).await
}

/// The sessions of the user named `usuario` still open at `now_ms` (unused since
/// `idle_before_ms` counts as ended), newest first, at most `limit`.
pub async fn list(
    db: &Db,
    usuario: &str,
    (now_ms, idle_before_ms): (i64, i64),
    limit: i64,
) -> Result<Vec<Row>, Error> {
    let select = per_backend!(|conn| {
        sqlx::query_as(LIST)
            .bind(usuario)
            .bind(now_ms)
            .bind(idle_before_ms)
            .bind(limit)
            .persistent(db.named_statements())
            .fetch_all(conn)
            .await
    });
    let rows: Vec<RowTuple> = db.run(Access::Primary, LIST_SESSIONS, select).await?;
    Ok(rows.into_iter().map(row).collect())
}

/// The id of the user named `usuario`, if there is one (on the primary).
pub async fn user_id(db: &Db, usuario: &str) -> Result<Option<i64>, Error> {
    let select = per_backend!(|conn| {
        sqlx::query_scalar("SELECT id FROM usuarios WHERE usuario = $1")
            .bind(usuario)
            .persistent(db.named_statements())
            .fetch_optional(conn)
            .await
    });
    db.run(Access::Primary, SESSION_USER_ID, select).await
}

/// Deletes up to `limit` sessions expired at `now_ms` or unused since `idle_before_ms`;
/// how many.
pub async fn purge(
    db: &Db,
    (now_ms, idle_before_ms): (i64, i64),
    limit: i64,
) -> Result<u64, Error> {
    let purge = per_backend!(|conn| {
        sqlx::query(
            "DELETE FROM sessoes WHERE id IN (
               SELECT id FROM sessoes WHERE expira_ms <= $1 OR usada_ms <= $2 LIMIT $3)",
        )
        .bind(now_ms)
        .bind(idle_before_ms)
        .bind(limit)
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    });
    db.run(Access::Primary, PURGE_SESSIONS, purge).await
}

/// How many sessions are stored (the bench's bound check and tests).
pub async fn count(db: &Db) -> Result<i64, Error> {
    let count = per_backend!(|conn| {
        sqlx::query_scalar("SELECT COUNT(*) FROM sessoes")
            .persistent(db.named_statements())
            .fetch_one(conn)
            .await
    });
    db.run(Access::Primary, COUNT_SESSIONS, count).await
}
