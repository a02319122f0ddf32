//! produto's load generator: `cargo bench --bench load -- --duration 5s`.
//!
//! Creates a fresh PostgreSQL database, starts the release `produto-server` twice on it
//! (ObterNivel batching off and on) and, for scenarios 7-8, the two floors (this executable
//! re-run with `--serve-floor`), seeds the users, runs the scenarios in one process, prints a
//! table and the targets, writes JSON, then stops the servers and drops the database.
//! docs/benchmarks.md explains the scenarios and records a run.

mod calls;
mod cost;
mod external;
mod floor;
mod peer;
mod report;
mod runner;
mod server;
mod sessions;
mod timing;
mod traces;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use clap::Parser;
use report::{Row, Target};
use runner::{Group, Outcome};
use server::{BenchDb, Server};
use sqlx::postgres::PgPoolOptions;

/// Load generator for produto-server (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "produto-bench")]
struct Args {
    /// Measured time of each scenario run (a warm-up of a fifth of it, at most 1 s, comes first).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Concurrent callers for scenarios 1-3.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    callers: Vec<usize>,

    /// Scenario 3 (a new connection per request) runs only up to this many callers:
    /// each caller holds a PostgreSQL backend of its own, and max_connections is shared.
    #[arg(long, default_value_t = 32)]
    newconn_max_callers: usize,

    /// Slices each compared measurement is cut into, played in ABBA order (see docs/benchmarks.md).
    #[arg(long, default_value_t = 2)]
    rounds: u32,

    /// PRODUTO_BATCH_NIVEL_LANES of the batched server.
    #[arg(long, default_value_t = 2)]
    batch_lanes: usize,

    /// HTTP/2 connections the gRPC callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Callers of VerificarLogin (scenarios 4, 5 and 10), of AdicionarUsuario (scenario 6) and
    /// of AbrirSessao (scenario 11's storm).
    #[arg(long, default_value_t = 8)]
    login_callers: usize,

    /// Callers of ObterNivel in the mixed scenario (5), and in scenarios 10 and 11 (ObterSessao
    /// too).
    #[arg(long, default_value_t = 32)]
    mixed_callers: usize,

    /// Scenarios to run (1-11); the servers start whatever is chosen. 8 runs only with more
    /// than one `--users` size.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9,10,11")]
    scenarios: Vec<u8>,

    /// How long scenario 11's storm of logins lasts (then up to 10 s more, until the purge
    /// has emptied the sessions table).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    storm: Duration,

    /// Logins of each kind (unknown user, wrong password) in scenario 9, the timing gap.
    #[arg(long, default_value_t = 200)]
    timing_logins: usize,

    /// Table sizes: every scenario runs on the first (smallest); scenario 8 repeats
    /// ObterNivel at each, growing the table in between (10 000 000 users: 1-3 minutes of
    /// seeding and ~2 GB of disk).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    users: Vec<u64>,

    /// Concurrent streams of scenario 7 (h2load: spread over `--connections`).
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    streams: Vec<usize>,

    /// pgbench client counts of scenario 7; the best is the target's reference. Not 128:
    /// PostgreSQL's max_connections (100) is shared with the servers' pools.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
    pgbench_clients: Vec<usize>,

    /// A PostgreSQL URL with the right to create databases; the run's database is made there.
    #[arg(
        long,
        env = "PRODUTO_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,

    /// The Go peer's directory (build.sh, main.go; the proto in ../proto), built under
    /// target/peers/ for scenario 7's `go` rows; skipped with a message where it cannot be.
    #[arg(long, env = "PRODUTO_BENCH_GO_PEER", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/peers/go"))]
    go_peer: PathBuf,

    /// The server binary (by default the release build next to this benchmark).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_produto-server"))]
    server_bin: String,

    /// A server binary without traces (a build of an earlier commit), run beside scenario
    /// 10's servers as its "baseline" row: what "off" costs against no tracing code at all.
    #[arg(long)]
    baseline_bin: Option<String>,

    /// Where the JSON results go.
    #[arg(long, default_value = "target/produto-bench.json")]
    json: PathBuf,

    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,

    /// Internal: serve a floor instead of benchmarking (the bench starts itself this way).
    #[arg(long, hide = true, value_enum)]
    serve_floor: Option<floor::Floor>,

    /// Internal: the floor's address.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    floor_addr: SocketAddr,

    /// Internal: the floor's pool size.
    #[arg(long, hide = true, default_value_t = SERVER_POOL)]
    floor_pool_size: u32,
}

/// produto-server's default PRODUTO_MAX_CONNECTIONS, and so the floor's pool size.
const SERVER_POOL: u32 = 20;

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    if let Some(floor) = args.serve_floor {
        return match floor::serve(
            floor,
            args.floor_addr,
            &args.database_url,
            args.floor_pool_size,
        ) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("produto-bench floor: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    args.users.sort_unstable();
    args.users.dedup();
    if args.users.first().is_none_or(|&n| n < 10) {
        eprintln!("produto-bench: --users needs sizes of at least 10");
        return std::process::ExitCode::FAILURE;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench(args))
}

async fn bench(args: Args) -> std::process::ExitCode {
    let db = match BenchDb::create(&args.database_url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("produto-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = run(&args, &db).await;
    db.drop_database().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("produto-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, db: &BenchDb) -> Result<(), String> {
    let window = args.duration;
    let warmup = (window / 5).min(Duration::from_secs(1));
    let wants = |n: u8| args.scenarios.contains(&n);
    let mut rows: Vec<Row> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut notes: Vec<(String, String)> = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    notes.push(("machine".into(), machine()));
    notes.push((
        "run".into(),
        format!(
            "{window:?} measured per row, in {} ABBA slices each after a warm-up of a fifth of a slice (at most 1 s); {} HTTP/2 connections; server pool 20 connections; {} batch lanes",
            args.rounds, args.connections, args.batch_lanes
        ),
    ));

    // Built before anything is measured: the Go compiler would load the machine.
    let go_bin = if wants(7) {
        match peer::build(&args.go_peer) {
            Ok(bin) => Some(bin),
            Err(e) => {
                let message = format!("not built, its rows are skipped: {e}");
                eprintln!("produto-bench: Go peer {message}");
                notes.push(("Go peer".into(), message));
                None
            }
        }
    } else {
        None
    };

    // The first server creates the schema on the fresh database; the second starts with it
    // present, which is the startup the target is about.
    let plain = Server::start(
        &args.server_bin,
        "plain",
        &db.url,
        &[("PRODUTO_BATCH_NIVEL", "false".into())],
    )
    .await?;
    notes.push((
        "startup, fresh database (migrations run)".into(),
        format!("{:.1} ms", plain.startup.as_secs_f64() * 1000.0),
    ));
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&db.url)
        .await
        .map_err(|e| format!("bench pool: {e}"))?;
    let hash = hash()?;
    seed(&pool, &hash, 0, args.users[0]).await?;
    let batched = Server::start(
        &args.server_bin,
        "batched",
        &db.url,
        &[
            ("PRODUTO_BATCH_NIVEL", "true".into()),
            ("PRODUTO_BATCH_NIVEL_LANES", args.batch_lanes.to_string()),
        ],
    )
    .await?;
    notes.push((
        "startup, schema present".into(),
        format!("{:.1} ms", batched.startup.as_secs_f64() * 1000.0),
    ));
    targets.push(Target::below(
        "startup to SERVING, schema present",
        batched.startup.as_secs_f64() * 1000.0,
        "ms",
        200.0,
    ));
    for s in [&plain, &batched] {
        if let Some((rss, hwm)) = s.rss_kib() {
            notes.push((
                format!("{} server idle after start (VmRSS / VmHWM)", s.label),
                format!("{:.1} / {:.1} MiB", mib(rss), mib(hwm)),
            ));
        }
    }
    let plain_ch = plain.channels(args.connections).await?;
    let batched_ch = batched.channels(args.connections).await?;

    // Every ratio compares runs measured side by side: at each concurrency the runs to be
    // compared are cut into `rounds` slices played in ABBA order (A B C, C B A, ...) and
    // merged, so that the load other processes put on the machine falls on each alike.
    let slice = window / args.rounds.max(1);
    let slice_warmup = (slice / 5).min(Duration::from_secs(1));
    for &c in &args.callers {
        let mut jobs = Vec::new();
        if wants(2) {
            jobs.push(Job::Pool);
        }
        if wants(1) {
            jobs.extend([
                Job::Grpc(&plain, &plain_ch),
                Job::Grpc(&batched, &batched_ch),
            ]);
        }
        if wants(3) && c <= args.newconn_max_callers {
            jobs.push(Job::NewConn);
        }
        let mut merged: Vec<Option<(Outcome, u64)>> = jobs.iter().map(|_| None).collect();
        for round in 0..args.rounds.max(1) {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..jobs.len()).collect()
            } else {
                (0..jobs.len()).rev().collect()
            };
            for j in order {
                let (o, queries) = match jobs[j] {
                    Job::Pool => (
                        one(c, slice_warmup, slice, None, |i| {
                            calls::pool_nivel(&pool, i)
                        })
                        .await,
                        0,
                    ),
                    Job::NewConn => (
                        one(c, slice_warmup, slice, None, |i| {
                            calls::newconn_nivel(&db.url, i)
                        })
                        .await,
                        0,
                    ),
                    Job::Grpc(server, channels) => {
                        let before = acquires(channels).await;
                        let o = one(c, slice_warmup, slice, Some(server.pid()), |i| {
                            calls::grpc_nivel(channels, i)
                        })
                        .await;
                        (o, acquires(channels).await.saturating_sub(before))
                    }
                };
                match &mut merged[j] {
                    Some((m, q)) => {
                        m.merge(o);
                        *q += queries;
                    }
                    slot => *slot = Some((o, queries)),
                }
            }
        }
        for (job, m) in jobs.iter().zip(merged) {
            let Some((o, queries)) = m else { continue };
            let mut row = match job {
                Job::Pool => Row::from_outcome("2 ObterNivel sqlx pool", "ceiling", &o),
                Job::NewConn => Row::from_outcome("3 ObterNivel new conn", "per-request", &o),
                Job::Grpc(server, _) => Row::from_outcome("1 ObterNivel gRPC", server.label, &o),
            };
            if let Job::Grpc(..) = job {
                row.lookups_per_query = Some(o.total as f64 / queries.max(1) as f64);
            }
            rows.push(row);
        }
    }
    for s in [&plain, &batched] {
        if let Some((_, hwm)) = s.rss_kib() {
            notes.push((
                format!("{} server VmHWM after scenarios 1-3", s.label),
                format!("{:.1} MiB", mib(hwm)),
            ));
        }
    }
    pool.close().await;

    if wants(4) {
        let mut raw: Option<(u64, hdrhistogram::Histogram<u64>)> = None;
        let mut login: Option<Outcome> = None;
        for round in 0..args.rounds.max(1) {
            for step in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if step == 0 {
                    let (n, latency) = tokio::task::block_in_place(|| {
                        calls::raw_argon2_verify(&hash, cores, slice_warmup, slice)
                    });
                    match &mut raw {
                        Some((total, h)) => {
                            *total += n;
                            h.add(&latency).expect("same bounds");
                        }
                        None => raw = Some((n, latency)),
                    }
                } else {
                    let o = one(
                        args.login_callers,
                        slice_warmup,
                        slice,
                        Some(plain.pid()),
                        |i| calls::grpc_login(&plain_ch, i),
                    )
                    .await;
                    match &mut login {
                        Some(m) => m.merge(o),
                        None => login = Some(o),
                    }
                }
            }
        }
        let (n, latency) = raw.expect("at least one round");
        let login = login.expect("at least one round");
        let measured = slice * args.rounds.max(1);
        let rate = n as f64 / measured.as_secs_f64();
        rows.push(Row::new(
            "4 argon2 verify, raw",
            format!("{cores} thr"),
            cores,
            n,
            rate,
            &latency,
            BTreeMap::new(),
            None,
        ));
        rows.push(Row::from_outcome("4 VerificarLogin gRPC", "plain", &login));
        targets.push(Target::at_least(
            "VerificarLogin / raw argon2 verify rate",
            login.rps() / rate,
            "x",
            0.9,
        ));
        // The hashing threads' argon2 blocks should go back to the system once logins stop.
        if let Some((rss, hwm)) = plain.rss_kib() {
            let ended = Instant::now();
            let mut settled = rss;
            while ended.elapsed() < Duration::from_secs(5) && mib(settled) >= 40.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                settled = plain.rss_kib().map_or(settled, |(r, _)| r);
            }
            notes.push((
                "plain server after the login burst (VmRSS at its end / VmHWM / VmRSS after)"
                    .into(),
                format!(
                    "{:.1} / {:.1} / {:.1} MiB ({:.2} s later)",
                    mib(rss),
                    mib(hwm),
                    mib(settled),
                    ended.elapsed().as_secs_f64()
                ),
            ));
            targets.push(Target::below(
                "server VmRSS within 5 s of a login burst",
                mib(settled),
                "Mi",
                40.0,
            ));
        }
    }

    if wants(5) {
        for (server, channels) in [(&plain, &plain_ch), (&batched, &batched_ch)] {
            let mut idle: Option<Outcome> = None;
            let mut busy: Option<Vec<Outcome>> = None;
            for round in 0..args.rounds.max(1) {
                for step in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                    if step == 0 {
                        let o = one(
                            args.mixed_callers,
                            slice_warmup,
                            slice,
                            Some(server.pid()),
                            |i| calls::grpc_nivel(channels, i),
                        )
                        .await;
                        match &mut idle {
                            Some(m) => m.merge(o),
                            None => idle = Some(o),
                        }
                    } else {
                        let o = runner::run(
                            vec![
                                Group::new(args.mixed_callers, |i| calls::grpc_nivel(channels, i)),
                                Group::new(args.login_callers, |i| calls::grpc_login(channels, i)),
                            ],
                            slice_warmup,
                            slice,
                            Some(server.pid()),
                        )
                        .await;
                        match &mut busy {
                            Some(m) => {
                                for (m, o) in m.iter_mut().zip(o) {
                                    m.merge(o);
                                }
                            }
                            None => busy = Some(o),
                        }
                    }
                }
            }
            let idle = idle.expect("at least one round");
            let mixed = busy.expect("at least one round");
            rows.push(Row::from_outcome(
                "5 ObterNivel, logins idle",
                server.label,
                &idle,
            ));
            rows.push(Row::from_outcome(
                "5 ObterNivel, logins busy",
                server.label,
                &mixed[0],
            ));
            rows.push(Row::from_outcome(
                "5 VerificarLogin (mixed)",
                server.label,
                &mixed[1],
            ));
            targets.push(Target::at_most(
                format!(
                    "{}: ObterNivel p99 with logins saturating / logins idle",
                    server.label
                ),
                p99(&mixed[0]) / p99(&idle),
                "x",
                3.0,
            ));
        }
    }

    if wants(6) {
        let o = one(args.login_callers, warmup, window, Some(plain.pid()), |i| {
            calls::grpc_add(&plain_ch, i)
        })
        .await;
        rows.push(Row::from_outcome("6 AdicionarUsuario gRPC", "plain", &o));
    }

    if wants(9) {
        let n = args.timing_logins;
        let g = timing::login_gap(&plain_ch[0], n).await?;
        notes.push((
            format!("9 login timing, {n} each, interleaved (ms)"),
            format!(
                "unknown user median {:.2} p90 {:.2}; wrong password median {:.2} p90 {:.2}",
                g.median_a, g.p90_a, g.median_b, g.p90_b
            ),
        ));
        targets.push(Target {
            name: format!(
                "9 login timing: median gap, unknown - wrong password, 95 % interval [{:+.2}, {:+.2}]",
                g.low, g.high
            ),
            measured: g.gap,
            unit: "ms",
            goal: "holds 0".into(),
            met: g.holds_zero(),
        });
    }

    if wants(10) {
        let plan = traces::Plan {
            server_bin: &args.server_bin,
            baseline_bin: args.baseline_bin.as_deref(),
            database_url: &db.url,
            connections: args.connections,
            nivel_callers: args.mixed_callers,
            login_callers: args.login_callers,
            rounds: args.rounds,
            window,
        };
        traces::run(plan, &mut rows, &mut targets, &mut notes).await?;
    }

    if wants(11) {
        let plan = sessions::Plan {
            server_bin: &args.server_bin,
            database_url: &db.url,
            connections: args.connections,
            callers: args.mixed_callers,
            login_callers: args.login_callers,
            rounds: args.rounds,
            window,
            storm: args.storm,
            batched: (&batched, &batched_ch),
        };
        sessions::run(plan, &mut rows, &mut targets, &mut notes).await?;
    }

    // Last: scenario 8 grows the table, which the others must not see.
    if wants(7) || (wants(8) && args.users.len() > 1) {
        floors(
            args,
            db,
            go_bin.as_deref(),
            &plain,
            &plain_ch,
            &batched,
            &batched_ch,
            &hash,
            &mut rows,
            &mut targets,
            &mut notes,
        )
        .await?;
    }

    for s in [&plain, &batched] {
        if let Some((_, hwm)) = s.rss_kib() {
            notes.push((
                format!("{} server VmHWM at the end", s.label),
                format!("{:.1} MiB", mib(hwm)),
            ));
        }
    }
    plain.stop().await;
    batched.stop().await;

    ratio_targets(&rows, args, &mut targets);
    report::print_table(&rows, &targets, &notes);
    let doc = report::json(&rows, &targets, &notes);
    if let Some(dir) = args.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&doc).expect("JSON of plain values"),
    )
    .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    println!("\nJSON: {}", args.json.display());
    Ok(())
}

/// Scenarios 7 and 8: the floors are started for them and stopped after.
#[allow(clippy::too_many_arguments)] // reason: the run's state, handed over once
async fn floors(
    args: &Args,
    db: &BenchDb,
    go_bin: Option<&std::path::Path>,
    plain: &Server,
    plain_ch: &[tonic::transport::Channel],
    batched: &Server,
    batched_ch: &[tonic::transport::Channel],
    hash: &str,
    rows: &mut Vec<Row>,
    targets: &mut Vec<Target>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let constant = Server::start_floor(floor::Floor::Constant, &db.url, SERVER_POOL).await?;
    let sqlx_floor = Server::start_floor(floor::Floor::Sqlx, &db.url, SERVER_POOL).await?;
    let constant_ch = constant.channels(args.connections).await?;
    let sqlx_ch = sqlx_floor.channels(args.connections).await?;
    let go = match go_bin.filter(|_| args.scenarios.contains(&7)) {
        Some(bin) => match Server::start_go(bin, &db.url).await {
            Ok(go) => {
                notes.push((
                    "Go peer".into(),
                    format!(
                        "grpc-go + pgxpool (max 20, min 1), {}; started in {:.1} ms",
                        bin.display(),
                        go.startup.as_secs_f64() * 1000.0
                    ),
                ));
                Some(go)
            }
            Err(e) => {
                eprintln!("produto-bench: Go peer: {e}; its rows are skipped");
                notes.push(("Go peer".into(), format!("did not start: {e}")));
                None
            }
        },
        None => None,
    };
    let go_ch = match &go {
        Some(go) => Some(go.channels(args.connections).await?),
        None => None,
    };
    if args.scenarios.contains(&7) {
        let h2load = external::available("h2load", "--version");
        let pgbench = external::available("pgbench", "--version");
        for (tool, there, package) in [
            ("h2load", h2load, "nghttp2-client"),
            ("pgbench", pgbench, "postgresql-client"),
        ] {
            if !there {
                let message =
                    format!("not installed: its rows are skipped (Debian package {package})");
                eprintln!("produto-bench: {tool} {message}");
                notes.push((tool.into(), message));
            }
        }
        let mut servers: Vec<cost::Under> = vec![
            (&constant, &constant_ch),
            (&sqlx_floor, &sqlx_ch),
            (plain, plain_ch),
            (batched, batched_ch),
        ];
        if let (Some(go), Some(go_ch)) = (&go, &go_ch) {
            servers.push((go, go_ch));
        }
        let plan = cost::Plan {
            servers,
            streams: args.streams.clone(),
            connections: args.connections,
            rounds: args.rounds,
            window: args.duration,
            pgbench_clients: args.pgbench_clients.clone(),
            database_url: &db.url,
            h2load,
            pgbench,
        };
        cost::run(&plan, rows, notes).await?;
        cost::targets(rows, &plan, targets);
    }
    if args.scenarios.contains(&8) && args.users.len() > 1 {
        let grow = async |size: u64| {
            let current = calls::USERS.load(Relaxed);
            if size <= current {
                return Ok(Duration::ZERO);
            }
            let started = Instant::now();
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .map_err(|e| format!("seeding pool: {e}"))?;
            let seeded = seed(&pool, hash, current, size).await;
            pool.close().await;
            seeded.map(|()| started.elapsed())
        };
        let callers = args.streams.first().copied().unwrap_or(32);
        cost::scale(
            &[
                (&sqlx_floor, &sqlx_ch),
                (plain, plain_ch),
                (batched, batched_ch),
            ],
            &args.users,
            callers,
            args.rounds,
            args.duration,
            grow,
            rows,
            notes,
            targets,
        )
        .await?;
    }
    constant.stop().await;
    sqlx_floor.stop().await;
    if let Some(go) = go {
        go.stop().await;
    }
    Ok(())
}

/// One of the runs compared at a given concurrency in scenarios 1-3.
enum Job<'a> {
    Pool,
    Grpc(&'a Server, &'a [tonic::transport::Channel]),
    NewConn,
}

/// The server's pool acquisitions so far (one per query it ran; probes use their own
/// connection), from PoolStatus.
async fn acquires(channels: &[tonic::transport::Channel]) -> u64 {
    let mut client = produto::pb::pool_service_client::PoolServiceClient::new(channels[0].clone());
    client
        .pool_status(produto::pb::PoolStatusRequest {})
        .await
        .map_or(0, |r| r.into_inner().acquires_total)
}

/// One group of `callers` running `make`.
async fn one(
    callers: usize,
    warmup: Duration,
    window: Duration,
    pid: Option<u32>,
    make: impl FnMut(usize) -> runner::Call,
) -> Outcome {
    runner::run(vec![Group::new(callers, make)], warmup, window, pid)
        .await
        .remove(0)
}

/// The targets that compare rows of scenarios 1-3.
fn ratio_targets(rows: &[Row], args: &Args, targets: &mut Vec<Target>) {
    let find = |scenario: &str, variant: &str, callers: usize| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.variant == variant && r.callers == callers)
    };
    let grpc = "1 ObterNivel gRPC";
    let ceiling = "2 ObterNivel sqlx pool";
    if let (Some(g), Some(p)) = (find(grpc, "plain", 32), find(ceiling, "ceiling", 32)) {
        targets.push(Target::at_least(
            "ObterNivel gRPC (plain) / sqlx pool ceiling, 32 callers",
            g.rps / p.rps,
            "x",
            0.5,
        ));
    }
    let newconn_at = args
        .callers
        .iter()
        .copied()
        .filter(|&c| c <= args.newconn_max_callers)
        .max();
    if let Some(c) = newconn_at
        && let (Some(g), Some(n)) = (
            find(grpc, "plain", c),
            find("3 ObterNivel new conn", "per-request", c),
        )
    {
        targets.push(Target::at_least(
            format!("ObterNivel gRPC (pooled) / new connection per request, {c} callers"),
            g.rps / n.rps.max(f64::MIN_POSITIVE),
            "x",
            50.0,
        ));
    }
    for variant in ["plain", "batched"] {
        if let Some(k) = find(grpc, variant, 128).and_then(|r| r.server_rss_peak_kib) {
            targets.push(Target::below(
                format!("server peak RSS under 128 callers ({variant}), 20 pool connections"),
                mib(k),
                "Mi",
                40.0,
            ));
        }
    }
    for c in [32, 128] {
        if let (Some(b), Some(p), Some(g)) = (
            find(grpc, "batched", c),
            find(ceiling, "ceiling", c),
            find(grpc, "plain", c),
        ) {
            targets.push(Target::above(
                format!("ObterNivel gRPC (batched) / sqlx pool ceiling, {c} callers"),
                b.rps / p.rps,
                "x",
                1.0,
            ));
            targets.push(Target::at_most(
                format!("ObterNivel p99 batched / plain, {c} callers"),
                b.p99() as f64 / g.p99().max(1) as f64,
                "x",
                1.0,
            ));
        }
    }
}

/// One real argon2id hash of the seeded password, with the server's default parameters,
/// shared by every seeded user (hashing each through AdicionarUsuario would take minutes).
fn hash() -> Result<String, String> {
    use argon2::PasswordHasher;
    use password_hash::{SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Ok(calls::argon2()
        .hash_password(calls::PASSWORD.as_bytes(), &salt)
        .map_err(|e| e.to_string())?
        .to_string())
}

/// Adds users `user{from}` … `user{to - 1}` straight into the table (level i % 10), then
/// ANALYZE; the callers pick among `user0` … `user{to - 1}` from then on.
async fn seed(pool: &sqlx::PgPool, hash: &str, from: u64, to: u64) -> Result<(), String> {
    let bound = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO usuarios (usuario, senha_hash, nivel) \
         SELECT 'user' || i, $1, i % 10 FROM generate_series($2, $3 - 1) AS i",
    )
    .bind(hash)
    .bind(bound(from))
    .bind(bound(to))
    .execute(pool)
    .await
    .map_err(|e| format!("seeding users: {e}"))?;
    sqlx::query("ANALYZE usuarios")
        .execute(pool)
        .await
        .map_err(|e| format!("analyze: {e}"))?;
    calls::USERS.store(to, Relaxed);
    Ok(())
}

fn p99(o: &Outcome) -> f64 {
    o.latency.value_at_quantile(0.99).max(1) as f64
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU model and core count, for the record.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}
