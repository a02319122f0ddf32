//! The audit trail: every change to users (created, level changed, password set or changed,
//! removed, sessions ended) and every refused admin attempt, with who acted, through which
//! caller and end user, on whom, when and the result. Never a password, hash or token: an
//! entry holds names, a level, a count and reasons only. Read newest first a page at a time
//! (ListarAuditoria); entries past the retention are purged in bounded batches.

mod store;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, db::Db, error::Rule, pb};

pub use store::Entry;

/// What was done or tried: the `acao` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acao {
    UsuarioCriado,
    NivelAlterado,
    /// By an admin (or the admin token).
    SenhaDefinida,
    /// By its own user, with the current password.
    SenhaAlterada,
    UsuarioRemovido,
    SessoesEncerradas,
    /// An admin RPC refused: no or a wrong admin token, no session, not an admin.
    AdminRecusado,
}

impl Acao {
    pub const fn as_str(self) -> &'static str {
        match self {
            Acao::UsuarioCriado => "usuario_criado",
            Acao::NivelAlterado => "nivel_alterado",
            Acao::SenhaDefinida => "senha_definida",
            Acao::SenhaAlterada => "senha_alterada",
            Acao::UsuarioRemovido => "usuario_removido",
            Acao::SessoesEncerradas => "sessoes_encerradas",
            Acao::AdminRecusado => "admin_recusado",
        }
    }
}

/// The actor of an entry made with the admin token.
pub const ACTOR_ADMIN_TOKEN: &str = "token-admin";
/// The actor of a refused attempt that named no one.
pub const ACTOR_ANONYMOUS: &str = "anonimo";

/// The actor of an entry made by user `usuario` (through a session or its own password).
pub fn actor_user(usuario: &str) -> String {
    format!("usuario:{usuario}")
}

/// The audit trail's handle.
#[derive(Clone, Debug)]
pub struct Audit {
    db: Db,
}

/// Entries per page when the request leaves it at 0, and the most per page.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;
/// Rows deleted per purge statement.
const PURGE_BATCH: i64 = 1000;

impl Audit {
    pub fn new(db: Db) -> Self {
        Audit { db }
    }

    /// Records one entry. The change it describes has happened already: a failure to record
    /// is logged as an error (with the entry, which holds no secret), not returned.
    pub async fn record(&self, entry: Entry<'_>) {
        let at = now_ms();
        if let Err(e) = store::insert(&self.db, at, &entry).await {
            tracing::error!(error = %e, ?entry, "could not record an audit entry");
        }
    }

    /// ListarAuditoria: a page of entries, newest first, as the request filters them.
    pub async fn page(
        &self,
        req: pb::ListarAuditoriaRequest,
    ) -> Result<pb::ListarAuditoriaResponse, Error> {
        let size = match usize::try_from(req.page_size) {
            Ok(0) => PAGE_DEFAULT,
            Ok(n) => n.min(PAGE_MAX),
            Err(_) => {
                return Err(Error::InvalidArgument {
                    field: "page_size",
                    rule: Rule::Negative,
                    message: format!("page_size: must be 0 or greater (got {})", req.page_size),
                });
            }
        };
        let before_id = if req.page_token.is_empty() {
            i64::MAX
        } else {
            req.page_token
                .strip_prefix("a1.")
                .and_then(|id| id.parse::<i64>().ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| Error::InvalidArgument {
                    field: "page_token",
                    rule: Rule::InvalidToken,
                    message: "page_token: not a token this server handed out; send the \
                              next_page_token of the previous page"
                        .into(),
                })?
        };
        let filter = store::Filter {
            before_id,
            alvo: non_empty(&req.usuario),
            ator: non_empty(&req.ator),
            desde_ms: req.desde_unix_ms,
            ate_ms: if req.ate_unix_ms > 0 {
                req.ate_unix_ms
            } else {
                i64::MAX
            },
        };
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = store::page(&self.db, &filter, limit).await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|r| format!("a1.{}", r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListarAuditoriaResponse {
            eventos: rows,
            next_page_token,
        })
    }

    /// Deletes the entries older than `retention`, in batches; how many.
    pub async fn purge(&self, retention: Duration) -> Result<u64, Error> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let mut total = 0;
        loop {
            let deleted = store::purge(&self.db, cutoff, PURGE_BATCH).await?;
            total += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
