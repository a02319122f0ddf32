//! The SQL of the audit trail, on either backend through the engine's one query path.

use crate::{
    Error,
    db::{Access, Db, Query, query::per_backend},
    pb,
};

/// The statements of this file, by name and shape (`db::Query`).
const AUDIT_INSERT: Query = Query::insert("audit_insert", "auditoria");
const AUDIT_PAGE: Query = Query::select("audit_page", "auditoria");
const AUDIT_PURGE: Query = Query::delete("audit_purge", "auditoria");

/// One entry as recorded. Holds names, levels, counts and reasons only: never a secret.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub acao: super::Acao,
    /// `ok`, or the reason of the refusal or failure.
    pub resultado: &'a str,
    pub ator: &'a str,
    pub chamador: Option<&'a str>,
    pub usuario_final: Option<&'a str>,
    pub alvo: Option<&'a str>,
    pub detalhe: Option<&'a str>,
}

pub(super) async fn insert(db: &Db, em_ms: i64, e: &Entry<'_>) -> Result<(), Error> {
    let insert = per_backend!(|conn| {
        sqlx::query(
            "INSERT INTO auditoria
               (em_ms, acao, resultado, ator, chamador, usuario_final, alvo, detalhe)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(em_ms)
        .bind(e.acao.as_str())
        .bind(e.resultado)
        .bind(e.ator)
        .bind(e.chamador)
        .bind(e.usuario_final)
        .bind(e.alvo)
        .bind(e.detalhe)
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|_| ())
    });
    db.run(Access::Primary, AUDIT_INSERT, insert).await
}

/// Which entries a page holds: before `before_id` (the previous page's last), of the target
/// and actor when given, within the times.
pub(super) struct Filter<'a> {
    pub before_id: i64,
    pub alvo: Option<&'a str>,
    pub ator: Option<&'a str>,
    pub desde_ms: i64,
    pub ate_ms: i64,
}

type EntryRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Up to `limit` entries, newest first. A read on the primary: an admin reading the trail
/// right after a change sees it.
pub(super) async fn page(
    db: &Db,
    f: &Filter<'_>,
    limit: i64,
) -> Result<Vec<pb::EventoAuditoria>, Error> {
    let select = per_backend!(|conn| {
        sqlx::query_as(
            "SELECT id, em_ms, acao, resultado, ator, chamador, usuario_final, alvo, detalhe
             FROM auditoria
             WHERE id < $1 AND ($2 IS NULL OR alvo = $2) AND ($3 IS NULL OR ator = $3)
               AND em_ms >= $4 AND em_ms < $5
             ORDER BY id DESC LIMIT $6",
        )
        .bind(f.before_id)
        .bind(f.alvo)
        .bind(f.ator)
        .bind(f.desde_ms)
        .bind(f.ate_ms)
        .bind(limit)
        .persistent(db.named_statements())
        .fetch_all(conn)
        .await
    });
    let rows: Vec<EntryRow> = db.run(Access::Primary, AUDIT_PAGE, select).await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, em_ms, acao, resultado, ator, chamador, usuario_final, alvo, detalhe)| {
                pb::EventoAuditoria {
                    id,
                    em_unix_ms: em_ms,
                    acao,
                    resultado,
                    ator,
                    chamador: chamador.unwrap_or_default(),
                    usuario_final: usuario_final.unwrap_or_default(),
                    alvo: alvo.unwrap_or_default(),
                    detalhe: detalhe.unwrap_or_default(),
                }
            },
        )
        .collect())
}

/// Deletes up to `limit` entries older than `cutoff_ms`; how many.
pub(super) async fn purge(db: &Db, cutoff_ms: i64, limit: i64) -> Result<u64, Error> {
    let purge = per_backend!(|conn| {
        sqlx::query(
            "DELETE FROM auditoria WHERE id IN (
               SELECT id FROM auditoria WHERE em_ms < $1 LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .persistent(db.named_statements())
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    });
    db.run(Access::Primary, AUDIT_PURGE, purge).await
}
