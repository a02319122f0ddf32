//! Scenarios 7 and 8: what each request costs the server, against the floors. Health/Check
//! and ObterNivel on the two floors and the two produto servers, loaded by this bench's
//! callers and by h2load, with the server's CPU per request; pgbench's prepared SELECT beside
//! them; and ObterNivel again at each table size of `--users`.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, Instant},
};

use produto::pb::ObterNivelRequest;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

use crate::{
    calls, external,
    report::{Row, Target},
    runner::{self, Group, Outcome},
    server::{Server, cpu_ticks, handled_by_code, postgres_ticks, ticks_to_us},
};

/// The two RPCs compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Check,
    Nivel,
}

impl Method {
    fn scenario(self) -> &'static str {
        match self {
            Method::Check => "7 Health/Check",
            Method::Nivel => "7 ObterNivel",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Method::Check => "/grpc.health.v1.Health/Check",
            Method::Nivel => "/produto.v1.ProdutoService/ObterNivel",
        }
    }

    /// The `grpc_method` label of produto's metrics.
    fn metric(self) -> &'static str {
        match self {
            Method::Check => "Check",
            Method::Nivel => "ObterNivel",
        }
    }

    fn call(self, channels: &[Channel], i: usize) -> runner::Call {
        match self {
            Method::Check => calls::grpc_check(channels, i),
            Method::Nivel => calls::grpc_nivel(channels, i),
        }
    }
}

/// A server under comparison with its client connections.
pub type Under<'a> = (&'a Server, &'a [Channel]);

/// How scenario 7 runs.
pub struct Plan<'a> {
    /// floor-constant, floor-sqlx, plain, batched, in that order, then the Go peer if it runs.
    pub servers: Vec<Under<'a>>,
    /// Concurrent streams (callers for the Rust client).
    pub streams: Vec<usize>,
    pub connections: usize,
    pub rounds: u32,
    pub window: Duration,
    pub pgbench_clients: Vec<usize>,
    pub database_url: &'a str,
    pub h2load: bool,
    pub pgbench: bool,
}

enum Job<'a> {
    Rust(Method, Under<'a>, usize),
    H2(Method, &'a Server, usize),
    Pgbench(usize),
}

/// Sums of the slices of one outside-generator row.
#[derive(Default)]
struct Ext {
    ok: u64,
    done: u64,
    secs: f64,
    /// tps × seconds, for pgbench.
    weighted_tps: f64,
    cpu_ticks: Option<u64>,
    /// PostgreSQL's CPU over the slices (see [`postgres_ticks`]).
    db_ticks: Option<u64>,
    rss_peak: Option<u64>,
    errors: BTreeMap<String, u64>,
}

enum Acc {
    Rust(Option<Outcome>),
    Ext(Ext),
}

/// The request files h2load sends: (ObterNivel for `user1`, Health/Check for "").
struct Frames {
    _dir: tempfile::TempDir,
    nivel: std::path::PathBuf,
    check: std::path::PathBuf,
}

fn frames() -> Result<Frames, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nivel = dir.path().join("obter-nivel.grpc");
    let check = dir.path().join("check.grpc");
    std::fs::write(
        &nivel,
        external::grpc_frame(&ObterNivelRequest {
            usuario: H2LOAD_USER.into(),
        }),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        &check,
        external::grpc_frame(&HealthCheckRequest {
            service: String::new(),
        }),
    )
    .map_err(|e| e.to_string())?;
    Ok(Frames {
        _dir: dir,
        nivel,
        check,
    })
}

/// The one user every h2load ObterNivel asks for (h2load sends the same body each time).
const H2LOAD_USER: &str = "user1";

/// Checks with the Rust client that the exact request h2load sends succeeds on `server`
/// (h2load only sees HTTP 200; the gRPC status is in the trailers).
async fn precheck(channels: &[Channel], method: Method) -> Result<(), String> {
    let channel = channels[0].clone();
    match method {
        Method::Check => {
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            c.check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("Health/Check: {:?}", s.code()))
        }
        Method::Nivel => {
            let mut c = produto::pb::produto_service_client::ProdutoServiceClient::new(channel);
            let r = c
                .obter_nivel(ObterNivelRequest {
                    usuario: H2LOAD_USER.into(),
                })
                .await
                .map_err(|s| format!("ObterNivel: {:?}", s.code()))?;
            // Seeded levels are i % 10.
            (r.get_ref().nivel == 1)
                .then_some(())
                .ok_or_else(|| format!("ObterNivel({H2LOAD_USER}) = {}", r.get_ref().nivel))
        }
    }
}

/// Scenario 7. Rows are cut into `rounds` slices in ABBA order, like scenarios 1-3.
pub async fn run(
    plan: &Plan<'_>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let frames = frames()?;
    let users = calls::USERS.load(std::sync::atomic::Ordering::Relaxed);
    let script = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    writeln!(
        script.as_file(),
        "\\set id random(0, {})\n{};",
        users - 1,
        calls::NIVEL_SQL.replace("$1", "'user' || :id")
    )
    .map_err(|e| e.to_string())?;
    if plan.h2load {
        for (server, channels) in &plan.servers {
            for method in [Method::Check, Method::Nivel] {
                precheck(channels, method)
                    .await
                    .map_err(|e| format!("{}: the h2load request fails: {e}", server.label))?;
            }
        }
        notes.push((
            "h2load".into(),
            format!(
                "{} connections, one thread, closed loop; every ObterNivel asks for {H2LOAD_USER}; gRPC codes of produto's rows from its /metrics (grpc_server_handled_total) before and after; floors have no metrics: the same request was checked OK with the Rust client first",
                plan.connections
            ),
        ));
    }
    let slice = plan.window / plan.rounds.max(1);
    let warmup = (slice / 5).min(Duration::from_secs(1));
    for (n, &streams) in plan.streams.iter().enumerate() {
        let mut jobs = Vec::new();
        for method in [Method::Check, Method::Nivel] {
            for target in &plan.servers {
                jobs.push(Job::Rust(method, *target, streams));
                if plan.h2load {
                    jobs.push(Job::H2(method, target.0, streams));
                }
            }
        }
        if n == 0 && plan.pgbench {
            jobs.extend(plan.pgbench_clients.iter().map(|&c| Job::Pgbench(c)));
        }
        let mut accs: Vec<Acc> = jobs
            .iter()
            .map(|j| match j {
                Job::Rust(..) => Acc::Rust(None),
                _ => Acc::Ext(Ext::default()),
            })
            .collect();
        for round in 0..plan.rounds.max(1) {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..jobs.len()).collect()
            } else {
                (0..jobs.len()).rev().collect()
            };
            for j in order {
                match (&jobs[j], &mut accs[j]) {
                    (Job::Rust(method, (server, channels), c), Acc::Rust(acc)) => {
                        let o = runner::run(
                            vec![Group::new(*c, |i| method.call(channels, i))],
                            warmup,
                            slice,
                            Some(server.pid()),
                        )
                        .await
                        .remove(0);
                        match acc {
                            Some(m) => m.merge(o),
                            None => *acc = Some(o),
                        }
                    }
                    (Job::H2(method, server, s), Acc::Ext(acc)) => {
                        let data = match method {
                            Method::Check => &frames.check,
                            Method::Nivel => &frames.nivel,
                        };
                        h2load_slice(*method, server, data, plan.connections, *s, slice, acc)
                            .await?;
                    }
                    (Job::Pgbench(c), Acc::Ext(acc)) => {
                        // The servers' pools share max_connections with pgbench: where its
                        // clients do not fit, that slice is left out and said so, not fatal.
                        match external::pgbench(plan.database_url, script.path(), *c, slice).await {
                            Ok((tps, processed)) => {
                                let secs = slice.as_secs_f64().round().max(1.0);
                                acc.ok += processed;
                                acc.secs += secs;
                                acc.weighted_tps += tps * secs;
                            }
                            Err(e) => {
                                eprintln!("produto-bench: pgbench, {c} clients: {e}");
                                notes.push((
                                    format!("pgbench, {c} clients"),
                                    format!("a slice left out: {}", first_line(&e)),
                                ));
                            }
                        }
                    }
                    _ => unreachable!("accumulators match their jobs"),
                }
            }
        }
        for (job, acc) in jobs.iter().zip(accs) {
            if let (Job::Pgbench(_), Acc::Ext(e)) = (job, &acc)
                && e.secs == 0.0
            {
                continue; // every slice of it was left out (a note says why)
            }
            rows.push(match (job, acc) {
                (Job::Rust(method, (server, _), _), Acc::Rust(Some(o))) => {
                    Row::from_outcome(method.scenario(), server.label, &o)
                }
                (Job::H2(method, server, s), Acc::Ext(e)) => {
                    let mut row = Row::external(
                        method.scenario(),
                        server.label,
                        "h2load",
                        *s,
                        e.ok,
                        e.ok as f64 / e.secs.max(f64::MIN_POSITIVE),
                    );
                    row.cpu_us_per_req = e
                        .cpu_ticks
                        .filter(|_| e.done > 0)
                        .map(|t| ticks_to_us(t) / e.done as f64);
                    row.db_cpu_us_per_req = e
                        .db_ticks
                        .filter(|_| e.done > 0)
                        .map(|t| ticks_to_us(t) / e.done as f64);
                    row.server_rss_peak_kib = e.rss_peak;
                    row.errors = e.errors;
                    row
                }
                (Job::Pgbench(c), Acc::Ext(e)) => Row::external(
                    "7 SELECT nivel (pgbench)",
                    "postgresql",
                    "pgbench",
                    *c,
                    e.ok,
                    e.weighted_tps / e.secs.max(f64::MIN_POSITIVE),
                ),
                _ => unreachable!("accumulators match their jobs"),
            });
        }
    }
    Ok(())
}

/// The first line of a tool's error (pgbench repeats its connection error per client).
fn first_line(e: &str) -> &str {
    e.lines().next().unwrap_or(e)
}

/// One h2load slice: its requests, the server's CPU around it, and for produto the gRPC
/// codes from /metrics.
async fn h2load_slice(
    method: Method,
    server: &Server,
    data: &std::path::Path,
    connections: usize,
    streams: usize,
    duration: Duration,
    acc: &mut Ext,
) -> Result<(), String> {
    let per_connection = streams.div_ceil(connections.max(1)).max(1);
    let codes_before = match server.admin_addr {
        Some(a) => Some(handled_by_code(a, method.metric()).await?),
        None => None,
    };
    let rss = tokio::spawn(runner::sample_rss(server.pid(), Instant::now() + duration));
    let before = cpu_ticks(server.pid());
    let db_before = postgres_ticks();
    let r = external::h2load(
        server.addr,
        method.path(),
        data,
        connections,
        per_connection,
        duration,
    )
    .await?;
    let after = cpu_ticks(server.pid());
    let db_after = postgres_ticks();
    let ticks = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    let db_ticks = db_before.zip(db_after).map(|(b, a)| a.saturating_sub(b));
    let first = acc.secs == 0.0;
    let add = |sum: Option<u64>, t: Option<u64>| {
        if first {
            t
        } else {
            sum.zip(t).map(|(a, b)| a + b)
        }
    };
    acc.cpu_ticks = add(acc.cpu_ticks, ticks);
    acc.db_ticks = add(acc.db_ticks, db_ticks);
    acc.rss_peak = acc.rss_peak.max(rss.await.ok().flatten());
    acc.done += r.done;
    acc.secs += r.secs;
    let mut ok = r.succeeded;
    for (name, n) in [
        ("http:failed", r.failed),
        ("http:errored", r.errored),
        ("http:timeout", r.timeout),
    ] {
        if n > 0 {
            *acc.errors.entry(name.into()).or_default() += n;
        }
    }
    if let (Some(admin), Some(before)) = (server.admin_addr, codes_before) {
        let after = handled_by_code(admin, method.metric()).await?;
        let mut answered = 0;
        for (code, n) in &after {
            let n = n.saturating_sub(before.get(code).copied().unwrap_or(0));
            answered += n;
            // prometheus-client's label is the code's name ("OK"); either spelling is success.
            if !code.eq_ignore_ascii_case("ok") && n > 0 {
                *acc.errors.entry(format!("grpc:{code}")).or_default() += n;
                ok = ok.saturating_sub(n);
            }
        }
        if answered == 0 {
            return Err(format!(
                "{}: /metrics counted no {} calls during h2load",
                server.label,
                method.metric()
            ));
        }
    }
    acc.ok += ok;
    Ok(())
}

/// The targets of scenario 7: ratios of rows of this run.
pub fn targets(rows: &[Row], plan: &Plan<'_>, targets: &mut Vec<Target>) {
    let load = if plan.h2load { "h2load" } else { "rust" };
    let find = |scenario: &str, variant: &str, load: &str, c: usize| {
        rows.iter().find(|r| {
            r.scenario == scenario && r.variant == variant && r.load == load && r.callers == c
        })
    };
    let cpu = |scenario: &str, variant: &str, c: usize| {
        find(scenario, variant, load, c).and_then(|r| r.cpu_us_per_req)
    };
    for &s in &plan.streams {
        if let (Some(p), Some(f)) = (
            cpu("7 Health/Check", "plain", s),
            cpu("7 Health/Check", "floor-constant", s),
        ) {
            targets.push(Target::at_most(
                format!("Health/Check CPU/req, produto / floor-constant, {load} {s} streams"),
                p / f,
                "x",
                1.10,
            ));
        }
        if let (Some(p), Some(f)) = (
            cpu("7 ObterNivel", "plain", s),
            cpu("7 ObterNivel", "floor-sqlx", s),
        ) {
            targets.push(Target::at_most(
                format!("ObterNivel CPU/req, produto plain / floor-sqlx, {load} {s} streams"),
                p / f,
                "x",
                1.15,
            ));
        }
    }
    // The Go peer: produto's CPU per request at or below Go's, and batching's throughput
    // half again Go's (issue 25).
    for &s in &plan.streams {
        for (scenario, what) in [
            ("7 Health/Check", "Health/Check"),
            ("7 ObterNivel", "ObterNivel"),
        ] {
            if let (Some(p), Some(g)) = (cpu(scenario, "plain", s), cpu(scenario, "go", s)) {
                targets.push(Target::at_most(
                    format!("{what} CPU/req, produto plain / Go, {load} {s} streams"),
                    p / g,
                    "x",
                    1.0,
                ));
            }
        }
        if let (Some(b), Some(g)) = (
            find("7 ObterNivel", "batched", load, s),
            find("7 ObterNivel", "go", load, s),
        ) {
            targets.push(Target::at_least(
                format!("ObterNivel req/s, produto batched / Go, {load} {s} streams"),
                b.rps / g.rps.max(f64::MIN_POSITIVE),
                "x",
                1.5,
            ));
        }
    }
    let best = rows
        .iter()
        .filter(|r| r.load == "pgbench")
        .max_by(|a, b| a.rps.total_cmp(&b.rps));
    if let Some(best) = best {
        for &s in &plan.streams {
            if let Some(b) = find("7 ObterNivel", "batched", load, s) {
                targets.push(Target::at_least(
                    format!(
                        "ObterNivel batched req/s, {load} {s} streams / pgbench best ({} clients)",
                        best.callers
                    ),
                    b.rps / best.rps.max(f64::MIN_POSITIVE),
                    "x",
                    1.0,
                ));
            }
        }
    }
}

/// Scenario 8: ObterNivel on floor-sqlx and both produto servers at each table size, the
/// table grown between sizes. `servers`: floor-sqlx, plain, batched.
#[allow(clippy::too_many_arguments)] // reason: the run's settings, passed through once
pub async fn scale(
    servers: &[Under<'_>],
    sizes: &[u64],
    callers: usize,
    rounds: u32,
    window: Duration,
    grow: impl AsyncFn(u64) -> Result<Duration, String>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<(String, String)>,
    targets: &mut Vec<Target>,
) -> Result<(), String> {
    let mut per_size: Vec<(u64, BTreeMap<&'static str, f64>)> = Vec::new();
    for &size in sizes {
        let took = grow(size).await?;
        if took > Duration::from_millis(1) {
            notes.push((
                format!("table grown to {size} users"),
                format!("{:.1} s", took.as_secs_f64()),
            ));
        }
        let on: Vec<(u32, &[Channel])> = servers.iter().map(|&(s, ch)| (s.pid(), ch)).collect();
        let merged = runner::abba_servers(&on, calls::grpc_nivel, callers, rounds, window).await;
        let mut cpu = BTreeMap::new();
        for ((server, _), o) in servers.iter().zip(merged) {
            let row = Row::from_outcome(format!("8 ObterNivel, {size} users"), server.label, &o);
            if let Some(c) = row.cpu_us_per_req {
                cpu.insert(server.label, c);
            }
            rows.push(row);
        }
        per_size.push((size, cpu));
    }
    if let (Some((small, first)), Some((large, last))) = (per_size.first(), per_size.last())
        && small != large
        && let (Some(f0), Some(f1)) = (first.get("floor-sqlx"), last.get("floor-sqlx"))
    {
        for variant in ["plain", "batched"] {
            if let (Some(p0), Some(p1)) = (first.get(variant), last.get(variant)) {
                targets.push(Target::at_most(
                    format!(
                        "ObterNivel CPU/req growth {small} -> {large} users, {variant} / floor-sqlx's"
                    ),
                    (p1 / p0) / (f1 / f0),
                    "x",
                    1.10,
                ));
            }
        }
    }
    Ok(())
}
