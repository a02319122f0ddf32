//! `produto-server import-users`: copies the old bot's users from its PostgreSQL table into
//! produto's own (either backend, through the same [`Db`] the server uses), keeping their
//! passwords: a recognised hash is stored as it is (see [`crate::password::legacy`]) and
//! replaced by argon2id at the user's first login; plaintext only when asked, hashed here.
//!
//! Idempotent: a user whose name is already there is left alone. Each row is judged on its
//! own, so a bad row is reported and never stops the rest; no hash is ever printed. It says
//! where it reads and writes (never a password), and on a terminal how far it has got.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    io::{IsTerminal, Write},
    str::FromStr,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use crate::{
    Error,
    db::{Db, diagnose::postgres_target},
    domain::{Nivel, Senha, Usuario},
    password::{
        Hasher,
        legacy::{self, Format},
    },
    users::Users,
};

/// Bound on connecting to the source database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for the source's next row (the first one includes the query's planning
/// and, for a `--query` that sorts, its sort).
const ROW_TIMEOUT: Duration = Duration::from_secs(120);
/// Away from a terminal, a progress line is logged every this many rows.
const PROGRESS_EVERY: u64 = 10_000;
/// On a terminal, the progress line is redrawn this often.
const REDRAW_EVERY: Duration = Duration::from_millis(500);
/// Rows checked before they are written together: one query finds those already there and
/// one statement inserts the rest (a row at a time, the round trips were the import's cost).
const BATCH_ROWS: usize = 500;
/// What the report calls rows stored from plaintext.
const PLAINTEXT: &str = "plaintext, hashed with argon2id";

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// The source database's URL (it may hold a password: never printed).
    pub from: SecretString,
    pub source: Source,
    pub columns: Columns,
    /// Report what would be done; write nothing.
    pub dry_run: bool,
    /// A value of no known hash shape is a plaintext password (hashed with argon2id here);
    /// without it such a row is rejected.
    pub plaintext_passwords: bool,
}

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A table, `name` or `schema.name` (quoted as identifiers).
    Table(String),
    /// Any SELECT returning the three columns (run as given, inside a read-only transaction).
    Query(String),
}

/// The source's column names (identifiers, quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub usuario: String,
    pub senha: String,
    pub nivel: String,
}

impl Default for Columns {
    /// The old bot's: `usuario`, `senha`, `nivel`.
    fn default() -> Self {
        Columns {
            usuario: "usuario".into(),
            senha: "senha".into(),
            nivel: "nivel".into(),
        }
    }
}

/// What an import did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    /// Where the users went, in words (`PostgreSQL at host:port, database "produto"` or
    /// `SQLite file produto.db`; never a password). Empty: not said.
    pub target: String,
    /// Rows imported, by the stored format's label (or [`PLAINTEXT`]).
    pub imported: BTreeMap<&'static str, u64>,
    /// Rows whose user was already in the target (left as it is).
    pub already_there: u64,
    pub rejected: Vec<Rejected>,
}

/// A row not imported, and why (never its password or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based, in the order the source returned the rows.
    pub row: u64,
    /// The username, when the row had one.
    pub usuario: Option<String>,
    pub reason: String,
}

impl Report {
    pub fn imported_total(&self) -> u64 {
        self.imported.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.rejected {
            match &r.usuario {
                Some(usuario) => {
                    writeln!(f, "row {} ({usuario:?}): rejected: {}", r.row, r.reason)?
                }
                None => writeln!(f, "row {}: rejected: {}", r.row, r.reason)?,
            }
        }
        let formats: Vec<String> = self
            .imported
            .iter()
            .map(|(format, n)| format!("{format} {n}"))
            .collect();
        let formats = if formats.is_empty() {
            String::new()
        } else {
            format!(" ({})", formats.join(", "))
        };
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let target = if self.target.is_empty() {
            String::new()
        } else {
            format!(" into {}", self.target)
        };
        write!(
            f,
            "{verb} {}{formats}{target}, already there {}, rejected {}",
            self.imported_total(),
            self.already_there,
            self.rejected.len()
        )?;
        if self.dry_run {
            write!(f, "; dry run: nothing written")
        } else if self.imported_total() == 0 {
            write!(f, "; nothing changed")
        } else {
            Ok(())
        }
    }
}

/// A row that passed every check: what to store.
enum Ready {
    /// A hash kept as it is.
    Hash(String, Format),
    Plaintext(Senha),
}

/// Imports the rows of `settings.source` into `db` (migrated by the caller, or, dry, maybe
/// not). Fails only when the source cannot be read or the target cannot be written at all;
/// anything wrong with one row is in the report.
pub async fn import_users(
    db: &Db,
    hasher: &Hasher,
    settings: &ImportSettings,
    target_migrated: bool,
) -> Result<Report, Error> {
    let users = Users::new(db.clone());
    let sql = select_sql(&settings.source, &settings.columns).map_err(Error::Startup)?;
    let from = PgConnectOptions::from_str(settings.from.expose_secret())
        .map_err(|e| Error::Startup(format!("PRODUTO_IMPORT_FROM is not a PostgreSQL URL: {e}")))?;
    let source_name = postgres_target(&from);
    let target = db.target();
    eprintln!(
        "import-users: reading {source_name}; {} {target}",
        if settings.dry_run {
            "dry run, would write to"
        } else {
            "writing to"
        }
    );
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&from))
        .await
        .map_err(|_| {
            Error::Startup(format!(
                "source {source_name}: no connection within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| {
            Error::Startup(format!(
                "source {source_name}: cannot connect: {}",
                crate::db::diagnose::describe(&e)
            ))
        })?;
    // The import never writes the source, whatever the query says.
    let mut tx = conn.begin().await.map_err(source_error)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(source_error)?;

    // On a terminal, the rows to come, for the time left (the source runs the SELECT twice).
    let mut progress = if std::io::stderr().is_terminal() {
        let total = count_rows(&mut tx, &sql).await?;
        Some(Progress::new(total))
    } else {
        None
    };
    let mut report = Report {
        dry_run: settings.dry_run,
        target,
        ..Report::default()
    };
    // Usernames seen so far, with their row: a name twice in the source is imported once.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut rows = sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>)>(
        // Only quoted identifiers and the operator's own query, run read-only on the source
        // (see `select_sql`).
        sqlx::AssertSqlSafe(sql),
    )
    .fetch(&mut *tx);
    // Rows checked and waiting to be written, a batch at a time.
    let mut batch: Vec<Checked> = Vec::with_capacity(BATCH_ROWS);
    let mut row = 0;
    loop {
        let next = tokio::time::timeout(ROW_TIMEOUT, rows.next())
            .await
            .map_err(|_| Error::Startup(format!("source: no row within {ROW_TIMEOUT:?}")))?;
        let Some(fields) = next else { break };
        let (usuario, senha, nivel) = fields.map_err(source_error)?;
        row += 1;
        match &mut progress {
            Some(progress) => progress.update(row),
            None if row % PROGRESS_EVERY == 0 => {
                tracing::info!(rows = row, imported = report.imported_total(), "importing");
            }
            None => {}
        }
        let usuario_text = usuario.clone();
        let reject = |reason: String| Rejected {
            row,
            usuario: usuario_text.clone(),
            reason,
        };
        let (usuario, ready, nivel) =
            match check_row(hasher, usuario, senha, nivel, settings.plaintext_passwords) {
                Ok(checked) => checked,
                Err(reason) => {
                    report.rejected.push(reject(reason));
                    continue;
                }
            };
        if let Some(first) = seen.get(usuario.as_str()) {
            report.rejected.push(reject(format!(
                "usuario appears again (first in row {first}, which counts)"
            )));
            continue;
        }
        seen.insert(usuario.as_str().to_owned(), row);
        batch.push(Checked {
            row,
            usuario,
            ready,
            nivel,
        });
        if batch.len() >= BATCH_ROWS {
            write_batch(
                &users,
                hasher,
                settings.dry_run,
                target_migrated,
                &mut batch,
                &mut report,
            )
            .await?;
        }
    }
    write_batch(
        &users,
        hasher,
        settings.dry_run,
        target_migrated,
        &mut batch,
        &mut report,
    )
    .await?;
    // Rows refused while writing a batch were reported after later rows were checked.
    report.rejected.sort_by_key(|r| r.row);
    drop(rows);
    if let Some(progress) = progress {
        progress.finish(row);
    }
    // Read-only: nothing to commit; ending it is all.
    let _ = tx.rollback().await;
    Ok(report)
}

/// How many rows the source's SELECT returns.
async fn count_rows(conn: &mut PgConnection, sql: &str) -> Result<u64, Error> {
    let count = format!("SELECT count(*) FROM ({sql}) AS todas");
    // The same statement as the import's own, inside the read-only transaction.
    let n = tokio::time::timeout(
        ROW_TIMEOUT,
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count)).fetch_one(conn),
    )
    .await
    .map_err(|_| Error::Startup(format!("source: no count within {ROW_TIMEOUT:?}")))?
    .map_err(source_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The progress line on a terminal (stderr): rows done, the rate, the time left; redrawn in
/// place every [`REDRAW_EVERY`].
struct Progress {
    total: u64,
    started: Instant,
    drawn: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Progress {
            total,
            started: now,
            drawn: now,
        }
    }

    fn update(&mut self, done: u64) {
        if self.drawn.elapsed() >= REDRAW_EVERY {
            self.drawn = Instant::now();
            self.draw(done, "");
        }
    }

    /// The last state, left on its own line.
    fn finish(self, done: u64) {
        self.draw(done, "\n");
    }

    fn draw(&self, done: u64, end: &str) {
        let line = progress_line(done, self.total, self.started.elapsed());
        let mut stderr = std::io::stderr().lock();
        // `\r` and the erase-line sequence redraw the line in place.
        let _ = write!(stderr, "\r\x1b[2K{line}{end}");
        let _ = stderr.flush();
    }
}

/// `row 40000 of 100000 (40%), 8123 rows/s, about 7s left`.
fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let total = total.max(done);
    let percent = done * 100 / total.max(1);
    let left = if rate > 0.0 {
        Duration::from_secs_f64(((total - done) as f64 / rate).round())
    } else {
        Duration::ZERO
    };
    format!(
        "row {done} of {total} ({percent}%), {rate:.0} rows/s, about {} left",
        humantime::format_duration(left)
    )
}

/// A row that passed every check, waiting for its batch.
struct Checked {
    row: u64,
    usuario: Usuario,
    ready: Ready,
    nivel: Nivel,
}

/// Writes (or, dry, counts) a batch of checked rows and empties it: the users already there
/// are found in one query (before any plaintext is hashed, so that a second run hashes
/// none), the rest inserted in one statement; should the database refuse that statement (a
/// constraint one row breaks), the rows are inserted one by one, so that only that row is
/// rejected.
async fn write_batch(
    users: &Users,
    hasher: &Hasher,
    dry_run: bool,
    target_migrated: bool,
    batch: &mut Vec<Checked>,
    report: &mut Report,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let existing = if target_migrated {
        let names: Vec<&str> = batch.iter().map(|c| c.usuario.as_str()).collect();
        users.existing_usuarios(&names).await?
    } else {
        Default::default()
    };
    let mut ready = Vec::with_capacity(batch.len());
    for checked in batch.drain(..) {
        if existing.contains(checked.usuario.as_str()) {
            report.already_there += 1;
            continue;
        }
        if dry_run {
            *report.imported.entry(label_of(&checked.ready)).or_default() += 1;
            continue;
        }
        let (hash, label) = match checked.ready {
            Ready::Hash(hash, format) => (hash, format.label()),
            Ready::Plaintext(senha) => match hasher.hash(senha).await {
                Ok(hash) => (hash, PLAINTEXT),
                Err(e) => {
                    report.rejected.push(Rejected {
                        row: checked.row,
                        usuario: Some(checked.usuario.as_str().to_owned()),
                        reason: format!("hashing failed: {e}"),
                    });
                    continue;
                }
            },
        };
        ready.push((checked.row, checked.usuario, hash, checked.nivel, label));
    }
    if ready.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&Usuario, &str, Nivel)> = ready
        .iter()
        .map(|(_, usuario, hash, nivel, _)| (usuario, hash.as_str(), *nivel))
        .collect();
    match users.insert_imported_users(&rows).await {
        Ok(inserted) => {
            let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
            for (_, usuario, _, _, label) in &ready {
                if inserted.contains(usuario.as_str()) {
                    *report.imported.entry(label).or_default() += 1;
                } else {
                    // Created since the check (another import running at the same time).
                    report.already_there += 1;
                }
            }
            Ok(())
        }
        Err(Error::Database(sqlx::Error::Database(_))) => {
            for (row, usuario, hash, nivel, label) in &ready {
                insert_one(users, *row, usuario, hash, *nivel, label, report).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Inserts one imported user into the report's counts; a row the database refuses is
/// rejected, and the next may pass.
async fn insert_one(
    users: &Users,
    row: u64,
    usuario: &Usuario,
    hash: &str,
    nivel: Nivel,
    label: &'static str,
    report: &mut Report,
) -> Result<(), Error> {
    match users.insert_imported_user(usuario, hash, nivel).await {
        Ok(Some(_)) => *report.imported.entry(label).or_default() += 1,
        Ok(None) => report.already_there += 1,
        Err(Error::Database(sqlx::Error::Database(e))) => {
            tracing::warn!(row, error = %e, "row refused by the target database");
            report.rejected.push(Rejected {
                row,
                usuario: Some(usuario.as_str().to_owned()),
                reason: "the target database refused it (see the log)".into(),
            });
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The report label of a checked row.
fn label_of(ready: &Ready) -> &'static str {
    match ready {
        Ready::Hash(_, format) => format.label(),
        Ready::Plaintext(_) => PLAINTEXT,
    }
}

/// Judges one row: the username and level as the RPCs would take them, the password a hash
/// of a known shape (within its caps), or with `plaintext` a password of no hash shape.
fn check_row(
    hasher: &Hasher,
    usuario: Option<String>,
    senha: Option<String>,
    nivel: Option<String>,
    plaintext: bool,
) -> Result<(Usuario, Ready, Nivel), String> {
    let usuario = Usuario::parse(usuario.ok_or("usuario is NULL")?).map_err(|e| e.to_string())?;
    let nivel = nivel.ok_or("nivel is NULL")?;
    let nivel = nivel
        .trim()
        .parse::<i32>()
        .map_err(|_| format!("nivel: not an integer: {nivel:?}"))
        .and_then(|n| Nivel::parse(n).map_err(|e| e.to_string()))?;
    let senha = senha.ok_or("senha is NULL")?;
    let ready = match hasher.check_stored(&senha) {
        Ok(format) => Ready::Hash(senha, format),
        Err(reason) if !plaintext || legacy::looks_like_a_hash(&senha) => {
            return Err(format!("senha: {reason}"));
        }
        Err(_) => Ready::Plaintext(Senha::parse_login(senha).map_err(|e| e.to_string())?),
    };
    Ok((usuario, ready, nivel))
}

/// The SELECT run on the source: each field as text, so that a value of an unexpected type
/// is one rejected row, not a failed query.
fn select_sql(source: &Source, columns: &Columns) -> Result<String, String> {
    let usuario = quote_ident(&columns.usuario, "--usuario-column")?;
    let senha = quote_ident(&columns.senha, "--senha-column")?;
    let nivel = quote_ident(&columns.nivel, "--nivel-column")?;
    let fields = format!("({usuario})::text, ({senha})::text, ({nivel})::text");
    match source {
        Source::Table(name) => {
            let table = quote_table(name)?;
            Ok(format!("SELECT {fields} FROM {table} ORDER BY 1"))
        }
        Source::Query(query) => {
            let query = query.trim().trim_end_matches(';').trim_end();
            if query.is_empty() {
                return Err("--query is empty".into());
            }
            Ok(format!("SELECT {fields} FROM ({query}) AS fonte"))
        }
    }
}

/// A PostgreSQL identifier, quoted: any name is safe to splice once its `"` are doubled.
fn quote_ident(name: &str, flag: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("{flag}: not an identifier: {name:?}"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `name` or `schema.name`, each part quoted.
fn quote_table(name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.splitn(2, '.').collect();
    let quoted: Result<Vec<String>, String> =
        parts.iter().map(|p| quote_ident(p, "--table")).collect();
    Ok(quoted?.join("."))
}

fn source_error(e: sqlx::Error) -> Error {
    Error::Startup(format!("source: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_never_spliced() {
        let columns = Columns::default();
        assert_eq!(
            select_sql(&Source::Table("usuarios".into()), &columns).unwrap(),
            r#"SELECT ("usuario")::text, ("senha")::text, ("nivel")::text FROM "usuarios" ORDER BY 1"#
        );
        let sql = select_sql(
            &Source::Table("bot.users\"; DROP TABLE x; --".into()),
            &columns,
        )
        .unwrap();
        assert!(
            sql.ends_with(r#"FROM "bot"."users""; DROP TABLE x; --" ORDER BY 1"#),
            "{sql}"
        );
        let renamed = Columns {
            usuario: "login".into(),
            senha: "pass\"word".into(),
            nivel: "level".into(),
        };
        let sql = select_sql(&Source::Query("SELECT * FROM t;  ".into()), &renamed).unwrap();
        assert_eq!(
            sql,
            r#"SELECT ("login")::text, ("pass""word")::text, ("level")::text FROM (SELECT * FROM t) AS fonte"#
        );
        assert!(select_sql(&Source::Table("a.".into()), &columns).is_err());
        assert!(select_sql(&Source::Query(" ; ".into()), &columns).is_err());
    }

    #[test]
    fn the_report_says_what_happened_and_never_a_hash() {
        let mut report = Report::default();
        report.imported.insert("bcrypt", 2);
        report.imported.insert("sha256", 1);
        report.rejected.push(Rejected {
            row: 4,
            usuario: Some("eve".into()),
            reason: "senha: unrecognised password format".into(),
        });
        assert_eq!(
            report.to_string(),
            "row 4 (\"eve\"): rejected: senha: unrecognised password format\n\
             imported 3 (bcrypt 2, sha256 1), already there 0, rejected 1"
        );
        report.target = "SQLite file produto.db".into();
        assert!(
            report.to_string().ends_with(
                "imported 3 (bcrypt 2, sha256 1) into SQLite file produto.db, already there 0, \
                 rejected 1"
            ),
            "{report}"
        );
        let again = Report {
            already_there: 3,
            ..Report::default()
        };
        assert_eq!(
            again.to_string(),
            "imported 0, already there 3, rejected 0; nothing changed"
        );
    }

    #[test]
    fn the_progress_line_says_rows_rate_and_time_left() {
        assert_eq!(
            progress_line(40_000, 100_000, Duration::from_secs(5)),
            "row 40000 of 100000 (40%), 8000 rows/s, about 8s left"
        );
        // More rows than counted (the table grew): never a negative time.
        assert_eq!(
            progress_line(12, 10, Duration::from_secs(1)),
            "row 12 of 12 (100%), 12 rows/s, about 0s left"
        );
    }
}
