//! The settings of sessions, admin rights and the audit trail, with their flags (flattened
//! into the server's command line by `config.rs`): one place for every lifetime and bound.

use std::time::Duration;

use crate::db::default_duration;

/// Each default, written once: the flags and [`SessionSettings::default`] both read them.
pub mod defaults {
    pub const LIFETIME: &str = "12h";
    pub const IDLE_TIMEOUT: &str = "1h";
    pub const MAX_PER_USER: u32 = 10;
    pub const PURGE_INTERVAL: &str = "1m";
    pub const ADMIN_NIVEL: i32 = 2;
    pub const AUDIT_RETENTION: &str = "365d";
}

/// The flags of sessions and the audit trail.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionFlags {
    /// How long a session lasts at most from its opening, however much it is used (e.g.
    /// `12h`).
    #[arg(long, env = "PRODUTO_SESSION_LIFETIME", default_value = defaults::LIFETIME, value_parser = humantime::parse_duration)]
    pub session_lifetime: Duration,

    /// A session unused this long ends (e.g. `30m`). Uses are recorded at most once a minute
    /// (or once per tenth of this, when shorter).
    #[arg(long, env = "PRODUTO_SESSION_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,

    /// Most open sessions per user; opening one more ends the user's oldest.
    #[arg(long, env = "PRODUTO_SESSION_MAX_PER_USER", default_value_t = defaults::MAX_PER_USER)]
    pub session_max_per_user: u32,

    /// How often expired and idle sessions, and audit entries past their retention, are
    /// deleted (in bounded batches).
    #[arg(long, env = "PRODUTO_SESSION_PURGE_INTERVAL", default_value = defaults::PURGE_INTERVAL, value_parser = humantime::parse_duration)]
    pub session_purge_interval: Duration,

    /// Lowest level whose sessions may call the admin RPCs (AdicionarUsuario, AlterarNivel,
    /// RemoverUsuario, ListarUsuarios, AlterarSenha of another user, ListarAuditoria...),
    /// read from the user's row at each call. The admin token may call them too.
    #[arg(long, env = "PRODUTO_ADMIN_NIVEL", default_value_t = defaults::ADMIN_NIVEL)]
    pub admin_nivel: i32,

    /// How long audit entries are kept (e.g. `365d`).
    #[arg(long, env = "PRODUTO_AUDIT_RETENTION", default_value = defaults::AUDIT_RETENTION, value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
}

impl SessionFlags {
    /// Checks what clap cannot: durations and bounds that would make sessions useless.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("PRODUTO_SESSION_LIFETIME", self.session_lifetime),
            ("PRODUTO_SESSION_IDLE_TIMEOUT", self.session_idle_timeout),
            (
                "PRODUTO_SESSION_PURGE_INTERVAL",
                self.session_purge_interval,
            ),
            ("PRODUTO_AUDIT_RETENTION", self.audit_retention),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.session_max_per_user == 0 {
            return Err("PRODUTO_SESSION_MAX_PER_USER must be at least 1".into());
        }
        if self.admin_nivel < 0 {
            return Err("PRODUTO_ADMIN_NIVEL must be 0 or greater".into());
        }
        Ok(())
    }

    pub fn settings(&self) -> SessionSettings {
        SessionSettings {
            lifetime: self.session_lifetime,
            idle_timeout: self.session_idle_timeout,
            max_per_user: self.session_max_per_user,
            purge_interval: self.session_purge_interval,
            admin_nivel: self.admin_nivel,
            audit_retention: self.audit_retention,
        }
    }
}

/// Sessions, admin rights and the audit trail, as the server takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    pub max_per_user: u32,
    pub purge_interval: Duration,
    pub admin_nivel: i32,
    pub audit_retention: Duration,
}

/// The flags' defaults.
impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            lifetime: default_duration(defaults::LIFETIME),
            idle_timeout: default_duration(defaults::IDLE_TIMEOUT),
            max_per_user: defaults::MAX_PER_USER,
            purge_interval: default_duration(defaults::PURGE_INTERVAL),
            admin_nivel: defaults::ADMIN_NIVEL,
            audit_retention: default_duration(defaults::AUDIT_RETENTION),
        }
    }
}

impl SessionSettings {
    /// How stale a recorded use may get before a use is written again: a minute, or a tenth
    /// of the idle timeout when that is shorter. Most checks then only read.
    pub fn touch_after(&self) -> Duration {
        (self.idle_timeout / 10).min(Duration::from_secs(60))
    }
}
