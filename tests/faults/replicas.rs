//! Read replicas against a real primary and a real streaming standby (throwaway clusters):
//! reads go to the standby, a fresh user is never reported missing, a stopped or lagging
//! standby loses its reads and gets them back, and a promoted standby takes the writes
//! without a restart.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use produto::{Settings, pb::produto_service_client::ProdutoServiceClient};
use produto_testkit::{
    TestApp,
    cluster::{self, PgCluster},
};
use tonic::{Code, transport::Endpoint};

use super::{
    SERIAL, ServingStatus, Tally, Writers, app_on, code_of, fault_config, stored_usernames,
};

/// The primary is server 0, the standby server 1.
const STANDBY: usize = 1;

/// Generous bound on every wait for something the probe must notice.
const NOTICE_BOUND: Duration = Duration::from_secs(30);

/// A throwaway primary and a streaming standby of it.
async fn primary_and_standby() -> (Arc<PgCluster>, Arc<PgCluster>) {
    tokio::task::spawn_blocking(|| {
        let primary = PgCluster::start();
        let standby = PgCluster::standby_of(&primary);
        (Arc::new(primary), Arc::new(standby))
    })
    .await
    .unwrap()
}

fn replica_config(primary: &PgCluster, standby: &PgCluster) -> Settings {
    let mut config = fault_config(&primary.url());
    config.db.replica_urls = vec![standby.url()];
    config
}

/// A ready app whose standby has replayed the migrations and takes reads.
async fn app_with_standby(config: Settings, primary: &PgCluster, standby: &PgCluster) -> TestApp {
    let app = app_on(config).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;
    wait_until(&app, "the standby takes reads", |app| {
        app.db.servers().readable(STANDBY)
    })
    .await;
    app
}

/// Waits, within [`NOTICE_BOUND`], until `condition` holds of the app.
async fn wait_until(app: &TestApp, what: &str, condition: impl Fn(&TestApp) -> bool) {
    let started = Instant::now();
    while !condition(app) {
        assert!(
            started.elapsed() < NOTICE_BOUND,
            "{what}: not after {NOTICE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads routed to server `server` (0 when the app has no such server).
fn reads_on(app: &TestApp, server: usize) -> u64 {
    app.db.servers().all().get(server).map_or(0, |s| s.reads())
}

/// Adds `n` users named `{prefix}{i}` with level `i % 3`.
async fn add_users(app: &TestApp, prefix: &str, n: usize) {
    for i in 0..n {
        app.add_user(&format!("{prefix}{i}"), "senha-forte-1", (i % 3) as i32)
            .await
            .unwrap();
    }
}

/// Callers that look levels up in a loop until stopped, counting every answer; a level
/// that is wrong fails the test.
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<Tally>,
}

impl Readers {
    fn start(app: &TestApp, callers: usize, prefix: &str, users: usize) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..callers {
            let (stop, mut client, prefix) = (stop.clone(), app.produto.clone(), prefix.to_owned());
            tasks.spawn(async move {
                let mut tally = Tally::default();
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    let n = i % users;
                    i += 1;
                    let started = Instant::now();
                    let result = client
                        .obter_nivel(produto::pb::ObterNivelRequest {
                            usuario: format!("{prefix}{n}"),
                        })
                        .await;
                    if let Ok(r) = &result {
                        assert_eq!(r.get_ref().nivel, (n % 3) as i32, "level of {prefix}{n}");
                    }
                    tally.add(code_of(&result), started.elapsed());
                }
                tally
            });
        }
        Readers { stop, tasks }
    }

    /// Stops them and sums their tallies.
    async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        while let Some(tally) = self.tasks.join_next().await {
            let tally = tally.unwrap();
            for (code, n) in tally.codes {
                *total.codes.entry(code).or_default() += n;
            }
            total.slowest = total.slowest.max(tally.slowest);
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_by_the_replica() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let mut config = replica_config(&primary, &standby);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = app_with_standby(config, &primary, &standby).await;
    add_users(&app, "r", 10).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;

    let (on_primary, on_standby) = (reads_on(&app, 0), reads_on(&app, STANDBY));
    for i in 0..100 {
        assert_eq!(
            app.nivel(&format!("r{}", i % 10)).await.unwrap(),
            (i % 10) % 3
        );
    }
    for i in 0..10 {
        assert_eq!(
            app.login(&format!("r{i}"), "senha-forte-1").await.unwrap(),
            (true, i % 3)
        );
    }
    // Every level lookup went to the standby: none needed the primary (no miss to confirm).
    // The logins read their credentials on the primary, where their attempts are counted
    // (so an unknown user costs the one read a known one does: see
    // `an_unknown_user_costs_the_reads_a_known_one_does`).
    assert_eq!(reads_on(&app, STANDBY) - on_standby, 100);
    let on_primary_after = reads_on(&app, 0);
    assert_eq!(on_primary_after - on_primary, 10);
    // And the standby itself saw produto's connections.
    let sessions = cluster::sql(
        &standby.url(),
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'produto'",
    )
    .await;
    assert!(sessions.parse::<u32>().unwrap() >= 1, "{sessions}");
    // PoolStatus tells the same, per server, without credentials.
    let status = app.pool_status().await;
    let roles: Vec<&str> = status.pools.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, ["primary", "replica"]);
    let replica = &status.pools[STANDBY];
    assert_eq!(
        replica.address,
        format!("127.0.0.1:{}/postgres", standby.port)
    );
    assert!(replica.healthy && replica.readable, "{replica:?}");
    assert!(replica.replay_lag_ms >= 0, "{replica:?}");
    assert!(replica.reads_total >= 100, "{replica:?}");
    assert_eq!(status.max_connections, status.pools[0].max_connections);
    // So do /metrics and /health.
    let admin = app.admin_addr.unwrap();
    let (code, metrics) = produto_testkit::http::http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let series = format!(
        "produto_db_server_reads_total{{pool=\"127.0.0.1:{}/postgres\",role=\"replica\"}} {}",
        standby.port, replica.reads_total
    );
    assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    assert!(metrics.contains("produto_db_server_readable{"), "{metrics}");
    let (code, health) = produto_testkit::http::http_get(admin, "/health").await;
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["servers"][1]["role"], "replica", "{health}");
    assert_eq!(health["servers"][1]["readable"], true, "{health}");
    // An unknown user is still NOT_FOUND (confirmed on the primary).
    assert_eq!(
        app.nivel("nobody").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(reads_on(&app, 0), on_primary_after + 1);
}

/// Pairs of AdicionarUsuario then, at once, VerificarLogin and ObterNivel, each pair on a
/// fresh connection, while the standby's replay is paused (it keeps taking reads: the lag
/// bound is set far away): not one answers "unknown user" or NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_just_added_is_never_reported_missing() {
    const PAIRS: usize = 1000;
    const CALLERS: usize = 8;
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let mut config = replica_config(&primary, &standby);
    config.db.replica_max_lag = Duration::from_secs(3600);
    let app = app_with_standby(config, &primary, &standby).await;
    cluster::pause_replay(&standby.url()).await;
    let on_standby = reads_on(&app, STANDBY);

    let addr = app.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        tasks.spawn(async move {
            for i in (c..PAIRS).step_by(CALLERS) {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client = ProdutoServiceClient::new(channel);
                let usuario = format!("fresh{i}");
                client
                    .adicionar_usuario(super::admin(produto::pb::AdicionarUsuarioRequest {
                        usuario: usuario.clone(),
                        senha: "senha-forte-1".into(),
                        nivel: 2,
                    }))
                    .await
                    .unwrap();
                let login = client
                    .verificar_login(produto::pb::VerificarLoginRequest {
                        usuario: usuario.clone(),
                        senha: "senha-forte-1".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(login.valido, "{usuario} not found right after it was added");
                assert_eq!(login.nivel, 2);
                let nivel = client
                    .obter_nivel(produto::pb::ObterNivelRequest { usuario })
                    .await
                    .unwrap();
                assert_eq!(nivel.into_inner().nivel, 2);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The level lookups did go to the (stale) standby first (batched: at most one read per
    // caller at a time; logins read the primary, where they count their attempts).
    assert!(reads_on(&app, STANDBY) - on_standby >= (PAIRS / CALLERS) as u64);
    assert!(app.db.servers().readable(STANDBY));
    cluster::resume_replay(&standby.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_loses_its_reads_to_the_primary() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let app = app_with_standby(replica_config(&primary, &standby), &primary, &standby).await;
    add_users(&app, "s", 10).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;

    let readers = Readers::start(&app, 8, "s", 10);
    wait_until(&app, "the standby serves the load", |app| {
        reads_on(app, STANDBY) > 100
    })
    .await;
    let killer = standby.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    wait_until(&app, "the probe notices the standby is down", |app| {
        !app.db.servers().get(STANDBY).reachable()
    })
    .await;
    let before = readers.finish().await;

    // From now on every read succeeds, on the primary.
    let on_primary = reads_on(&app, 0);
    let on_standby = reads_on(&app, STANDBY);
    let readers = Readers::start(&app, 8, "s", 10);
    wait_until(&app, "the primary serves the load", |app| {
        reads_on(app, 0) > on_primary + 200
    })
    .await;
    let after = readers.finish().await;
    assert!(
        after.only(&[Code::Ok]),
        "after the probe noticed: {after:?}"
    );
    assert_eq!(
        reads_on(&app, STANDBY),
        on_standby,
        "no read tried the standby"
    );
    // Before it noticed, a read that failed on the standby was retried on the primary.
    assert!(
        before.only(&[Code::Ok]),
        "before the probe noticed: {before:?}"
    );
    assert_eq!(
        app.health_of("").await.unwrap(),
        ServingStatus::Serving,
        "still ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_fails_reads_go_on_and_a_promoted_standby_takes_the_writes() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    // Synchronous replication: a write is acknowledged only once the standby has it, which
    // is what makes "no acknowledged write lost" hold across a failover.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&primary.url()).await.unwrap();
        sqlx::raw_sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut config = replica_config(&primary, &standby);
    config.throttle.max_failures = 5;
    // The standby is a failover candidate: once promoted, it takes the writes.
    config.db.replica_failover = true;
    let app = app_with_standby(config, &primary, &standby).await;
    add_users(&app, "p", 10).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;

    let writers = Writers::start(4, &app.produto);
    let readers = Readers::start(&app, 4, "p", 10);
    wait_until(&app, "writes are acknowledged", |_| {
        writers.acked_so_far() > 20
    })
    .await;
    let killer = primary.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    wait_until(&app, "the probe notices the primary is down", |app| {
        !app.db.servers().get(0).reachable()
    })
    .await;
    let before = readers.finish().await;
    assert!(
        before.only(&[Code::Ok, Code::Unavailable]),
        "reads while the primary died: {before:?}"
    );

    // The outage: reads and logins from the standby, writes UNAVAILABLE.
    let acked_in_outage = writers.acked_so_far();
    let readers = Readers::start(&app, 4, "p", 10);
    for i in 0..10 {
        assert_eq!(
            app.login(&format!("p{i}"), "senha-forte-1").await.unwrap(),
            (true, i % 3)
        );
    }
    assert!(!app.login("p1", "wrong password").await.unwrap().0);
    let err = app
        .add_user("during", "senha-forte-1", 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let outage = readers.finish().await;
    assert!(outage.only(&[Code::Ok]), "reads in the outage: {outage:?}");
    assert!(outage.count(Code::Ok) > 0);
    assert_eq!(
        writers.acked_so_far(),
        acked_in_outage,
        "no write acknowledged"
    );
    assert_eq!(
        app.health_of("").await.unwrap(),
        ServingStatus::Serving,
        "still ready"
    );

    // The operator promotes the standby: writes resume, no restart.
    let promoter = standby.clone();
    tokio::task::spawn_blocking(move || promoter.promote())
        .await
        .unwrap();
    cluster::wait_until_primary(&standby.url()).await;
    wait_until(&app, "writes resume on the promoted standby", |_| {
        writers.acked_so_far() > acked_in_outage + 20
    })
    .await;
    assert_eq!(app.db.servers().primary_index(), STANDBY);
    let (tally, acked) = writers.finish().await;
    assert!(
        tally.only(&[Code::Ok, Code::Unavailable]),
        "writes: {tally:?}"
    );
    let stored = stored_usernames(&standby.url()).await;
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let status = app.pool_status().await;
    let roles: Vec<&str> = status.pools.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, ["replica", "primary"], "{status:?}");
    assert!(status.healthy, "the fields of old describe the new primary");
    assert!(!status.pools[0].healthy);
    app.add_user("after", "senha-forte-1", 1).await.unwrap();
    assert_eq!(app.nivel("after").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_the_lag_bound_gets_no_reads_until_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let mut config = replica_config(&primary, &standby);
    config.db.replica_max_lag = Duration::from_millis(500);
    let app = app_with_standby(config, &primary, &standby).await;
    add_users(&app, "l", 10).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;
    wait_until(&app, "the standby takes reads", |app| {
        app.db.servers().readable(STANDBY)
    })
    .await;

    cluster::pause_replay(&standby.url()).await;
    // A write the standby receives but does not replay: its lag grows from now.
    app.add_user("unreplayed", "senha-forte-1", 1)
        .await
        .unwrap();
    wait_until(&app, "the probe sees the lag past the bound", |app| {
        !app.db.servers().readable(STANDBY)
    })
    .await;
    let lag = app.db.servers().get(STANDBY).lag().unwrap();
    assert!(lag > Duration::from_millis(500), "{lag:?}");
    let on_standby = reads_on(&app, STANDBY);
    for i in 0..50 {
        assert_eq!(
            app.nivel(&format!("l{}", i % 10)).await.unwrap(),
            (i % 10) % 3
        );
    }
    assert_eq!(app.nivel("unreplayed").await.unwrap(), 1);
    assert_eq!(
        reads_on(&app, STANDBY),
        on_standby,
        "no read on the lagging standby"
    );

    cluster::resume_replay(&standby.url()).await;
    wait_until(&app, "the standby takes reads again", |app| {
        app.db.servers().readable(STANDBY)
    })
    .await;
    for i in 0..50 {
        assert_eq!(
            app.nivel(&format!("l{}", i % 10)).await.unwrap(),
            (i % 10) % 3
        );
    }
    assert_eq!(reads_on(&app, STANDBY), on_standby + 50);
}

/// One measured load: `callers` closed-loop callers of `call` for `duration`.
async fn measure<F, Fut>(callers: usize, duration: Duration, call: F) -> (u64, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let call = call.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                call(c + callers * n as usize).await;
                n += 1;
            }
            n
        });
    }
    let mut calls = 0;
    while let Some(n) = tasks.join_next().await {
        calls += n.unwrap();
    }
    (calls, started.elapsed())
}

/// Reads through one replica versus the primary alone: calls per second, the CPU each
/// PostgreSQL server spent per call, and the share of reads each server took. Printed, not
/// asserted (the machine is shared). `PRODUTO_MEASURE_SECS` (default 5) per slice; slices
/// run alone, replica, replica, alone, so outside load falls on both sides.
///
///     cargo test --test faults measure_reads -- --ignored --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn measure_reads_through_a_replica() {
    const USERS: usize = 1000;
    const CALLERS: usize = 16;
    let _serial = SERIAL.lock().await;
    let secs: u64 = std::env::var("PRODUTO_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let slice = Duration::from_secs(secs);
    let (primary, standby) = primary_and_standby().await;
    let alone = app_on(fault_config(&primary.url())).await;
    let replicated = app_with_standby(replica_config(&primary, &standby), &primary, &standby).await;
    add_users(&alone, "m", 20).await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&primary.url()).await.unwrap();
        sqlx::query(
            "INSERT INTO usuarios (usuario, senha_hash, nivel) \
             SELECT 'n' || i, 'not-a-hash', i % 3 FROM generate_series(0, $1 - 1) AS i",
        )
        .bind(USERS as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;

    // (rpc, setup) -> [calls, seconds, primary cpu, standby cpu, primary reads, standby reads]
    let mut rows: std::collections::BTreeMap<(&str, &str), [f64; 6]> = Default::default();
    for (setup, app) in [
        ("primary alone", &alone),
        ("one replica", &replicated),
        ("one replica", &replicated),
        ("primary alone", &alone),
    ] {
        for rpc in ["ObterNivel", "VerificarLogin"] {
            let client = app.produto.clone();
            let cpu = (primary.cpu_time(), standby.cpu_time());
            let reads = (reads_on(app, 0), reads_on(app, STANDBY));
            let (calls, took) = if rpc == "ObterNivel" {
                measure(CALLERS, slice, move |i| {
                    let mut client = client.clone();
                    async move {
                        client
                            .obter_nivel(produto::pb::ObterNivelRequest {
                                usuario: format!("n{}", i % USERS),
                            })
                            .await
                            .unwrap();
                    }
                })
                .await
            } else {
                measure(CALLERS, slice, move |i| {
                    let mut client = client.clone();
                    async move {
                        let r = client
                            .verificar_login(produto::pb::VerificarLoginRequest {
                                usuario: format!("m{}", i % 20),
                                senha: "senha-forte-1".into(),
                            })
                            .await
                            .unwrap();
                        assert!(r.into_inner().valido);
                    }
                })
                .await
            };
            let row = rows.entry((rpc, setup)).or_default();
            for (k, v) in [
                calls as f64,
                took.as_secs_f64(),
                (primary.cpu_time() - cpu.0).as_secs_f64(),
                (standby.cpu_time() - cpu.1).as_secs_f64(),
                (reads_on(app, 0) - reads.0) as f64,
                (reads_on(app, STANDBY) - reads.1) as f64,
            ]
            .into_iter()
            .enumerate()
            {
                row[k] += v;
            }
        }
    }
    println!(
        "{CALLERS} callers, {secs} s slices x 2, {USERS} users; CPU is PostgreSQL's (all its processes)"
    );
    println!(
        "| RPC | setup | calls/s | primary CPU µs/call | standby CPU µs/call | reads on primary | reads on standby |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for ((rpc, setup), [calls, secs, cpu_p, cpu_s, reads_p, reads_s]) in rows {
        let share = |r: f64| 100.0 * r / (reads_p + reads_s).max(1.0);
        println!(
            "| {rpc} | {setup} | {:.0} | {:.0} | {:.0} | {:.0} % | {:.0} % |",
            calls / secs,
            cpu_p * 1e6 / calls,
            cpu_s * 1e6 / calls,
            share(reads_p),
            share(reads_s),
        );
    }
}

/// With a replica, a login reads the same servers, as often, whether the user exists or not:
/// before issue 23 an unknown user's lookup missed on the standby and was asked again of the
/// primary, one query (and a round trip) more than a known user's: a timing oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_costs_the_reads_a_known_one_does() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let app = app_with_standby(replica_config(&primary, &standby), &primary, &standby).await;
    add_users(&app, "k", 1).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;
    let reads = |app: &TestApp| (reads_on(app, 0), reads_on(app, STANDBY));
    let mut seen = Vec::new();
    for i in 0..8 {
        for (usuario, kind) in [
            (format!("ninguem{i}"), "unknown"),
            ("k0".to_owned(), "known"),
        ] {
            let before = reads(&app);
            assert!(!app.login(&usuario, "senha-errada").await.unwrap().0);
            let after = reads(&app);
            seen.push((kind, (after.0 - before.0, after.1 - before.1)));
        }
    }
    eprintln!("reads per login (primary, standby): {seen:?}");
    assert!(
        seen.iter().all(|(_, reads)| *reads == (1, 0)),
        "logins read differently: {seen:?}"
    );
}

/// The primary stopped, reads going on from the standby: 20 wrong guesses from one address
/// and then the right password are counted in memory with the same limit (5), and the right
/// password is refused; the gauge and the counter say so. Once the primary is back, with no
/// login, the gauge goes back to 0 and the database gets the outage's failures (so an alert on
/// the gauge ends with the outage); the next login is counted there: still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_primary_is_down_attempts_are_counted_in_memory() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    let mut config = replica_config(&primary, &standby);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = app_with_standby(config, &primary, &standby).await;
    add_users(&app, "m", 2).await;
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;

    let killer = primary.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    wait_until(&app, "the probe notices the primary is down", |app| {
        !app.db.servers().get(0).reachable()
    })
    .await;
    // Another user logs in meanwhile: throttled in memory, not refused.
    assert_eq!(app.login("m1", "senha-forte-1").await.unwrap(), (true, 1));
    let before = app.login_counters();
    for _ in 0..20 {
        assert_eq!(app.login("m0", "wrong password").await.unwrap(), (false, 0));
    }
    assert_eq!(app.login("m0", "senha-forte-1").await.unwrap(), (false, 0));
    let during = app.login_counters();
    assert_eq!(
        during.password_verifications_total - before.password_verifications_total,
        5,
        "no more guesses checked than with the database up"
    );
    assert_eq!(
        during.logins_throttled_total - before.logins_throttled_total,
        16
    );
    assert!(during.throttle_in_memory);
    assert_eq!(during.logins_counted_in_memory_total, 22);
    let admin = app.admin_addr.unwrap();
    let (_, metrics) = produto_testkit::http::http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("produto_login_throttle_in_memory 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("produto_login_attempts_in_memory_total 22\n"),
        "{metrics}"
    );

    let starter = primary.clone();
    tokio::task::spawn_blocking(move || starter.start_again())
        .await
        .unwrap();
    wait_until(&app, "the probe finds the primary again", |app| {
        app.db.servers().get(0).reachable() && app.db.servers().primary_index() == 0
    })
    .await;
    // No login: the probe's finding alone moves counting back, the failures with it.
    let started = Instant::now();
    loop {
        let (_, metrics) = produto_testkit::http::http_get(admin, "/metrics").await;
        if metrics.contains("produto_login_throttle_in_memory 0\n") {
            break;
        }
        assert!(
            started.elapsed() < NOTICE_BOUND,
            "the gauge stays 1 with the primary back: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the gauge went back to 0 {:?} after the probe found the primary, with no login",
        started.elapsed()
    );
    let failures = cluster::sql(
        &primary.url(),
        "SELECT tentativas FROM login_tentativas WHERE usuario = 'm0' AND identidade <> '*'",
    )
    .await;
    assert_eq!(failures, "5", "the outage's failures, added with no login");
    assert_eq!(
        app.login_counters().password_verifications_total,
        during.password_verifications_total
    );
    // Counted in the database now (a login may still meet a connection the restart cut, and
    // be counted in memory), the outage's five failures with it: refused all along.
    let started = Instant::now();
    loop {
        assert_eq!(app.login("m0", "senha-forte-1").await.unwrap(), (false, 0));
        if !app.login_counters().throttle_in_memory {
            break;
        }
        assert!(
            started.elapsed() < NOTICE_BOUND,
            "never counted in the database again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = app.login_counters();
    assert_eq!(
        after.password_verifications_total,
        during.password_verifications_total
    );
    let failures = cluster::sql(
        &primary.url(),
        "SELECT tentativas FROM login_tentativas WHERE usuario = 'm0' AND identidade <> '*'",
    )
    .await;
    assert_eq!(failures, "5");
    let (_, metrics) = produto_testkit::http::http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("produto_login_throttle_in_memory 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_finds_the_primary_behind_a_dead_host_and_a_standby() {
    let _serial = SERIAL.lock().await;
    let (primary, standby) = primary_and_standby().await;
    // Nothing listens on the first host's port; the second is a standby, which
    // target_session_attrs=read-write refuses; the third is the primary.
    let dead = cluster::free_port();
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        standby.port, primary.port
    );
    let mut config = fault_config(&url);
    // The standby is also listed for reads, as multi-host setups list every node in both.
    config.db.replica_urls = vec![format!(
        "postgres://postgres@127.0.0.1:{}/postgres?target_session_attrs=standby",
        standby.port
    )];
    // Long enough that a start-up waiting on the dead host would show.
    config.db.acquire_timeout = Duration::from_secs(5);
    config.probe_interval = Duration::from_secs(2);
    let started = Instant::now();
    let app = app_on(config).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "ready after {took:?}: start-up waited on a dead host"
    );
    assert_eq!(app.db.servers().primary_index(), 2);
    add_users(&app, "m", 3).await;
    assert_eq!(app.nivel("m2").await.unwrap(), 2);
    let stored = stored_usernames(&primary.url()).await;
    assert!(stored.contains("m0"), "the writes went to the primary");
    // The standby takes reads through its replica URL's pool, not DATABASE_URL's; each
    // pool has a name of its own.
    cluster::wait_for_replay(&primary.url(), &standby.url()).await;
    wait_until(&app, "the standby takes reads", |app| {
        app.db.servers().readable(3)
    })
    .await;
    assert!(!app.db.servers().readable(1));
    let views = app.db.server_views();
    let names: std::collections::HashSet<&str> = views.iter().map(|v| v.address.as_str()).collect();
    assert_eq!(names.len(), 4, "{views:?}");
    assert!(
        views[3].address.ends_with("(replica URL 1)"),
        "{}",
        views[3].address
    );

    // The primary moves: the standby is promoted, the old primary stops.
    let killer = primary.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    let promoter = standby.clone();
    tokio::task::spawn_blocking(move || promoter.promote())
        .await
        .unwrap();
    cluster::wait_until_primary(&standby.url()).await;
    // A write fails on the dead primary, asks for a probe at once, and the next ones go to
    // the promoted standby well within one probe interval.
    let promoted = Instant::now();
    let mut answered = Vec::new();
    loop {
        let result = app
            .add_user(&format!("after{}", answered.len()), "senha-forte-1", 1)
            .await;
        answered.push(code_of(&result));
        if result.is_ok() {
            break;
        }
        assert!(
            promoted.elapsed() < NOTICE_BOUND,
            "writes did not follow the promotion: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::Unavailable)),
        "{answered:?}"
    );
    assert!(
        promoted.elapsed() < Duration::from_secs(2),
        "writes back {:?} after the promotion (probe interval 2 s)",
        promoted.elapsed()
    );
    assert_eq!(app.db.servers().primary_index(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_endpoint_out_of_recovery_never_takes_the_writes() {
    let _serial = SERIAL.lock().await;
    // The replica URL reaches a server out of recovery, as a load balancer's read port does
    // when its connection sits on a node just promoted.
    let (primary, other) = tokio::task::spawn_blocking(|| {
        (Arc::new(PgCluster::start()), Arc::new(PgCluster::start()))
    })
    .await
    .unwrap();
    let mut config = fault_config(&primary.url());
    config.db.replica_urls = vec![other.url()];
    let app = app_on(config).await;
    app.add_user("before", "senha-forte-1", 1).await.unwrap();

    let killer = primary.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    wait_until(&app, "the probe notices the primary is down", |app| {
        !app.db.servers().get(0).reachable()
    })
    .await;
    // Several probes later (100 ms apart), the writes still wait for DATABASE_URL.
    let last_probe = |app: &TestApp| app.db.server_views()[1].pool.last_probe_unix_ms;
    let probed = last_probe(&app);
    wait_until(&app, "five more probes", |app| {
        last_probe(app) >= probed + 500
    })
    .await;
    assert!(app.db.servers().get(1).reachable());
    assert_eq!(app.db.servers().primary_index(), 0);
    let err = app
        .add_user("during", "senha-forte-1", 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(app.db.servers().primary_index(), 0);
}
