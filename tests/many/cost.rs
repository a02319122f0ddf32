//! The cost per request of PgBouncer and of the transaction-pooling setting: one caller,
//! sequential ObterNivel (one statement each) and VerificarLogin-free, so the figures are
//! round trips, not hashing. Ignored by default (a measurement, not a check):
//! `cargo test --test many -- --ignored --nocapture pgbouncer_cost` (docs/benchmarks.md).

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{
    Backend, TestDb,
    pgbouncer::{self, BouncerSettings, PgBouncer, PoolMode},
    spawn_with, test_config,
};

use crate::bouncer::{database_name, migrate_directly, upstream_port};

const CALLS: usize = 2000;

/// Median and 99th percentile of `CALLS` sequential lookups through a server on `url`.
async fn lookups(url: &str, transaction_pooling: bool) -> (Duration, Duration) {
    let mut config = test_config(url);
    config.no_migrate = true;
    config.db.pgbouncer_transaction_pooling = transaction_pooling;
    config.db.batch_nivel = false;
    let app = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    for _ in 0..200 {
        app.nivel("ana").await.unwrap();
    }
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        assert_eq!(app.nivel("ana").await.unwrap(), 2);
        took.push(started.elapsed());
    }
    took.sort();
    (took[CALLS / 2], took[CALLS * 99 / 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it with --ignored --nocapture"]
async fn pgbouncer_cost_per_request() {
    if !pgbouncer::installed() {
        return;
    }
    let database = TestDb::create(Backend::Postgres).await;
    migrate_directly(&database.url).await;
    {
        let mut config = test_config(&database.url);
        config.no_migrate = true;
        let app = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
        app.wait_for_readiness(ServingStatus::Serving).await;
        app.add_user("ana", "senha-da-ana-1", 2).await.unwrap();
    }
    let name = database_name(&database.url);
    let session = PgBouncer::start(
        upstream_port(),
        &BouncerSettings {
            mode: PoolMode::Session,
            pool_size: 30,
            ..BouncerSettings::default()
        },
    );
    let transaction = PgBouncer::start(upstream_port(), &BouncerSettings::default());
    let runs = [
        ("direct", database.url.clone(), false),
        ("direct, setting on", database.url.clone(), true),
        ("PgBouncer session", session.url(name), false),
        (
            "PgBouncer transaction, setting on",
            transaction.url(name),
            true,
        ),
    ];
    for (what, url, setting) in runs {
        let (p50, p99) = lookups(&url, setting).await;
        eprintln!(
            "{what:<36} ObterNivel, 1 caller, {CALLS} calls: p50 {:.3} ms, p99 {:.3} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

/// user + system CPU time of a process so far (from /proc/<pid>/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// One `produto-server` against two on the same database, through the balancing client: the
/// share of calls each instance took, the servers' CPU per call, and that nothing is lost.
/// Both share this machine's cores, so this shows the cost of a second instance, not a
/// speed-up. Ignored by default:
/// `cargo test --test many -- --ignored --nocapture one_instance_against_two`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it with --ignored --nocapture"]
async fn one_instance_against_two() {
    use futures_util::future::join_all;
    use produto::{
        client::{BalancedClient, ClientSettings},
        pb::{ObterNivelRequest, PoolStatusRequest, pool_service_client::PoolServiceClient},
    };

    use produto_testkit::{ADMIN_TOKEN, process::ServerProcess};

    use crate::Tally;

    const CALLERS: usize = 16;
    const CALLS_PER_CALLER: usize = 1500;
    let database = TestDb::create(Backend::Postgres).await;
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN),
        ("PRODUTO_ARGON2_M_KIB", "1024"),
        ("PRODUTO_ARGON2_T", "1"),
        ("PRODUTO_MAX_CONNECTIONS", "10"),
        ("RUST_LOG", "warn"),
    ];
    let first = ServerProcess::spawn(&env).await;
    let second = ServerProcess::spawn(&env).await;
    // Each instance is ready once it answers AdicionarUsuario (the first adds the user).
    let add_ana_when_ready = |server: &ServerProcess| {
        let channel = server.channel.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer =
                    produto::pb::produto_service_client::ProdutoServiceClient::new(channel.clone())
                        .adicionar_usuario(produto_testkit::admin(
                            produto::pb::AdicionarUsuarioRequest {
                                usuario: "ana".into(),
                                senha: "senha-da-ana-1".into(),
                                nivel: 2,
                            },
                        ))
                        .await;
                match answer {
                    Ok(_) => return,
                    Err(e) if e.code() == tonic::Code::AlreadyExists => return,
                    Err(e) => assert!(Instant::now() < deadline, "never ready: {e:?}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    add_ana_when_ready(&first).await;
    add_ana_when_ready(&second).await;
    let acquires = |server: &ServerProcess| {
        let channel = server.channel.clone();
        async move {
            PoolServiceClient::new(channel)
                .pool_status(PoolStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .acquires_total
        }
    };
    let both = [&first, &second];
    for instances in [1, 2] {
        let servers = &both[..instances];
        let client = BalancedClient::connect(ClientSettings::new(
            servers.iter().map(|s| s.addr.to_string()),
        ))
        .await
        .unwrap();
        for _ in 0..200 {
            let _ = client
                .obter_nivel(ObterNivelRequest {
                    usuario: "ana".into(),
                })
                .await;
        }
        let acquired: Vec<u64> = join_all(both.iter().map(|s| acquires(s))).await;
        let cpu: Vec<Duration> = both.iter().map(|s| cpu_time(s.pid())).collect();
        let started = Instant::now();
        let tallies = join_all((0..CALLERS).map(|_| {
            let client = client.clone();
            async move {
                let mut tally = Tally::default();
                for _ in 0..CALLS_PER_CALLER {
                    let result = client
                        .obter_nivel(ObterNivelRequest {
                            usuario: "ana".into(),
                        })
                        .await;
                    tally.add(&result);
                }
                tally
            }
        }))
        .await;
        let took = started.elapsed();
        let mut tally = Tally::default();
        for t in tallies {
            tally.merge(t);
        }
        let ok = tally.count(tonic::Code::Ok);
        let spent: Duration = both
            .iter()
            .zip(&cpu)
            .map(|(s, before)| cpu_time(s.pid()) - *before)
            .sum();
        let after: Vec<u64> = join_all(both.iter().map(|s| acquires(s))).await;
        let shares: Vec<u64> = after.iter().zip(&acquired).map(|(a, b)| a - b).collect();
        eprintln!(
            "{instances} instance(s): {ok} OK of {} calls in {:.2} s ({:.0}/s), codes {tally:?}; \
             servers' CPU {:.1} µs per call; lookups per instance {shares:?}",
            tally.total(),
            took.as_secs_f64(),
            f64::from(ok) / took.as_secs_f64(),
            spent.as_secs_f64() * 1e6 / f64::from(ok.max(1)),
        );
        assert_eq!(ok, tally.total(), "nothing lost");
    }
}
