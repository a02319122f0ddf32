//! Which servers may take the writes and which the reads, from the connection strings
//! (see [`super::url`]): every host of `DATABASE_URL` is a candidate for the writes when its
//! `target_session_attrs` allow them; the hosts of `PRODUTO_REPLICA_URLS` take reads and
//! become the primary only when configured as failover candidates. Also the check libpq
//! makes on each new connection (`target_session_attrs`), and the lifetime jitter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::url::{ConnString, LoadBalance, SessionAttrs, UrlError};

/// What a server is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidacy {
    /// May become the primary (take the writes) when the probe finds it out of recovery.
    pub writes: bool,
    /// Takes reads while it is a fresh standby.
    pub reads: bool,
    /// What a new connection to it must find (checked after connecting).
    pub attrs: SessionAttrs,
    /// Which configured URL it comes from (0: `DATABASE_URL`, then the replica URLs).
    pub url: usize,
    /// With [`LoadBalance::Disable`] only the first readable host of its URL takes reads.
    pub balance: LoadBalance,
}

impl Candidacy {
    /// A server of its own, as before multi-host URLs: `DATABASE_URL`'s single host.
    pub const PRIMARY: Candidacy = Candidacy {
        writes: true,
        reads: false,
        attrs: SessionAttrs::Any,
        url: 0,
        balance: LoadBalance::Disable,
    };
}

/// The hosts of `DATABASE_URL`, each with what it is for; an error when its attributes
/// would never let it take writes.
pub fn primary_hosts(conn: &ConnString) -> Result<Vec<Candidacy>, String> {
    let attrs = conn.target_session_attrs;
    if !attrs.allows_writes() {
        return Err(format!(
            "target_session_attrs={} refuses the server that takes the writes; DATABASE_URL \
             takes any, read-write or primary (read endpoints go in PRODUTO_REPLICA_URLS)",
            attrs.as_str()
        ));
    }
    Ok(vec![
        Candidacy {
            attrs,
            balance: conn.load_balance_hosts,
            ..Candidacy::PRIMARY
        };
        conn.hosts.len()
    ])
}

/// The hosts of replica URL number `url` (1-based, as in errors); `failover`: they may
/// become the primary (`PRODUTO_REPLICA_FAILOVER`).
pub fn replica_hosts(
    conn: &ConnString,
    url: usize,
    failover: bool,
) -> Result<Vec<Candidacy>, String> {
    let attrs = conn.target_session_attrs;
    if matches!(attrs, SessionAttrs::ReadWrite | SessionAttrs::Primary) {
        return Err(format!(
            "target_session_attrs={} would refuse every standby; a replica URL takes any, \
             read-only, standby or prefer-standby (the primary's hosts go in DATABASE_URL)",
            attrs.as_str()
        ));
    }
    let writes = failover && matches!(attrs, SessionAttrs::Any | SessionAttrs::PreferStandby);
    Ok(vec![
        Candidacy {
            writes,
            reads: true,
            attrs,
            url,
            balance: conn.load_balance_hosts,
        };
        conn.hosts.len()
    ])
}

/// Parses every configured URL and checks what each is for: the message names the setting.
/// `database_url`: `DATABASE_URL` when it is a PostgreSQL one.
pub fn check_urls(
    database_url: Option<&str>,
    replica_urls: &[String],
    failover: bool,
) -> Result<(), String> {
    let parse = |url: &str, setting: &str| {
        ConnString::parse(url).map_err(|e: UrlError| format!("{setting}: {e}"))
    };
    if let Some(database_url) = database_url {
        let conn = parse(database_url, "DATABASE_URL")?;
        primary_hosts(&conn).map_err(|e| format!("DATABASE_URL: {e}"))?;
    }
    for (n, url) in (1..).zip(replica_urls) {
        let setting = format!("PRODUTO_REPLICA_URLS entry {n}");
        let conn = parse(url, &setting)?;
        replica_hosts(&conn, n, failover).map_err(|e| format!("{setting}: {e}"))?;
    }
    Ok(())
}

/// The check libpq makes after connecting with `target_session_attrs`: a connection to a
/// server that is not what `attrs` asks is refused (the pool then tries again, within the
/// acquire timeout). `prefer-standby` accepts any: which hosts take reads is the routing's.
pub async fn check_session(
    conn: &mut sqlx::PgConnection,
    attrs: SessionAttrs,
    address: &str,
) -> Result<(), sqlx::Error> {
    {
        let (sql, wanted, what) = match attrs {
            SessionAttrs::Any | SessionAttrs::PreferStandby => return Ok(()),
            SessionAttrs::ReadWrite => (
                "SELECT current_setting('transaction_read_only') = 'on'",
                false,
                "read-only",
            ),
            SessionAttrs::ReadOnly => (
                "SELECT current_setting('transaction_read_only') = 'on'",
                true,
                "read-write",
            ),
            SessionAttrs::Primary => ("SELECT pg_is_in_recovery()", false, "a standby"),
            SessionAttrs::Standby => ("SELECT pg_is_in_recovery()", true, "not a standby"),
        };
        let found: bool = sqlx::query_scalar(sql).fetch_one(&mut *conn).await?;
        if found == wanted {
            return Ok(());
        }
        Err(sqlx::Error::Protocol(format!(
            "{address} is {what}: target_session_attrs={} refuses it",
            attrs.as_str()
        )))
    }
}

/// How far a connection's lifetime is spread around the configured maximum: ±15 %, so that
/// connections opened together (after a failover, at start) are not all replaced together.
pub const LIFETIME_JITTER: f64 = 0.15;

/// The longest any connection lives: the pool's own `max_lifetime`, a backstop for the idle
/// ones [`past_lifetime`] never sees.
pub fn lifetime_bound(max_lifetime: Duration) -> Duration {
    max_lifetime.mul_f64(1.0 + LIFETIME_JITTER)
}

/// Whether a connection of this `age` is past its own lifetime: `max_lifetime` times a
/// factor in [0.85, 1.15] that is fixed per connection. sqlx keeps no data of ours per
/// connection, but its age gives its opening instant, which names it: the factor is a hash
/// of that instant in milliseconds (two connections opened in the same millisecond share a
/// lifetime; a reading at a millisecond's edge may give another, which moves the
/// deadline within the same range, harmlessly).
pub fn past_lifetime(max_lifetime: Duration, age: Duration) -> bool {
    let opened_ms = SystemTime::now()
        .checked_sub(age)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    age >= max_lifetime.mul_f64(lifetime_factor(opened_ms))
}

/// A factor in [1 − jitter, 1 + jitter], evenly spread over the seeds (splitmix64).
fn lifetime_factor(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    1.0 - LIFETIME_JITTER + 2.0 * LIFETIME_JITTER * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> ConnString {
        ConnString::parse(url).unwrap()
    }

    #[test]
    fn database_url_hosts_take_writes_and_replica_hosts_only_when_failover_is_on() {
        let primary =
            primary_hosts(&conn("postgres://a,b,c/db?target_session_attrs=read-write")).unwrap();
        assert_eq!(primary.len(), 3);
        assert!(primary.iter().all(|c| c.writes && !c.reads));
        let replicas = replica_hosts(&conn("postgres://a,b/db"), 1, false).unwrap();
        assert!(replicas.iter().all(|c| !c.writes && c.reads && c.url == 1));
        let replicas = replica_hosts(&conn("postgres://a,b/db"), 1, true).unwrap();
        assert!(replicas.iter().all(|c| c.writes && c.reads));
        let standby_only = replica_hosts(
            &conn("postgres://a/db?target_session_attrs=standby"),
            1,
            true,
        )
        .unwrap();
        assert!(
            !standby_only[0].writes,
            "a standby-only URL never takes writes"
        );
    }

    #[test]
    fn attributes_that_contradict_the_setting_are_refused() {
        let err = check_urls(
            Some("postgres://a,b/db?target_session_attrs=standby"),
            &[],
            false,
        )
        .unwrap_err();
        assert!(
            err.starts_with("DATABASE_URL: target_session_attrs=standby"),
            "{err}"
        );
        let err = check_urls(
            Some("postgres://a/db"),
            &[
                "postgres://r/db".into(),
                "postgres://r2/db?target_session_attrs=read-write".into(),
            ],
            false,
        )
        .unwrap_err();
        assert!(
            err.starts_with("PRODUTO_REPLICA_URLS entry 2: target_session_attrs=read-write"),
            "{err}"
        );
        let err = check_urls(Some("postgres://a:x/db"), &[], false).unwrap_err();
        assert_eq!(
            err,
            "DATABASE_URL: host a: the port \"x\" is not a number from 1 to 65535"
        );
        check_urls(None, &["postgres://r/db".into()], false).unwrap();
    }

    #[test]
    fn lifetimes_spread_evenly_within_the_jitter() {
        let factors: Vec<f64> = (0..10_000).map(lifetime_factor).collect();
        assert!(factors.iter().all(|f| (0.85..=1.15).contains(f)));
        let below = factors.iter().filter(|&&f| f < 1.0).count();
        assert!((4_500..5_500).contains(&below), "{below}");
        let low_tenth = factors.iter().filter(|&&f| f < 0.88).count();
        assert!((800..1_200).contains(&low_tenth), "{low_tenth}");
        let max = Duration::from_secs(100);
        assert!(!past_lifetime(max, Duration::from_secs(84)));
        assert!(past_lifetime(max, Duration::from_secs(116)));
        assert_eq!(lifetime_bound(max), Duration::from_secs(115));
    }
}
