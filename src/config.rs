//! Server configuration: one struct, every field a flag with an environment fallback.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    db::{DbSettings, is_postgres_url},
    import::{Columns, ImportSettings, Source},
    password::HashSettings,
    telemetry::LogFormat,
    throttle::{self, LoginThrottle, TrustEndUser},
};

/// An address that may be switched off with an empty value. An alias, so that clap's derive
/// does not read it as an optional flag and hands the empty string to the parser.
pub type OptionalAddr = Option<SocketAddr>;

/// produto-server: user logins and access levels over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "produto-server", version)]
pub struct Config {
    /// What to do; without a command, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Database URL: `postgres://user@host/db` or `sqlite:path.db` (the file is created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:produto.db")]
    pub database_url: String,

    /// File holding the database URL (a mounted Secret); replaces DATABASE_URL. A trailing
    /// newline is ignored.
    #[arg(long, env = "DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,

    /// Address the gRPC server listens on.
    #[arg(long, env = "PRODUTO_ADDR", default_value = "0.0.0.0:50051")]
    pub addr: SocketAddr,

    /// Address of the admin HTTP port (`/metrics`, `/health`, `/livez`, `/readyz`); empty: off.
    #[arg(long, env = "PRODUTO_ADMIN_ADDR", default_value = "0.0.0.0:9090", value_parser = parse_optional_addr)]
    pub admin_addr: OptionalAddr,

    /// Start without applying migrations (run `produto-server migrate` first, e.g. as an init
    /// container); the server becomes ready once every migration it knows is applied.
    #[arg(long, env = "PRODUTO_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Connections the pool keeps open even when idle.
    #[arg(long, env = "PRODUTO_MIN_CONNECTIONS", default_value_t = 1)]
    pub min_connections: u32,

    /// Most connections the pool opens.
    #[arg(long, env = "PRODUTO_MAX_CONNECTIONS", default_value_t = 20)]
    pub max_connections: u32,

    /// Longest wait for a pool connection before answering UNAVAILABLE (e.g. `5s`, `500ms`).
    #[arg(long, env = "PRODUTO_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,

    /// Longest time one SQL statement may run before it is abandoned (UNAVAILABLE).
    #[arg(long, env = "PRODUTO_QUERY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,

    /// Idle connections above the minimum are closed after this long.
    #[arg(long, env = "PRODUTO_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Connections are replaced after this long, whatever their state.
    #[arg(long, env = "PRODUTO_MAX_LIFETIME", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,

    /// Queries slower than this are logged (name and duration, never the parameters).
    #[arg(long, env = "PRODUTO_SLOW_QUERY_THRESHOLD", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub slow_query_threshold: Duration,

    /// How often the background probe runs `SELECT 1` to drive readiness.
    #[arg(long, env = "PRODUTO_PROBE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// On shutdown, how long readiness reports NOT_SERVING while the port still serves, before
    /// the listener closes: balancers and probes that poll (not only Kubernetes, which also
    /// has the preStop pause) stop sending first. `0s`: close at once.
    #[arg(long, env = "PRODUTO_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Longest time graceful shutdown waits for in-flight calls before closing connections.
    #[arg(long, env = "PRODUTO_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Calls in progress at once, across all connections; past it calls are shed with
    /// RESOURCE_EXHAUSTED (health checks are exempt).
    #[arg(long, env = "PRODUTO_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// HTTP/2 streams (calls) one client connection may have open at once.
    #[arg(
        long,
        env = "PRODUTO_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256
    )]
    pub max_streams_per_connection: u32,

    /// Bearer token that AdicionarUsuario requires. Unset: AdicionarUsuario is refused.
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Require every RPC but health and reflection to name its caller: a token of
    /// PRODUTO_CALLER_TOKENS_FILE in `authorization: Bearer <token>`, or a client certificate
    /// (PRODUTO_TLS_CLIENT_CA). Calls without one get UNAUTHENTICATED. Off: callers that do
    /// present an identity are still named in logs and metrics.
    #[arg(long, env = "PRODUTO_CALLER_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub caller_auth: bool,

    /// File of caller tokens (a mounted Secret): one `name token` per line, `#` comments.
    #[arg(long, env = "PRODUTO_CALLER_TOKENS_FILE")]
    pub caller_tokens_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the gRPC port (with PRODUTO_TLS_KEY). Unset: plaintext.
    #[arg(long, env = "PRODUTO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of PRODUTO_TLS_CERT.
    #[arg(long, env = "PRODUTO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS).
    #[arg(long, env = "PRODUTO_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Login attempts allowed per username and caller (end user or IP address) within
    /// PRODUTO_LOGIN_WINDOW; past it, that caller's attempts on that username are refused
    /// unchecked (0: no throttling). A success clears the caller's count.
    #[arg(long, env = "PRODUTO_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Login attempts allowed per username from all callers together within
    /// PRODUTO_LOGIN_WINDOW: bounds a guessing attack spread over many callers (0: no ceiling).
    #[arg(
        long,
        env = "PRODUTO_LOGIN_MAX_FAILURES_PER_USER",
        default_value_t = 50
    )]
    pub login_max_failures_per_user: u32,

    /// Whose `produto-end-user` metadata names the caller for throttling: `authenticated`
    /// callers only (a client certificate), `always` (every caller is a trusted service), or
    /// `never` (the peer's IP address always).
    #[arg(long, env = "PRODUTO_LOGIN_TRUST_END_USER", value_enum, default_value_t = TrustEndUser::Authenticated)]
    pub login_trust_end_user: TrustEndUser,

    /// The window failed logins are counted in (e.g. `15m`).
    #[arg(long, env = "PRODUTO_LOGIN_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_window: Duration,

    /// File holding the admin token (a mounted Secret); replaces PRODUTO_ADMIN_TOKEN. A
    /// trailing newline is ignored.
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// argon2id memory cost in KiB (OWASP: 19456).
    #[arg(long, env = "PRODUTO_ARGON2_M_KIB", default_value_t = 19456)]
    pub argon2_m_kib: u32,

    /// argon2id iterations (OWASP: 2).
    #[arg(long, env = "PRODUTO_ARGON2_T", default_value_t = 2)]
    pub argon2_t: u32,

    /// argon2id parallelism (OWASP: 1).
    #[arg(long, env = "PRODUTO_ARGON2_P", default_value_t = 1)]
    pub argon2_p: u32,

    /// Password hashes computed at once (0: one per CPU core).
    #[arg(long, env = "PRODUTO_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// Batch concurrent ObterNivel lookups into one `= ANY($1)` query per round trip
    /// (PostgreSQL only; SQLite always runs one query per lookup). On by default: it doubled
    /// ObterNivel throughput at 32+ callers and cost a lone caller nothing (BENCHMARKS.md).
    #[arg(long, env = "PRODUTO_BATCH_NIVEL", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_nivel: bool,

    /// With batching on: most batched lookup queries in flight at once (each holds one pool
    /// connection). More lanes mean smaller batches; about the database's CPU count is right.
    #[arg(long, env = "PRODUTO_BATCH_NIVEL_LANES", default_value_t = 2)]
    pub batch_nivel_lanes: usize,

    /// The database URL points at PgBouncer in transaction pooling (`pool_mode = transaction`):
    /// every statement is unnamed (no prepared-statement cache) and runs inside an explicit
    /// transaction, so that it never depends on a server connection's session. Needs
    /// PRODUTO_NO_MIGRATE: migrations take a session lock, so run `produto-server migrate`
    /// against PostgreSQL directly. Costs about two round trips per statement (BENCHMARKS.md).
    #[arg(long, env = "PRODUTO_PGBOUNCER_TRANSACTION_POOLING", default_value_t = false, action = clap::ArgAction::Set)]
    pub pgbouncer_transaction_pooling: bool,

    /// Streaming standbys to serve reads from, comma-separated `postgres://` URLs (PostgreSQL
    /// only). Unset: every query goes to DATABASE_URL, as without replicas. A listed server
    /// found out of recovery (promoted) becomes the primary.
    #[arg(
        long,
        env = "PRODUTO_REPLICA_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replica_urls: Vec<String>,

    /// File holding the replica URLs (a mounted Secret), separated by commas or newlines;
    /// replaces PRODUTO_REPLICA_URLS.
    #[arg(
        long,
        env = "PRODUTO_REPLICA_URLS_FILE",
        conflicts_with = "replica_urls"
    )]
    pub replica_urls_file: Option<PathBuf>,

    /// A replica whose replay lag exceeds this gets no reads until it catches up; also the
    /// longest a change made on the primary outside produto may be read stale.
    #[arg(long, env = "PRODUTO_REPLICA_MAX_LAG", default_value = "1s", value_parser = humantime::parse_duration)]
    pub replica_max_lag: Duration,

    /// Connections each replica's pool keeps open (default: PRODUTO_MIN_CONNECTIONS).
    #[arg(long, env = "PRODUTO_REPLICA_MIN_CONNECTIONS")]
    pub replica_min_connections: Option<u32>,

    /// Most connections each replica's pool opens (default: PRODUTO_MAX_CONNECTIONS).
    #[arg(long, env = "PRODUTO_REPLICA_MAX_CONNECTIONS")]
    pub replica_max_connections: Option<u32>,

    /// Log format: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(long, env = "PRODUTO_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

/// The commands besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply the database migrations and exit (for an init container or a Kubernetes Job).
    Migrate,
    /// Create a user straight in the database and exit: how the first admin is made. The
    /// password is read from PRODUTO_SENHA, or else from the first line of standard input.
    AdicionarUsuario {
        /// The new user's name.
        usuario: String,
        /// The new user's access level (the bot treats 2 and above as admin).
        nivel: i32,
    },
    /// Copy users from the old bot's PostgreSQL table into this server's database (the one
    /// DATABASE_URL names, migrated first), keeping their passwords: bcrypt, Werkzeug and
    /// Django PBKDF2-SHA256, unsalted SHA-256 and argon2 hashes are stored as they are and
    /// replaced by argon2id at each user's first login. Users already there are left alone, so
    /// a second run changes nothing. Prints each rejected row and the counts; exits 0 when no
    /// row was rejected, 3 when some were (the others imported), 1 on failure, 2 on bad flags.
    ImportUsers(ImportArgs),
}

/// The flags of `import-users`.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("rows").required(true).args(["table", "query"]))]
pub struct ImportArgs {
    /// The old bot's database, `postgres://user:password@host/db` (better given as
    /// PRODUTO_IMPORT_FROM than on the command line, where `ps` shows it). Only read, inside
    /// a read-only transaction.
    #[arg(long, env = "PRODUTO_IMPORT_FROM", hide_env_values = true)]
    pub from: SecretString,
    /// The table to read, `name` or `schema.name` (quoted as identifiers, whatever they hold).
    #[arg(long)]
    pub table: Option<String>,
    /// Instead of --table: any SELECT returning the three columns (named as the column flags
    /// say), e.g. to filter or join.
    #[arg(long)]
    pub query: Option<String>,
    /// The column holding the username.
    #[arg(long, default_value = "usuario")]
    pub usuario_column: String,
    /// The column holding the stored password (a hash, or plaintext with --plaintext-passwords).
    #[arg(long, default_value = "senha")]
    pub senha_column: String,
    /// The column holding the access level (an integer >= 0, or text holding one).
    #[arg(long, default_value = "nivel")]
    pub nivel_column: String,
    /// Report what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The source stores some passwords in plaintext: a value of no known hash shape is a
    /// password, hashed with argon2id during the import (never stored as given). Without this
    /// flag such rows are rejected.
    #[arg(long)]
    pub plaintext_passwords: bool,
}

impl ImportArgs {
    /// The import's own settings.
    pub fn settings(&self) -> ImportSettings {
        ImportSettings {
            from: self.from.clone(),
            source: match (&self.table, &self.query) {
                (_, Some(query)) => Source::Query(query.clone()),
                (Some(table), None) => Source::Table(table.clone()),
                // clap's group requires one of the two.
                (None, None) => Source::Table("usuarios".into()),
            },
            columns: Columns {
                usuario: self.usuario_column.clone(),
                senha: self.senha_column.clone(),
                nivel: self.nivel_column.clone(),
            },
            dry_run: self.dry_run,
            plaintext_passwords: self.plaintext_passwords,
        }
    }
}

impl Config {
    /// Replaces the settings given as files (`*_FILE`, mounted Secrets) by the files' contents.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        if let Some(path) = self.database_url_file.take() {
            self.database_url = read_secret(&path, "DATABASE_URL_FILE")?;
        }
        if let Some(path) = self.replica_urls_file.take() {
            self.replica_urls = read_secret(&path, "PRODUTO_REPLICA_URLS_FILE")?
                .split([',', '\n'])
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(path) = self.admin_token_file.take() {
            self.admin_token = Some(read_secret(&path, "PRODUTO_ADMIN_TOKEN_FILE")?.into());
        }
        Ok(())
    }

    /// Checks what clap cannot: relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("PRODUTO_MAX_CONNECTIONS must be at least 1".into());
        }
        if self.min_connections > self.max_connections {
            return Err(format!(
                "PRODUTO_MIN_CONNECTIONS ({}) is larger than PRODUTO_MAX_CONNECTIONS ({})",
                self.min_connections, self.max_connections
            ));
        }
        for (name, d) in [
            ("PRODUTO_ACQUIRE_TIMEOUT", self.acquire_timeout),
            ("PRODUTO_QUERY_TIMEOUT", self.query_timeout),
            ("PRODUTO_PROBE_INTERVAL", self.probe_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        self.validate_replicas()?;
        if self.batch_nivel_lanes == 0 {
            return Err("PRODUTO_BATCH_NIVEL_LANES must be at least 1".into());
        }
        if self.max_concurrent_calls == 0 || self.max_streams_per_connection == 0 {
            return Err(
                "PRODUTO_MAX_CONCURRENT_CALLS and PRODUTO_MAX_STREAMS_PER_CONNECTION must be at least 1"
                    .into(),
            );
        }
        if self.login_max_failures_per_user != 0
            && self.login_max_failures_per_user < self.login_max_failures
        {
            return Err(format!(
                "PRODUTO_LOGIN_MAX_FAILURES_PER_USER ({}) is smaller than PRODUTO_LOGIN_MAX_FAILURES ({})",
                self.login_max_failures_per_user, self.login_max_failures
            ));
        }
        if self.login_max_failures != 0 && self.login_window.is_zero() {
            return Err("PRODUTO_LOGIN_WINDOW must be greater than zero".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("PRODUTO_TLS_CERT and PRODUTO_TLS_KEY must be set together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("PRODUTO_TLS_CLIENT_CA needs PRODUTO_TLS_CERT and PRODUTO_TLS_KEY".into());
        }
        if self.caller_auth && self.caller_tokens_file.is_none() && self.tls_client_ca.is_none() {
            return Err(
                "PRODUTO_CALLER_AUTH needs PRODUTO_CALLER_TOKENS_FILE or PRODUTO_TLS_CLIENT_CA"
                    .into(),
            );
        }
        if self.pgbouncer_transaction_pooling && !self.no_migrate {
            return Err(
                "PRODUTO_PGBOUNCER_TRANSACTION_POOLING needs PRODUTO_NO_MIGRATE: migrations \
                 hold a session-level lock that transaction pooling cannot keep; run \
                 `produto-server migrate` against PostgreSQL directly (not through PgBouncer)"
                    .into(),
            );
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().is_empty())
        {
            return Err("PRODUTO_ADMIN_TOKEN is set but empty; unset it or give a token".into());
        }
        self.hash_settings()?;
        Ok(())
    }

    /// The replica settings: PostgreSQL only, each URL a PostgreSQL one, pool bounds sane.
    fn validate_replicas(&self) -> Result<(), String> {
        if self.replica_urls.is_empty() {
            return Ok(());
        }
        if !is_postgres_url(&self.database_url) {
            return Err(
                "PRODUTO_REPLICA_URLS is set but DATABASE_URL is not PostgreSQL: read replicas \
                 need PostgreSQL streaming replication; unset PRODUTO_REPLICA_URLS or use a \
                 postgres:// DATABASE_URL"
                    .into(),
            );
        }
        if let Some(n) = (1..)
            .zip(&self.replica_urls)
            .find_map(|(n, url)| (!is_postgres_url(url)).then_some(n))
        {
            return Err(format!(
                "PRODUTO_REPLICA_URLS: entry {n} is not a postgres:// or postgresql:// URL"
            ));
        }
        let min = self.replica_min_connections.unwrap_or(self.min_connections);
        let max = self.replica_max_connections.unwrap_or(self.max_connections);
        if max == 0 || min > max {
            return Err(format!(
                "replica pool bounds: PRODUTO_REPLICA_MIN_CONNECTIONS ({min}) must be at most \
                 PRODUTO_REPLICA_MAX_CONNECTIONS ({max}), which must be at least 1"
            ));
        }
        if self.replica_max_lag.is_zero() {
            return Err("PRODUTO_REPLICA_MAX_LAG must be greater than zero".into());
        }
        Ok(())
    }

    /// The one place the flags become settings: reads the `*_FILE` secrets, checks the
    /// relations between flags, and splits them into each component's own settings.
    pub fn into_settings(mut self) -> Result<Settings, String> {
        self.read_secret_files()?;
        self.validate()?;
        Ok(Settings {
            addr: self.addr,
            admin_addr: self.admin_addr,
            admin_token: self.admin_token.clone(),
            db: self.db_settings(),
            hashing: self.hash_settings()?,
            limits: Limits {
                max_concurrent_calls: self.max_concurrent_calls,
                max_streams_per_connection: self.max_streams_per_connection,
            },
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsSettings {
                    cert,
                    key,
                    client_ca: self.tls_client_ca,
                }),
                _ => None,
            },
            throttle: LoginThrottle {
                max_failures: self.login_max_failures,
                max_failures_per_user: self.login_max_failures_per_user,
                window: self.login_window,
                trust_end_user: self.login_trust_end_user,
                authenticated: throttle::is_authenticated,
            },
            probe_interval: self.probe_interval,
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
            caller_auth: self.caller_auth,
            caller_tokens_file: self.caller_tokens_file,
            no_migrate: self.no_migrate,
            log_format: self.log_format,
        })
    }

    /// The pool's settings.
    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            url: self.database_url.clone(),
            min_connections: self.min_connections,
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            query_timeout: self.query_timeout,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            slow_query_threshold: self.slow_query_threshold,
            batch_nivel: self.batch_nivel,
            batch_nivel_lanes: self.batch_nivel_lanes,
            pgbouncer_transaction_pooling: self.pgbouncer_transaction_pooling,
            replica_urls: self.replica_urls.clone(),
            replica_max_lag: self.replica_max_lag,
            replica_min_connections: self.replica_min_connections,
            replica_max_connections: self.replica_max_connections,
        }
    }

    /// The hashing settings; fails on argon2 costs that argon2 refuses. A caller waits for a
    /// hashing slot as long as for a pool connection.
    pub fn hash_settings(&self) -> Result<HashSettings, String> {
        let mut settings = HashSettings::new(self.argon2_m_kib, self.argon2_t, self.argon2_p)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        settings.concurrency = self.hash_concurrency;
        settings.queue_timeout = self.acquire_timeout;
        Ok(settings)
    }
}

/// Everything the server takes, each component's part in its own small type. Built from the
/// flags by [`Config::into_settings`], or by hand (tests, tools) from [`Settings::new`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub addr: SocketAddr,
    /// The admin HTTP port; `None`: off.
    pub admin_addr: Option<SocketAddr>,
    /// The token AdicionarUsuario requires; `None`: AdicionarUsuario is refused.
    pub admin_token: Option<SecretString>,
    pub db: DbSettings,
    pub hashing: HashSettings,
    pub limits: Limits,
    /// `None`: plaintext.
    pub tls: Option<TlsSettings>,
    pub throttle: LoginThrottle,
    /// How often the background probe runs.
    pub probe_interval: Duration,
    /// Longest wait for in-flight calls at shutdown.
    pub drain_timeout: Duration,
    /// How long readiness reports NOT_SERVING, the port still serving, before the drain.
    pub shutdown_delay: Duration,
    /// Require every RPC but health and reflection to name its caller.
    pub caller_auth: bool,
    /// Caller tokens, one `name token` per line.
    pub caller_tokens_file: Option<PathBuf>,
    /// Wait for someone else to migrate instead of migrating.
    pub no_migrate: bool,
    pub log_format: LogFormat,
}

impl Settings {
    /// Every flag's default over `database_url`, but the admin port, which is off (a fixed
    /// port would collide between servers in one process). Reads no environment.
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            admin_addr: None,
            admin_token: None,
            db: DbSettings::new(database_url),
            hashing: HashSettings::new(19456, 2, 1).expect("the OWASP argon2 parameters are valid"),
            limits: Limits {
                max_concurrent_calls: 1024,
                max_streams_per_connection: 256,
            },
            tls: None,
            throttle: LoginThrottle {
                max_failures: 5,
                max_failures_per_user: 50,
                window: Duration::from_secs(15 * 60),
                trust_end_user: TrustEndUser::Authenticated,
                authenticated: throttle::is_authenticated,
            },
            probe_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::from_secs(5),
            caller_auth: false,
            caller_tokens_file: None,
            no_migrate: false,
            log_format: LogFormat::Text,
        }
    }
}

/// Bounds on the calls the server takes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls in progress across all connections; past it calls are shed.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams one connection may have open.
    pub max_streams_per_connection: u32,
}

/// TLS on the gRPC port: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// `""` switches the address off; anything else must be an address.
fn parse_optional_addr(value: &str) -> Result<OptionalAddr, std::net::AddrParseError> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        value.parse().map(Some)
    }
}

/// A secret file's contents without the trailing newline that editors and `echo` add.
fn read_secret(path: &std::path::Path, name: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_admin_address_switches_the_admin_port_off() {
        let config = Config::parse_from(["produto-server", "--admin-addr", ""]);
        assert_eq!(config.admin_addr, None);
        let config = Config::parse_from(["produto-server"]);
        assert_eq!(config.admin_addr, Some("0.0.0.0:9090".parse().unwrap()));
    }

    #[test]
    fn secrets_are_read_from_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("database-url");
        let token = dir.path().join("admin-token");
        std::fs::write(&url, "postgres://u@db/produto\n").unwrap();
        std::fs::write(&token, "s3cret token\r\n").unwrap();
        let mut config = Config::parse_from([
            "produto-server".as_ref(),
            "--database-url-file".as_ref(),
            url.as_os_str(),
            "--admin-token-file".as_ref(),
            token.as_os_str(),
        ]);
        config.read_secret_files().unwrap();
        assert_eq!(config.database_url, "postgres://u@db/produto");
        assert_eq!(
            config.admin_token.as_ref().map(ExposeSecret::expose_secret),
            Some("s3cret token")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_secret_file_is_a_startup_error_naming_the_setting() {
        let mut config =
            Config::parse_from(["produto-server", "--admin-token-file", "/nonexistent/token"]);
        let err = config.read_secret_files().unwrap_err();
        assert!(err.starts_with("PRODUTO_ADMIN_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn replicas_are_refused_with_sqlite_and_read_from_a_file() {
        let config = Config::parse_from([
            "produto-server",
            "--replica-urls",
            "postgres://r1/p,postgres://r2/p",
        ]);
        assert_eq!(config.replica_urls.len(), 2);
        let err = config.validate().unwrap_err();
        assert!(err.contains("DATABASE_URL is not PostgreSQL"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("replicas");
        std::fs::write(&file, "postgres://r1/p\npostgresql://r2/p,\n").unwrap();
        let mut config = Config::parse_from([
            "produto-server".as_ref(),
            "--database-url".as_ref(),
            "postgres://primary/p".as_ref(),
            "--replica-urls-file".as_ref(),
            file.as_os_str(),
        ]);
        config.read_secret_files().unwrap();
        assert_eq!(
            config.replica_urls,
            ["postgres://r1/p", "postgresql://r2/p"]
        );
        config.validate().unwrap();
        config.replica_urls.push("mysql://r3/p".into());
        let err = config.validate().unwrap_err();
        assert!(err.contains("entry 3"), "{err}");
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let settings = Config::parse_from(["produto-server"])
            .into_settings()
            .unwrap();
        let mut expected = Settings::new("sqlite:produto.db");
        expected.admin_addr = Some("0.0.0.0:9090".parse().unwrap());
        // Debug shows every field (the absent token included).
        assert_eq!(format!("{settings:?}"), format!("{expected:?}"));
    }

    #[test]
    fn migrate_is_a_subcommand() {
        let config = Config::parse_from(["produto-server", "migrate"]);
        assert!(matches!(config.command, Some(Command::Migrate)));
        assert!(Config::parse_from(["produto-server", "--no-migrate"]).no_migrate);
    }

    #[test]
    fn import_users_takes_a_table_or_a_query_and_renamed_columns() {
        let config = Config::parse_from([
            "produto-server",
            "import-users",
            "--from",
            "postgres://bot:pw@old/bot",
            "--table",
            "bot.usuarios",
            "--senha-column",
            "senha_hash",
            "--dry-run",
        ]);
        let Some(Command::ImportUsers(args)) = config.command else {
            panic!("not import-users");
        };
        let settings = args.settings();
        assert_eq!(settings.source, Source::Table("bot.usuarios".into()));
        assert_eq!(settings.columns.senha, "senha_hash");
        assert_eq!(settings.columns.usuario, "usuario");
        assert!(settings.dry_run && !settings.plaintext_passwords);
        assert!(!format!("{settings:?}").contains("pw@"));
        let neither = Config::try_parse_from(["produto-server", "import-users", "--from", "x"]);
        assert!(neither.is_err());
        let both = Config::try_parse_from([
            "produto-server",
            "import-users",
            "--from",
            "x",
            "--table",
            "t",
            "--query",
            "SELECT 1",
        ]);
        assert!(both.is_err());
    }
}
