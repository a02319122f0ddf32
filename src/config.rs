//! Server configuration: the command line, every field a flag with an environment fallback.
//!
//! Each component's flags live beside it and are flattened in here ([`DbFlags`] in
//! `db/settings.rs`, [`AuthFlags`] in `auth/mod.rs`, [`ThrottleFlags`] in
//! `login/throttle/policy.rs`, [`HashFlags`] in `password/mod.rs`), each with its defaults
//! written once (a `defaults` module beside the flags); this file keeps the serving flags
//! (ports, TLS, limits, shutdown), checks the relations across components
//! ([`SettingsError`]), and assembles [`Settings`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::{
    auth::AuthFlags,
    db::{DbFlags, DbSettings, default_duration},
    import::{Columns, ImportSettings, Source},
    login::throttle::{LoginThrottle, ThrottleFlags},
    password::{HashFlags, HashSettings, PasswordPolicy, PolicyFlags},
    sessions::{SessionFlags, SessionSettings},
    telemetry::LogFormat,
};

/// Why the flags make no valid settings: said in the settings' own names, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A `*_FILE` setting names a file that cannot be read.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    SecretFile {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database's flags (`db/settings.rs`).
    #[error("{0}")]
    Database(String),
    /// The throttling flags (`login/throttle/policy.rs`).
    #[error("{0}")]
    Throttle(String),
    /// The admin token and caller authentication (`auth/mod.rs`).
    #[error("{0}")]
    Auth(String),
    /// argon2's costs.
    #[error("{0}")]
    Hashing(String),
    /// Sessions and the audit trail (`sessions/settings.rs`).
    #[error("{0}")]
    Sessions(String),
    #[error("PRODUTO_PROBE_INTERVAL must be greater than zero")]
    ZeroProbeInterval,
    #[error(
        "PRODUTO_MAX_CONCURRENT_CALLS and PRODUTO_MAX_STREAMS_PER_CONNECTION must be at least 1"
    )]
    ZeroCallLimit,
    #[error("PRODUTO_TLS_CERT and PRODUTO_TLS_KEY must be set together")]
    TlsHalfSet,
    #[error("PRODUTO_TLS_CLIENT_CA needs PRODUTO_TLS_CERT and PRODUTO_TLS_KEY")]
    ClientCaWithoutTls,
    #[error("PRODUTO_CALLER_AUTH needs PRODUTO_CALLER_TOKENS_FILE or PRODUTO_TLS_CLIENT_CA")]
    CallerAuthWithoutIdentities,
    #[error(
        "PRODUTO_PGBOUNCER_TRANSACTION_POOLING needs PRODUTO_NO_MIGRATE: migrations hold a \
         session-level lock that transaction pooling cannot keep; run `produto-server migrate` \
         against PostgreSQL directly (not through PgBouncer)"
    )]
    TransactionPoolingWithMigrations,
}

/// An address that may be switched off with an empty value. An alias, so that clap's derive
/// does not read it as an optional flag and hands the empty string to the parser.
pub type OptionalAddr = Option<SocketAddr>;

/// The serving flags' defaults: the one place each is written, read by clap's attributes
/// and by [`Settings::new`] and [`Limits::default`]. Each component keeps its own beside its
/// flags (`db::settings::defaults`, `login::throttle::defaults`, `password::defaults`).
pub mod defaults {
    use crate::telemetry::LogFormat;

    pub const ADDR: &str = "0.0.0.0:50051";
    pub const ADMIN_ADDR: &str = "0.0.0.0:9090";
    pub const PROBE_INTERVAL: &str = "2s";
    pub const SHUTDOWN_DELAY: &str = "5s";
    pub const DRAIN_TIMEOUT: &str = "10s";
    pub const MAX_CONCURRENT_CALLS: usize = 1024;
    pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
    pub const LOG_FORMAT: LogFormat = LogFormat::Text;
}

/// produto-server: user logins and access levels over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "produto-server", version)]
pub struct Config {
    /// What to do; without a command, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the gRPC server listens on: `ip:port`, or `host:port` as the clients name it
    /// (`localhost:50051`; the host's first address).
    #[arg(long, env = "PRODUTO_ADDR", default_value = defaults::ADDR, value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Address of the admin HTTP port (`/metrics`, `/health`, `/livez`, `/readyz`); empty: off.
    #[arg(long, env = "PRODUTO_ADMIN_ADDR", default_value = defaults::ADMIN_ADDR, value_parser = parse_optional_addr)]
    pub admin_addr: OptionalAddr,

    /// Start without applying migrations (run `produto-server migrate` first, e.g. as an init
    /// container); the server becomes ready once every migration it knows is applied.
    #[arg(long, env = "PRODUTO_NO_MIGRATE")]
    pub no_migrate: bool,

    /// How often the background probe runs `SELECT 1` to drive readiness.
    #[arg(long, env = "PRODUTO_PROBE_INTERVAL", default_value = defaults::PROBE_INTERVAL, value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// On shutdown, how long readiness reports NOT_SERVING while the port still serves, before
    /// the listener closes: balancers and probes that poll (not only Kubernetes, which also
    /// has the preStop pause) stop sending first. `0s`: close at once.
    #[arg(long, env = "PRODUTO_SHUTDOWN_DELAY", default_value = defaults::SHUTDOWN_DELAY, value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Longest time graceful shutdown waits for in-flight calls before closing connections.
    #[arg(long, env = "PRODUTO_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Calls in progress at once, across all connections; past it calls are shed with
    /// RESOURCE_EXHAUSTED (health checks are exempt).
    #[arg(long, env = "PRODUTO_MAX_CONCURRENT_CALLS", default_value_t = defaults::MAX_CONCURRENT_CALLS)]
    pub max_concurrent_calls: usize,

    /// HTTP/2 streams (calls) one client connection may have open at once.
    #[arg(
        long,
        env = "PRODUTO_MAX_STREAMS_PER_CONNECTION",
        default_value_t = defaults::MAX_STREAMS_PER_CONNECTION
    )]
    pub max_streams_per_connection: u32,

    /// PEM certificate chain for TLS on the gRPC port (with PRODUTO_TLS_KEY). Unset: plaintext.
    #[arg(long, env = "PRODUTO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of PRODUTO_TLS_CERT.
    #[arg(long, env = "PRODUTO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS).
    #[arg(long, env = "PRODUTO_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// The database's flags (`db/settings.rs`).
    #[command(flatten)]
    pub db: DbFlags,

    /// The admin token and caller authentication (`auth/mod.rs`).
    #[command(flatten)]
    pub auth: AuthFlags,

    /// Brute-force throttling of logins (`login/throttle/policy.rs`).
    #[command(flatten)]
    pub throttle: ThrottleFlags,

    /// argon2id's costs and the hashing threads (`password/mod.rs`).
    #[command(flatten)]
    pub hashing: HashFlags,

    /// Sessions, admin rights and the audit trail (`sessions/settings.rs`).
    #[command(flatten)]
    pub sessions: SessionFlags,

    /// The policy for new passwords (`password/policy.rs`).
    #[command(flatten)]
    pub password_policy: PolicyFlags,

    /// Log format: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(long, env = "PRODUTO_LOG_FORMAT", value_enum, default_value_t = defaults::LOG_FORMAT)]
    pub log_format: crate::telemetry::LogFormat,

    /// Continue the trace (W3C `traceparent`) of every incoming call. Off: only authenticated
    /// callers' traces are continued; anyone else's call starts a new trace linked to theirs.
    /// Traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/tracing.md).
    #[arg(long, env = "PRODUTO_TRACE_TRUST_ALL")]
    pub trace_trust_all: bool,
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
    pub fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(path) = self.db.database_url_file.take() {
            self.db.database_url = read_secret(&path, "DATABASE_URL_FILE")?;
        }
        if let Some(path) = self.db.replica_urls_file.take() {
            self.db.replica_urls = read_secret(&path, "PRODUTO_REPLICA_URLS_FILE")?
                .split([',', '\n'])
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(path) = self.auth.admin_token_file.take() {
            self.auth.admin_token = Some(read_secret(&path, "PRODUTO_ADMIN_TOKEN_FILE")?.into());
        }
        Ok(())
    }

    /// Checks what clap cannot: relations between settings. Each component checks its own
    /// flags; the relations across components are checked here.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.db.validate().map_err(SettingsError::Database)?;
        if self.probe_interval.is_zero() {
            return Err(SettingsError::ZeroProbeInterval);
        }
        if self.max_concurrent_calls == 0 || self.max_streams_per_connection == 0 {
            return Err(SettingsError::ZeroCallLimit);
        }
        self.throttle.validate().map_err(SettingsError::Throttle)?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(SettingsError::TlsHalfSet);
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(SettingsError::ClientCaWithoutTls);
        }
        if self.auth.caller_auth
            && self.auth.caller_tokens_file.is_none()
            && self.tls_client_ca.is_none()
        {
            return Err(SettingsError::CallerAuthWithoutIdentities);
        }
        if self.db.pgbouncer_transaction_pooling && !self.no_migrate {
            return Err(SettingsError::TransactionPoolingWithMigrations);
        }
        self.auth.validate().map_err(SettingsError::Auth)?;
        self.sessions.validate().map_err(SettingsError::Sessions)?;
        self.hash_settings()?;
        Ok(())
    }

    /// The one place the flags become settings: reads the `*_FILE` secrets, checks the
    /// relations between flags, and splits them into each component's own settings.
    pub fn into_settings(mut self) -> Result<Settings, SettingsError> {
        self.read_secret_files()?;
        self.validate()?;
        Ok(Settings {
            addr: self.addr,
            admin_addr: self.admin_addr,
            admin_token: self.auth.admin_token.clone(),
            db: self.db.settings(),
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
            throttle: self.throttle.settings(),
            probe_interval: self.probe_interval,
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
            caller_auth: self.auth.caller_auth,
            caller_tokens_file: self.auth.caller_tokens_file,
            no_migrate: self.no_migrate,
            sessions: self.sessions.settings(),
            password_policy: self.password_policy.settings(),
            log_format: self.log_format,
            trace_trust_all: self.trace_trust_all,
        })
    }

    /// The pool's settings.
    pub fn db_settings(&self) -> DbSettings {
        self.db.settings()
    }

    /// The hashing settings; fails on argon2 costs that argon2 refuses. A caller waits for a
    /// hashing slot as long as for a pool connection.
    pub fn hash_settings(&self) -> Result<HashSettings, SettingsError> {
        self.hashing
            .settings(self.db.acquire_timeout)
            .map_err(SettingsError::Hashing)
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
    pub sessions: SessionSettings,
    pub password_policy: PasswordPolicy,
    pub log_format: LogFormat,
    /// Continue every incoming trace, not only authenticated callers'.
    pub trace_trust_all: bool,
}

impl Settings {
    /// Every flag's default over `database_url`, but the admin port, which is off (a fixed
    /// port would collide between servers in one process). Reads no environment.
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            addr: defaults::ADDR.parse().expect("the default address parses"),
            admin_addr: None,
            admin_token: None,
            db: DbSettings::new(database_url),
            hashing: HashSettings::default(),
            limits: Limits::default(),
            tls: None,
            throttle: LoginThrottle::default(),
            probe_interval: default_duration(defaults::PROBE_INTERVAL),
            drain_timeout: default_duration(defaults::DRAIN_TIMEOUT),
            shutdown_delay: default_duration(defaults::SHUTDOWN_DELAY),
            caller_auth: false,
            caller_tokens_file: None,
            no_migrate: false,
            sessions: SessionSettings::default(),
            password_policy: PasswordPolicy::default(),
            log_format: defaults::LOG_FORMAT,
            trace_trust_all: false,
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

/// The flags' defaults.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_calls: defaults::MAX_CONCURRENT_CALLS,
            max_streams_per_connection: defaults::MAX_STREAMS_PER_CONNECTION,
        }
    }
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
fn parse_optional_addr(value: &str) -> Result<OptionalAddr, String> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        parse_addr(value).map(Some)
    }
}

/// `ip:port`, or `host:port` resolved to the host's first address (the one name every client
/// uses for the service, `localhost:50051` included).
fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(value)
        .map_err(|e| format!("expected ip:port or host:port: {e}"))?
        .next()
        .ok_or_else(|| format!("{value} resolves to no address"))
}

/// A secret file's contents without the trailing newline that editors and `echo` add.
fn read_secret(path: &std::path::Path, setting: &'static str) -> Result<String, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::SecretFile {
        setting,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_address_may_be_a_host_and_port() {
        let config = Config::parse_from(["produto-server", "--addr", "localhost:50051"]);
        assert!(config.addr.ip().is_loopback(), "{}", config.addr);
        assert_eq!(config.addr.port(), 50051);
        assert!(Config::try_parse_from(["produto-server", "--addr", "no port"]).is_err());
    }

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
        assert_eq!(config.db.database_url, "postgres://u@db/produto");
        assert_eq!(
            config
                .auth
                .admin_token
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("s3cret token")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_secret_file_is_a_startup_error_naming_the_setting() {
        let mut config =
            Config::parse_from(["produto-server", "--admin-token-file", "/nonexistent/token"]);
        let err = config.read_secret_files().unwrap_err().to_string();
        assert!(err.starts_with("PRODUTO_ADMIN_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn replicas_are_refused_with_sqlite_and_read_from_a_file() {
        let config = Config::parse_from([
            "produto-server",
            "--replica-urls",
            "postgres://r1/p,postgres://r2/p",
        ]);
        assert_eq!(config.db.replica_urls.len(), 2);
        let err = config.validate().unwrap_err().to_string();
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
            config.db.replica_urls,
            ["postgres://r1/p", "postgresql://r2/p"]
        );
        config.validate().unwrap();
        config.db.replica_urls.push("mysql://r3/p".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("entry 3"), "{err}");
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let settings = Config::parse_from(["produto-server"])
            .into_settings()
            .unwrap();
        let expected = Settings::new("sqlite:produto.db");
        // Taken apart field by field: a new field does not compile until it is compared.
        let Settings {
            addr,
            admin_addr,
            admin_token,
            db,
            hashing,
            limits,
            tls,
            throttle,
            probe_interval,
            drain_timeout,
            shutdown_delay,
            caller_auth,
            caller_tokens_file,
            no_migrate,
            sessions,
            password_policy,
            log_format,
            trace_trust_all,
        } = settings;
        assert_eq!(addr, expected.addr);
        // The one difference: `Settings::new` leaves the admin port off.
        assert_eq!(admin_addr, Some(defaults::ADMIN_ADDR.parse().unwrap()));
        assert_eq!(expected.admin_addr, None);
        assert!(admin_token.is_none() && expected.admin_token.is_none());
        assert_eq!(db, expected.db);
        assert_eq!(hashing, expected.hashing);
        assert_eq!(limits, expected.limits);
        assert_eq!(tls, expected.tls);
        let policy = |t: &LoginThrottle| {
            (
                t.max_failures,
                t.max_failures_per_user,
                t.window,
                t.trust_end_user,
                t.tell_authenticated,
            )
        };
        assert_eq!(policy(&throttle), policy(&expected.throttle));
        assert_eq!(probe_interval, expected.probe_interval);
        assert_eq!(drain_timeout, expected.drain_timeout);
        assert_eq!(shutdown_delay, expected.shutdown_delay);
        assert_eq!(caller_auth, expected.caller_auth);
        assert_eq!(caller_tokens_file, expected.caller_tokens_file);
        assert_eq!(no_migrate, expected.no_migrate);
        assert_eq!(sessions, expected.sessions);
        assert_eq!(password_policy, expected.password_policy);
        assert_eq!(log_format, expected.log_format);
        assert_eq!(trace_trust_all, expected.trace_trust_all);
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
