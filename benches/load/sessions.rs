//! Scenario 11: what sessions cost the server. First a session check, ObterSessao, against
//! ObterNivel of the same user on one unbatched server, the session named by its token and by
//! its end user through a caller token, the server's CPU per request compared in ABBA slices
//! (the default, batched server's ObterNivel beside them for reference). Then a storm of
//! AbrirSessao against a server with a short lifetime, purge interval and per-user bound,
//! the size of `sessoes` sampled by the bench throughout, the purges read back from the
//! server's log and its query-duration metric.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime},
};

use sqlx::{Connection, PgConnection};
use tonic::{metadata::MetadataMap, transport::Channel};

use crate::{
    calls,
    report::{Row, Target},
    runner::{Outcome, Side, abba},
    server::{self, Server},
};

/// How scenario 11 runs.
pub struct Plan<'a> {
    pub server_bin: &'a str,
    pub database_url: &'a str,
    pub connections: usize,
    /// Callers of the session check and of ObterNivel.
    pub callers: usize,
    /// Callers of AbrirSessao in the storm.
    pub login_callers: usize,
    pub rounds: u32,
    pub window: Duration,
    /// How long the storm of logins lasts.
    pub storm: Duration,
    /// The server in its default configuration (ObterNivel batched), for reference.
    pub batched: (&'a Server, &'a [Channel]),
}

/// The caller of the sessions bound to an end user, in the server's caller tokens file.
const CALLER: &str = "bench";
const CALLER_TOKEN: &str = "bench-caller-token-0123456789";

/// The storm's server: sessions short enough to expire, and be purged, within the storm.
const STORM_MAX_PER_USER: u64 = 3;
const STORM_LIFETIME: Duration = Duration::from_secs(6);
const STORM_PURGE_INTERVAL: Duration = Duration::from_secs(2);
/// Logins of each user: more than the bound, so that its last ones end its oldest.
const STORM_LOGINS_PER_USER: u64 = STORM_MAX_PER_USER + 2;
/// Users logging in at a time, in turn: twice the default callers, so that one user's logins
/// rarely overlap, and few enough that each takes all its logins well within the lifetime.
const STORM_WAVE: u64 = 16;
/// The storm's first user, past the session check's.
const STORM_FIRST_USER: u64 = 1000;
/// How often the bench counts the rows of `sessoes`.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Runs the scenario, adding its rows, targets and notes.
pub async fn run(
    plan: Plan<'_>,
    rows: &mut Vec<Row>,
    targets: &mut Vec<Target>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    check(&plan, rows, targets, notes).await?;
    storm(&plan, rows, targets, notes).await
}

/// ObterSessao by token and by end user, ObterNivel plain and batched, in ABBA slices.
async fn check(
    plan: &Plan<'_>,
    rows: &mut Vec<Row>,
    targets: &mut Vec<Target>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let tokens_file =
        std::env::temp_dir().join(format!("produto-bench-{}-callers", std::process::id()));
    std::fs::write(&tokens_file, format!("{CALLER} {CALLER_TOKEN}\n"))
        .map_err(|e| format!("{}: {e}", tokens_file.display()))?;
    let started = Server::start(
        plan.server_bin,
        "plain",
        plan.database_url,
        &[
            ("PRODUTO_BATCH_NIVEL", "false".into()),
            (
                "PRODUTO_CALLER_TOKENS_FILE",
                tokens_file.display().to_string(),
            ),
        ],
    )
    .await;
    // Read once at start.
    let _ = std::fs::remove_file(&tokens_file);
    let server = started?;
    let channels = server.channels(plan.connections).await?;

    // Each caller checks a user of its own, which holds a session by token and one bound to
    // an end user: the check reads that user's row as ObterNivel does.
    let users: Vec<String> = (0..plan.callers)
        .map(|i| format!("user{}", i as u64 % calls::USERS.load(Relaxed)))
        .collect();
    let mut by_token = Vec::new();
    let mut by_end_user = Vec::new();
    for (i, usuario) in users.iter().enumerate() {
        let opened = |e| format!("AbrirSessao for {usuario}: {e}");
        let token = calls::abrir_sessao(&channels[0], usuario.clone(), MetadataMap::new())
            .await
            .map_err(opened)?;
        by_token.push(metadata(&[("produto-session", token)]));
        let end_user = metadata(&[
            ("authorization", format!("Bearer {CALLER_TOKEN}")),
            ("produto-end-user", format!("{CALLER}:{i}")),
        ]);
        calls::abrir_sessao(&channels[0], usuario.clone(), end_user.clone())
            .await
            .map_err(opened)?;
        by_end_user.push(end_user);
    }

    let (batched, batched_ch) = plan.batched;
    let nivel = |i: usize| calls::grpc_nivel_of(&channels, i, &users[i]);
    let token = |i: usize| calls::grpc_sessao(&channels, i, by_token[i].clone());
    let end_user = |i: usize| calls::grpc_sessao(&channels, i, by_end_user[i].clone());
    let nivel_batched = |i: usize| calls::grpc_nivel_of(batched_ch, i, &users[i]);
    let variants: [(&str, &str, Side); 4] = [
        ("11 ObterNivel", "plain", (server.pid(), &nivel)),
        ("11 ObterSessao", "token", (server.pid(), &token)),
        ("11 ObterSessao", "end user", (server.pid(), &end_user)),
        ("11 ObterNivel", "batched", (batched.pid(), &nivel_batched)),
    ];
    let sides: Vec<Side> = variants.iter().map(|(.., side)| *side).collect();
    let outcomes = abba(&sides, plan.callers, plan.rounds, plan.window).await;
    server.stop().await;

    for ((scenario, variant, _), o) in variants.iter().zip(&outcomes) {
        rows.push(Row::from_outcome(*scenario, *variant, o));
    }
    let cpu: Vec<Option<f64>> = outcomes.iter().map(Outcome::cpu_us_per_req).collect();
    for (i, how) in [(1, "token"), (2, "end user")] {
        let Some(sessao) = cpu[i] else { continue };
        if let Some(plain) = cpu[0] {
            targets.push(Target::at_most(
                format!(
                    "ObterSessao ({how}) / plain ObterNivel, server CPU/request, {} callers",
                    plan.callers
                ),
                sessao / plain,
                "x",
                1.2,
            ));
        }
        if let Some(batched) = cpu[3] {
            notes.push((
                format!(
                    "ObterSessao ({how}) / batched ObterNivel (the default), server CPU/request"
                ),
                format!("{:.3}x ({sessao:.1} / {batched:.1} µs)", sessao / batched),
            ));
        }
    }
    Ok(())
}

/// Request metadata of ASCII `pairs`.
fn metadata(pairs: &[(&'static str, String)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (key, value) in pairs {
        map.insert(*key, value.parse().expect("ASCII metadata"));
    }
    map
}

/// The user of the storm's `n`th login: users in waves of [`STORM_WAVE`], each wave's users
/// taking their [`STORM_LOGINS_PER_USER`] logins in turn.
fn storm_user(n: u64) -> String {
    let wave = n / (STORM_WAVE * STORM_LOGINS_PER_USER);
    let user = STORM_FIRST_USER + wave * STORM_WAVE + n % STORM_WAVE;
    format!("user{}", user % calls::USERS.load(Relaxed))
}

/// Users the storm's first `logins` logins named.
fn storm_users(logins: u64) -> u64 {
    let per_wave = STORM_WAVE * STORM_LOGINS_PER_USER;
    logins / per_wave * STORM_WAVE + (logins % per_wave).min(STORM_WAVE)
}

/// The storm of logins, with the table's size sampled throughout and until the purge has
/// deleted the last sessions (or the lifetime and two purge intervals have passed).
async fn storm(
    plan: &Plan<'_>,
    rows: &mut Vec<Row>,
    targets: &mut Vec<Target>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let sql = |e: sqlx::Error| format!("storm: {e}");
    let mut db = PgConnection::connect(plan.database_url)
        .await
        .map_err(sql)?;
    // The check's sessions (12 h lifetime) would stay in the count.
    sqlx::query("DELETE FROM sessoes")
        .execute(&mut db)
        .await
        .map_err(sql)?;
    let log_path =
        std::env::temp_dir().join(format!("produto-bench-{}-storm.log", std::process::id()));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let server = Server::start_logging(
        plan.server_bin,
        "storm",
        plan.database_url,
        &[
            (
                "PRODUTO_SESSION_MAX_PER_USER",
                STORM_MAX_PER_USER.to_string(),
            ),
            ("PRODUTO_SESSION_LIFETIME", duration(STORM_LIFETIME)),
            (
                "PRODUTO_SESSION_PURGE_INTERVAL",
                duration(STORM_PURGE_INTERVAL),
            ),
            // Each purge that deleted rows is a debug line with their number.
            ("RUST_LOG", "warn,produto::sessions=debug".into()),
            ("PRODUTO_LOG_FORMAT", "json".into()),
        ],
        Some(log),
    )
    .await?;
    let admin = server.admin_addr.expect("produto-server has an admin port");
    let before = PurgeStatements::read(&server::metrics(admin).await?);
    let channels = server.channels(plan.connections).await?;

    let began = Instant::now();
    let ended: Arc<OnceLock<Instant>> = Arc::default();
    let drain = STORM_LIFETIME + 2 * STORM_PURGE_INTERVAL;
    let sampler = tokio::spawn({
        let ended = ended.clone();
        async move {
            let mut samples: Vec<(Duration, i64)> = Vec::new();
            loop {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessoes")
                    .fetch_one(&mut db)
                    .await
                    .map_err(sql)?;
                let now = Instant::now();
                samples.push((now - began, n));
                if let Some(&end) = ended.get()
                    && (n == 0 || now > end + drain)
                {
                    return Ok::<_, String>(samples);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }
    });
    let next = Arc::new(AtomicU64::new(0));
    let login = crate::one(
        plan.login_callers,
        Duration::ZERO,
        plan.storm,
        Some(server.pid()),
        |i| {
            let next = next.clone();
            calls::grpc_abrir_sessao(&channels, i, move || storm_user(next.fetch_add(1, Relaxed)))
        },
    )
    .await;
    let end = Instant::now();
    let ended_at = SystemTime::now();
    let _ = ended.set(end);
    let samples = sampler.await.map_err(|e| e.to_string())??;
    let after = PurgeStatements::read(&server::metrics(admin).await?);
    server.stop().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);

    let logins = next.load(Relaxed);
    let opened = logins.saturating_sub(login.errors.values().sum());
    let users = storm_users(logins);
    let bound = users * STORM_MAX_PER_USER;
    let storm_end = end - began;
    let (peak_at, peak) = samples
        .iter()
        .copied()
        .max_by_key(|&(_, n)| n)
        .unwrap_or_default();
    let at_end = samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= storm_end)
        .map_or(0, |&(_, n)| n);
    let (last_at, left) = samples.last().copied().unwrap_or_default();
    rows.push(Row::from_outcome(
        "11 AbrirSessao storm",
        format!("max {STORM_MAX_PER_USER}/user"),
        &login,
    ));
    notes.push((
        "storm".into(),
        format!(
            "{logins} logins of {users} users ({STORM_LOGINS_PER_USER} each, {STORM_WAVE} at a time) \
             in {:.1} s, {:.1} logins/s; PRODUTO_SESSION_MAX_PER_USER={STORM_MAX_PER_USER}, \
             LIFETIME={}, PURGE_INTERVAL={}",
            storm_end.as_secs_f64(),
            login.rps(),
            duration(STORM_LIFETIME),
            duration(STORM_PURGE_INTERVAL),
        ),
    ));
    notes.push((
        "storm: rows of sessoes".into(),
        format!(
            "peak {peak} at {:.1} s (bound {users} users × {STORM_MAX_PER_USER} = {bound}); \
             {at_end} at the storm's end; {left} {:.1} s after it",
            peak_at.as_secs_f64(),
            (last_at.saturating_sub(storm_end)).as_secs_f64(),
        ),
    ));
    notes.push((
        "storm: rows of sessoes each second (s: rows)".into(),
        series(&samples),
    ));
    let purges = purged(&log);
    let during: Vec<u64> = purges
        .iter()
        .filter(|(at, _)| *at <= ended_at)
        .map(|&(_, n)| n)
        .collect();
    let total: u64 = purges.iter().map(|&(_, n)| n).sum();
    notes.push((
        "storm: purges that deleted rows (server log)".into(),
        format!(
            "{} ({} during the storm, {} rows, at most {} in one); {total} rows in all; \
             {} ended at opening by the per-user bound (logins - purged - left)",
            purges.len(),
            during.len(),
            during.iter().sum::<u64>(),
            purges.iter().map(|&(_, n)| n).max().unwrap_or(0),
            opened.saturating_sub(total + u64::try_from(left).unwrap_or(0)),
        ),
    ));
    let statements = after.since(&before);
    if statements.count > 0 {
        notes.push((
            "storm: purge statement (produto_db_query_duration_seconds, query=purge_sessions)"
                .into(),
            format!(
                "{} run, {:.2} ms mean, each within {} ms",
                statements.count,
                statements.sum * 1000.0 / statements.count as f64,
                statements
                    .within()
                    .map_or("?".into(), |le| format!("{}", le * 1000.0)),
            ),
        ));
    }
    targets.push(Target::at_most(
        format!("storm: peak rows of sessoes / bound ({users} users × {STORM_MAX_PER_USER})"),
        peak as f64,
        "",
        bound as f64,
    ));
    targets.push(Target::at_most(
        format!(
            "storm: rows left within {} of the last login (lifetime + 2 purge intervals)",
            duration(drain)
        ),
        left as f64,
        "",
        0.0,
    ));
    Ok(())
}

/// The samples one a second, `t: rows`.
fn series(samples: &[(Duration, i64)]) -> String {
    let mut out = Vec::new();
    let mut next = Duration::ZERO;
    for &(t, n) in samples {
        if t >= next {
            out.push(format!("{}: {n}", t.as_secs()));
            next = Duration::from_secs(t.as_secs() + 1);
        }
    }
    out.join(", ")
}

/// The purges the server logged (JSON lines): when each ended and how many rows it deleted.
fn purged(log: &str) -> Vec<(SystemTime, u64)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["message"] == "expired sessions purged")
        .filter_map(|v| {
            let at = humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok()?;
            Some((at, v["deleted"].as_u64()?))
        })
        .collect()
}

/// The purge's statements so far, from `produto_db_query_duration_seconds`.
#[derive(Debug, Default)]
struct PurgeStatements {
    count: u64,
    sum: f64,
    /// Cumulative count by bucket bound (seconds).
    buckets: Vec<(f64, u64)>,
}

impl PurgeStatements {
    fn read(metrics: &str) -> Self {
        let mut s = PurgeStatements::default();
        let name = "produto_db_query_duration_seconds_";
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !rest.contains("query=\"purge_sessions\"") {
                continue;
            }
            let Some(value) = rest
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
            else {
                continue;
            };
            if rest.starts_with("count") {
                s.count = value as u64;
            } else if rest.starts_with("sum") {
                s.sum = value;
            } else if let Some(le) = rest
                .split_once("le=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .and_then(|(le, _)| le.parse::<f64>().ok())
            {
                s.buckets.push((le, value as u64));
            }
        }
        s
    }

    /// The statements between `before` and this.
    fn since(&self, before: &Self) -> Self {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|&&(b, _)| b == le)
                .map_or(0, |&(_, n)| n)
        };
        PurgeStatements {
            count: self.count.saturating_sub(before.count),
            sum: self.sum - before.sum,
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, n.saturating_sub(earlier(le))))
                .collect(),
        }
    }

    /// The smallest bucket bound every statement fell within.
    fn within(&self) -> Option<f64> {
        self.buckets
            .iter()
            .filter(|&&(_, n)| n >= self.count)
            .map(|&(le, _)| le)
            .reduce(f64::min)
    }
}
