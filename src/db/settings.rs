//! The pool's settings ([`DbSettings`]) and the flags they come from ([`DbFlags`], flattened
//! into the server's command line by `config.rs`).

use std::{path::PathBuf, time::Duration};

/// The database flags' defaults: the one place each is written, read by clap's attributes
/// and by [`DbSettings::new`].
pub mod defaults {
    pub const DATABASE_URL: &str = "sqlite:produto.db";
    pub const MIN_CONNECTIONS: u32 = 1;
    pub const MAX_CONNECTIONS: u32 = 20;
    pub const ACQUIRE_TIMEOUT: &str = "5s";
    pub const QUERY_TIMEOUT: &str = "5s";
    pub const IDLE_TIMEOUT: &str = "10m";
    pub const MAX_LIFETIME: &str = "30m";
    pub const SLOW_QUERY_THRESHOLD: &str = "200ms";
    pub const BATCH_NIVEL: bool = true;
    pub const BATCH_NIVEL_LANES: usize = 2;
    pub const PGBOUNCER_TRANSACTION_POOLING: bool = false;
    pub const REPLICA_MAX_LAG: &str = "1s";
}

/// A default duration as its flag writes it (every component's `defaults` are written as the
/// flag takes them, e.g. `"5s"`): the one parser of them.
pub fn default_duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("every default duration parses")
}

/// The database's flags: where it is, the pools' bounds and timeouts, batching, PgBouncer,
/// read replicas. Its `Debug` shows the URLs without their passwords.
#[derive(Clone, clap::Args)]
pub struct DbFlags {
    /// Database URL: `postgres://user@host/db` or `sqlite:path.db` (the file is created if missing).
    /// PostgreSQL takes libpq's multi-host form (`postgres://u@h1:5432,h2:5432/db?
    /// target_session_attrs=read-write`): the writes go to whichever host is the primary.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = defaults::DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: String,

    /// File holding the database URL (a mounted Secret); replaces DATABASE_URL. A trailing
    /// newline is ignored.
    #[arg(long, env = "DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,

    /// Connections the pool keeps open even when idle.
    #[arg(long, env = "PRODUTO_MIN_CONNECTIONS", default_value_t = defaults::MIN_CONNECTIONS)]
    pub min_connections: u32,

    /// Most connections the pool opens.
    #[arg(long, env = "PRODUTO_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: u32,

    /// Longest wait for a pool connection before answering UNAVAILABLE (e.g. `5s`, `500ms`).
    #[arg(long, env = "PRODUTO_ACQUIRE_TIMEOUT", default_value = defaults::ACQUIRE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,

    /// Longest time one SQL statement may run before it is abandoned (UNAVAILABLE).
    #[arg(long, env = "PRODUTO_QUERY_TIMEOUT", default_value = defaults::QUERY_TIMEOUT, value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,

    /// Idle connections above the minimum are closed after this long.
    #[arg(long, env = "PRODUTO_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Connections are replaced after about this long, whatever their state: each one's
    /// lifetime is spread within ±15 % of it, so that connections opened together do not
    /// all close together.
    #[arg(long, env = "PRODUTO_MAX_LIFETIME", default_value = defaults::MAX_LIFETIME, value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,

    /// Queries slower than this are logged (name and duration, never the parameters).
    #[arg(long, env = "PRODUTO_SLOW_QUERY_THRESHOLD", default_value = defaults::SLOW_QUERY_THRESHOLD, value_parser = humantime::parse_duration)]
    pub slow_query_threshold: Duration,

    /// Batch concurrent ObterNivel lookups into one `= ANY($1)` query per round trip
    /// (PostgreSQL only; SQLite always runs one query per lookup). On by default: it doubled
    /// ObterNivel throughput at 32+ callers and cost a lone caller nothing (docs/benchmarks.md).
    #[arg(long, env = "PRODUTO_BATCH_NIVEL", default_value_t = defaults::BATCH_NIVEL, action = clap::ArgAction::Set)]
    pub batch_nivel: bool,

    /// With batching on: most batched lookup queries in flight at once (each holds one pool
    /// connection). More lanes mean smaller batches; about the database's CPU count is right.
    #[arg(long, env = "PRODUTO_BATCH_NIVEL_LANES", default_value_t = defaults::BATCH_NIVEL_LANES)]
    pub batch_nivel_lanes: usize,

    /// The database URL points at PgBouncer in transaction pooling (`pool_mode = transaction`):
    /// every statement is unnamed (no prepared-statement cache) and runs inside an explicit
    /// transaction, so that it never depends on a server connection's session. Needs
    /// PRODUTO_NO_MIGRATE: migrations take a session lock, so run `produto-server migrate`
    /// against PostgreSQL directly. Costs about two round trips per statement (docs/benchmarks.md).
    #[arg(long, env = "PRODUTO_PGBOUNCER_TRANSACTION_POOLING", default_value_t = defaults::PGBOUNCER_TRANSACTION_POOLING, action = clap::ArgAction::Set)]
    pub pgbouncer_transaction_pooling: bool,

    /// Streaming standbys to serve reads from, comma-separated `postgres://` URLs (PostgreSQL
    /// only), each with one host or several in libpq's form (`postgres://u@h1:5432,h2/db?
    /// target_session_attrs=standby`). Unset: every query goes to DATABASE_URL, as without
    /// replicas. They take no writes unless PRODUTO_REPLICA_FAILOVER is on.
    #[arg(
        long,
        env = "PRODUTO_REPLICA_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replica_urls: Vec<String>,

    /// The replicas' hosts are failover candidates: one found out of recovery (promoted) while
    /// DATABASE_URL's hosts are not becomes the primary. Off: a read endpoint never takes
    /// writes (a load balancer's read port may briefly reach a node just promoted).
    #[arg(long, env = "PRODUTO_REPLICA_FAILOVER", default_value_t = false, action = clap::ArgAction::Set)]
    pub replica_failover: bool,

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
    #[arg(long, env = "PRODUTO_REPLICA_MAX_LAG", default_value = defaults::REPLICA_MAX_LAG, value_parser = humantime::parse_duration)]
    pub replica_max_lag: Duration,

    /// Connections each replica's pool keeps open (default: PRODUTO_MIN_CONNECTIONS).
    #[arg(long, env = "PRODUTO_REPLICA_MIN_CONNECTIONS")]
    pub replica_min_connections: Option<u32>,

    /// Most connections each replica's pool opens (default: PRODUTO_MAX_CONNECTIONS).
    #[arg(long, env = "PRODUTO_REPLICA_MAX_CONNECTIONS")]
    pub replica_max_connections: Option<u32>,
}

impl DbFlags {
    /// Checks what clap cannot: relations between the database's flags.
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
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        self.validate_replicas()?;
        if self.batch_nivel_lanes == 0 {
            return Err("PRODUTO_BATCH_NIVEL_LANES must be at least 1".into());
        }
        Ok(())
    }

    /// The replica settings: PostgreSQL only, each URL a PostgreSQL one, pool bounds sane.
    fn validate_replicas(&self) -> Result<(), String> {
        let replica_urls = super::url::regroup(&self.replica_urls);
        let database_url =
            is_postgres_url(&self.database_url).then_some(self.database_url.as_str());
        super::check_urls(database_url, &replica_urls, self.replica_failover)?;
        if replica_urls.is_empty() {
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
            .zip(&replica_urls)
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

    /// The pool's settings.
    pub fn settings(&self) -> DbSettings {
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
            replica_urls: super::url::regroup(&self.replica_urls),
            replica_failover: self.replica_failover,
            replica_max_lag: self.replica_max_lag,
            replica_min_connections: self.replica_min_connections,
            replica_max_connections: self.replica_max_connections,
        }
    }
}

/// What the pool needs to know: where the database is, the pool's size and bounds. Its
/// `Debug` shows the URLs without their passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct DbSettings {
    /// `postgres://...` or `sqlite:path`.
    pub url: String,
    pub min_connections: u32,
    pub max_connections: u32,
    /// Longest wait for a connection.
    pub acquire_timeout: Duration,
    /// Longest time one statement may run.
    pub query_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// Statements slower than this are logged.
    pub slow_query_threshold: Duration,
    /// Batch concurrent ObterNivel lookups (PostgreSQL only).
    pub batch_nivel: bool,
    /// Batched lookup queries in flight at once.
    pub batch_nivel_lanes: usize,
    /// The URL points at PgBouncer in transaction pooling: see [`Db::named_statements`].
    pub pgbouncer_transaction_pooling: bool,
    /// Streaming standbys to read from (`postgres://` URLs); empty: none, every query on
    /// `url`. See [`replicas`].
    pub replica_urls: Vec<String>,
    /// The replicas' hosts may become the primary (see [`super::hosts`]).
    pub replica_failover: bool,
    /// A replica whose replay lag is past this gets no reads.
    pub replica_max_lag: Duration,
    /// Each replica pool's bounds; `None`: the primary's.
    pub replica_min_connections: Option<u32>,
    pub replica_max_connections: Option<u32>,
}

impl DbSettings {
    /// The defaults of the flags, over `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DbSettings {
            url: url.into(),
            min_connections: defaults::MIN_CONNECTIONS,
            max_connections: defaults::MAX_CONNECTIONS,
            acquire_timeout: default_duration(defaults::ACQUIRE_TIMEOUT),
            query_timeout: default_duration(defaults::QUERY_TIMEOUT),
            idle_timeout: default_duration(defaults::IDLE_TIMEOUT),
            max_lifetime: default_duration(defaults::MAX_LIFETIME),
            slow_query_threshold: default_duration(defaults::SLOW_QUERY_THRESHOLD),
            batch_nivel: defaults::BATCH_NIVEL,
            batch_nivel_lanes: defaults::BATCH_NIVEL_LANES,
            pgbouncer_transaction_pooling: defaults::PGBOUNCER_TRANSACTION_POOLING,
            replica_urls: Vec::new(),
            replica_failover: false,
            replica_max_lag: default_duration(defaults::REPLICA_MAX_LAG),
            replica_min_connections: None,
            replica_max_connections: None,
        }
    }
}

/// Whether a database URL is a PostgreSQL one.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// `url` as a log or `Debug` may show it: a password in its user part or in its query
/// (`?password=`) replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return super::url::redacted(url).unwrap_or_else(|| "(not a URL)".to_owned());
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

fn redacted_all(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redacted(u)).collect()
}

// By hand, to keep the passwords in the URLs out: the flags as the settings they become
// (every flag but the two files), then the files.
impl std::fmt::Debug for DbFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbFlags")
            .field("settings", &self.settings())
            .field("database_url_file", &self.database_url_file)
            .field("replica_urls_file", &self.replica_urls_file)
            .finish()
    }
}

// Every field is named, so that a new one is not left out by accident.
impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DbSettings {
            url,
            min_connections,
            max_connections,
            acquire_timeout,
            query_timeout,
            idle_timeout,
            max_lifetime,
            slow_query_threshold,
            batch_nivel,
            batch_nivel_lanes,
            pgbouncer_transaction_pooling,
            replica_urls,
            replica_failover,
            replica_max_lag,
            replica_min_connections,
            replica_max_connections,
        } = self;
        f.debug_struct("DbSettings")
            .field("url", &redacted(url))
            .field("min_connections", min_connections)
            .field("max_connections", max_connections)
            .field("acquire_timeout", acquire_timeout)
            .field("query_timeout", query_timeout)
            .field("idle_timeout", idle_timeout)
            .field("max_lifetime", max_lifetime)
            .field("slow_query_threshold", slow_query_threshold)
            .field("batch_nivel", batch_nivel)
            .field("batch_nivel_lanes", batch_nivel_lanes)
            .field(
                "pgbouncer_transaction_pooling",
                pgbouncer_transaction_pooling,
            )
            .field("replica_urls", &redacted_all(replica_urls))
            .field("replica_failover", replica_failover)
            .field("replica_max_lag", replica_max_lag)
            .field("replica_min_connections", replica_min_connections)
            .field("replica_max_connections", replica_max_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_database_password() {
        let mut settings = DbSettings::new("postgres://produto:s3cret-pw@db:5432/produto");
        settings.replica_urls = vec![
            "postgres://produto@standby/produto?password=s3cret-replica&sslmode=require".into(),
        ];
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("produto:***@db:5432/produto"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(redacted("sqlite:produto.db"), "sqlite:produto.db");

        let flags = flags(&["--database-url", "postgres://u:s3cret-pw@db/produto"]);
        let shown = format!("{flags:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    /// The flags as the command line `args` gives them.
    fn flags(args: &[&str]) -> DbFlags {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            db: DbFlags,
        }
        let args = std::iter::once("produto-server").chain(args.iter().copied());
        <Cli as clap::Parser>::parse_from(args).db
    }

    #[test]
    fn multi_host_urls_survive_the_flags_comma_split() {
        let db = flags(&[
            "--database-url",
            "postgres://u:pw@a:1,b:2/db?target_session_attrs=read-write",
            "--replica-urls",
            "postgres://u@a:1,b:2/db?target_session_attrs=standby,postgres://u@c/db",
            "--replica-failover",
            "true",
        ]);
        db.validate().unwrap();
        let settings = db.settings();
        assert_eq!(
            settings.replica_urls,
            [
                "postgres://u@a:1,b:2/db?target_session_attrs=standby",
                "postgres://u@c/db"
            ]
        );
        assert!(settings.replica_failover);
        let shown = format!("{settings:?}");
        assert!(shown.contains("postgres://u:***@a:1,b:2/db"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");

        let db = flags(&["--database-url", "postgres://a:1,b:x/db"]);
        assert_eq!(
            db.validate().unwrap_err(),
            "DATABASE_URL: host b: the port \"x\" is not a number from 1 to 65535"
        );
    }
}
