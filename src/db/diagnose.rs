//! Why the database cannot be used at start, in words a person can act on: one direct
//! connection to `DATABASE_URL` (the pool's own error hides the cause behind "pool timed
//! out"), its failure classified by SQLSTATE and the OS error into permanent (stop the
//! server) or passing (stay up, not ready, retry). Never PostgreSQL's "at line N".

use std::{fmt, io, time::Duration};

use sqlx::{Connection, Database, Pool, postgres::PgConnectOptions};

use super::{Backend, Db};

/// Bound on the diagnostic connection (a server that does not answer within it counts as
/// unreachable, which keeps the server retrying).
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one direct connection to `DATABASE_URL` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// It connected: whatever failed, it was not reaching the database.
    Reachable,
    /// Nothing answered (refused, timed out, name not resolved, a server starting up or
    /// full): it may come back, so the server waits. The line names the address and the cause.
    Unreachable(String),
    /// It answered and refused for a reason waiting will not fix (no such database or role,
    /// a wrong password, no right to connect, a SQLite file that cannot be opened): the
    /// server stops with this line.
    Permanent(String),
}

impl Db {
    /// `DATABASE_URL` in words, without credentials: `PostgreSQL at host:port, database
    /// "name"` or `SQLite file path`.
    pub fn target(&self) -> String {
        Target::of(&self.servers.get(0).backend).to_string()
    }

    /// Opens one connection to `DATABASE_URL` outside the pool (bounded) and says what
    /// stands in the way, if anything.
    pub async fn diagnose(&self) -> Diagnosis {
        let backend = &self.servers.get(0).backend;
        let target = Target::of(backend);
        let outcome = match backend {
            Backend::Postgres(pool) => try_connect(pool).await,
            Backend::Sqlite(pool) => try_connect(pool).await,
        };
        match outcome {
            Ok(()) => Diagnosis::Reachable,
            Err(None) => Diagnosis::Unreachable(format!(
                "{}: no answer within {DIAGNOSE_TIMEOUT:?}",
                target.address()
            )),
            Err(Some(e)) => target.classify(&e),
        }
    }
}

/// One connection with the pool's options, closed at once. `Err(None)`: timed out.
async fn try_connect<DB: Database>(pool: &Pool<DB>) -> Result<(), Option<sqlx::Error>> {
    let options = pool.connect_options();
    match tokio::time::timeout(DIAGNOSE_TIMEOUT, DB::Connection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// The database as the operator named it, without credentials.
enum Target {
    Postgres {
        host: String,
        port: u16,
        database: String,
        user: String,
    },
    Sqlite(String),
}

/// A PostgreSQL server and database in words, without credentials: `PostgreSQL at
/// host:port, database "name"`.
pub fn postgres_target(options: &PgConnectOptions) -> String {
    Target::postgres(options).to_string()
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Postgres { database, .. } => {
                write!(f, "{}, database \"{database}\"", self.address())
            }
            Target::Sqlite(_) => f.write_str(&self.address()),
        }
    }
}

impl Target {
    fn of(backend: &Backend) -> Target {
        match backend {
            Backend::Postgres(pool) => Target::postgres(&pool.connect_options()),
            Backend::Sqlite(pool) => {
                Target::Sqlite(pool.connect_options().get_filename().display().to_string())
            }
        }
    }

    fn postgres(options: &PgConnectOptions) -> Target {
        Target::Postgres {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            // PostgreSQL's default database is the user's name.
            database: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned(),
            user: options.get_username().to_owned(),
        }
    }

    fn address(&self) -> String {
        match self {
            Target::Postgres { host, port, .. } => format!("PostgreSQL at {host}:{port}"),
            Target::Sqlite(path) => format!("SQLite file {path}"),
        }
    }

    /// Sorts a failed connection into permanent or passing, in one line.
    fn classify(&self, e: &sqlx::Error) -> Diagnosis {
        let address = self.address();
        match (self, e) {
            (Target::Postgres { .. }, sqlx::Error::Io(io)) => {
                Diagnosis::Unreachable(format!("{address}: {}", io_cause(io)))
            }
            (
                Target::Postgres {
                    host,
                    port,
                    database,
                    user,
                },
                sqlx::Error::Database(db),
            ) => {
                let message = db.message();
                match db.code().as_deref().unwrap_or("") {
                    // invalid_catalog_name
                    "3D000" => Diagnosis::Permanent(format!(
                        "{address}: database \"{database}\" does not exist; create it first \
                         (e.g. `createdb -h {host} -p {port} -U {user} {database}`) or fix \
                         DATABASE_URL"
                    )),
                    // invalid_authorization_specification (no such role, no pg_hba entry),
                    // invalid_password
                    "28000" | "28P01" => Diagnosis::Permanent(format!(
                        "{address}, database \"{database}\", user \"{user}\": {message} \
                         (fix the user or password in DATABASE_URL, or the server's pg_hba.conf)"
                    )),
                    // insufficient_privilege: no CONNECT right on the database
                    "42501" => Diagnosis::Permanent(format!(
                        "{address}, database \"{database}\", user \"{user}\": {message}"
                    )),
                    // Anything else may pass: too_many_connections (53300), cannot_connect_now
                    // (57P03: starting up, shutting down), ...
                    code => Diagnosis::Unreachable(format!(
                        "{address}, database \"{database}\": {message} (SQLSTATE {code})"
                    )),
                }
            }
            (Target::Postgres { .. }, sqlx::Error::Tls(tls)) => Diagnosis::Permanent(format!(
                "{address}: TLS failed: {tls} (see sslmode in DATABASE_URL)"
            )),
            (Target::Sqlite(_), sqlx::Error::Database(db)) => {
                // The primary result code is the extended code's low byte.
                let code = db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map_or(0, |c| c & 0xff);
                const SQLITE_BUSY: i32 = 5;
                const SQLITE_LOCKED: i32 = 6;
                if matches!(code, SQLITE_BUSY | SQLITE_LOCKED) {
                    Diagnosis::Unreachable(format!("{address}: {}", db.message()))
                } else {
                    Diagnosis::Permanent(format!(
                        "{address} cannot be opened: {} (does its directory exist, and may this \
                         user write there?)",
                        db.message()
                    ))
                }
            }
            (Target::Sqlite(_), sqlx::Error::Io(io)) => {
                Diagnosis::Permanent(format!("{address} cannot be opened: {io}"))
            }
            (_, other) => Diagnosis::Unreachable(format!("{address}: {}", describe(other))),
        }
    }
}

/// The OS's cause of a failed connection, named the way an operator searches for it.
fn io_cause(e: &io::Error) -> String {
    let what = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "connection timed out",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::PermissionDenied => "permission denied",
        // getaddrinfo's failures have no kind of their own; tokio says "failed to lookup
        // address information".
        _ if e.to_string().contains("lookup address") => {
            return format!("name not resolved ({e})");
        }
        _ => return e.to_string(),
    };
    match e.raw_os_error() {
        Some(n) => format!("{what} (os error {n})"),
        None => what.to_owned(),
    }
}

/// A sqlx error in one line, without PostgreSQL's "at line N" of its own source: the
/// message and the SQLSTATE for a database error, sqlx's words otherwise.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        sqlx::Error::Io(io) => io_cause(io),
        other => other.to_string(),
    }
}

/// A migration error in one line, its database error as [`describe`] says it.
pub fn describe_migrate(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => describe(e),
        MigrateError::ExecuteMigration(e, version) => {
            format!("migration {version}: {}", describe(e))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> Target {
        Target::Postgres {
            host: "db.example".into(),
            port: 5432,
            database: "produto".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn the_os_cause_is_named() {
        let refused = sqlx::Error::Io(io::ErrorKind::ConnectionRefused.into());
        let Diagnosis::Unreachable(line) = pg().classify(&refused) else {
            panic!("refused is passing");
        };
        assert!(
            line.starts_with("PostgreSQL at db.example:5432: connection refused"),
            "{line}"
        );
        let dns = sqlx::Error::Io(io::Error::other(
            "failed to lookup address information: Name or service not known",
        ));
        assert!(
            describe(&dns).starts_with("name not resolved"),
            "{}",
            describe(&dns)
        );
    }

    #[test]
    fn a_sqlite_io_error_is_permanent_and_names_the_path() {
        let denied = sqlx::Error::Io(io::ErrorKind::PermissionDenied.into());
        let Diagnosis::Permanent(line) = Target::Sqlite("/x/p.db".into()).classify(&denied) else {
            panic!("a SQLite file that cannot be opened is permanent");
        };
        assert!(line.contains("/x/p.db"), "{line}");
    }
}
