//! Server configuration: one struct, every field a flag with an environment fallback.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

/// produto-server: user logins and access levels over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "produto-server", version, about)]
pub struct Config {
    /// Database URL: `postgres://user@host/db` or `sqlite:path.db` (the file is created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:produto.db")]
    pub database_url: String,

    /// Address the gRPC server listens on.
    #[arg(long, env = "PRODUTO_ADDR", default_value = "0.0.0.0:50051")]
    pub addr: SocketAddr,

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

    /// How often the background probe runs `SELECT 1` to drive readiness.
    #[arg(long, env = "PRODUTO_PROBE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// Longest time graceful shutdown waits for in-flight calls before closing connections.
    #[arg(long, env = "PRODUTO_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Bearer token that AdicionarUsuario requires. Unset: AdicionarUsuario is refused.
    #[arg(long, env = "PRODUTO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

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

    /// Log format: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(long, env = "PRODUTO_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

impl Config {
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
        if self.batch_nivel_lanes == 0 {
            return Err("PRODUTO_BATCH_NIVEL_LANES must be at least 1".into());
        }
        if self.admin_token.as_deref() == Some("") {
            return Err("PRODUTO_ADMIN_TOKEN is set but empty; unset it or give a token".into());
        }
        crate::password::Hasher::params(self).map_err(|e| format!("argon2 parameters: {e}"))?;
        Ok(())
    }

    /// A configuration with every default, for tests and tools that build one in code.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        let mut config = Config::parse_from(["produto-server"]);
        config.database_url = database_url.into();
        config
    }
}
