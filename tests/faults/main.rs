//! Fault tests: the database crashes and restarts, the network cuts, stalls and slows
//! down, callers give up, the server is stopped mid-load; and through all of it no caller
//! hangs, every error is UNAVAILABLE (or the caller's own DEADLINE_EXCEEDED), nothing stays
//! checked out, and no acknowledged write is lost.
//!
//! The tests run one at a time (they load the machine and measure time bounds). The
//! database that gets killed is a throwaway cluster of the test's own; faults in the
//! network come from a proxy inside the test.

mod patroni;
mod replicas;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use produto::{
    Settings,
    pb::{
        AdicionarUsuarioRequest, ObterNivelRequest, produto_service_client::ProdutoServiceClient,
    },
};
use produto_testkit::{
    Backend, TestApp, TestDb, admin, cluster::PgCluster, process::ServerProcess, proxy::Proxy,
    spawn_with, test_config,
};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// One fault test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tight bounds, so that the tests can assert on them.
fn fault_config(url: &str) -> Settings {
    let mut config = test_config(url);
    config.db.acquire_timeout = Duration::from_secs(1);
    config.hashing.queue_timeout = Duration::from_secs(1);
    config.db.query_timeout = Duration::from_secs(1);
    config.probe_interval = Duration::from_millis(100);
    config
}

/// An app against `url`; the placeholder TestDb only owns a temp dir (the database under
/// test is the cluster's or the proxy's).
async fn app_on(config: Settings) -> TestApp {
    let app = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// Counts of gRPC codes, with the slowest call.
#[derive(Default, Debug)]
struct Tally {
    codes: BTreeMap<String, u32>,
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, code: Code, took: Duration) {
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
        self.slowest = self.slowest.max(took);
    }

    fn count(&self, code: Code) -> u32 {
        self.codes.get(&format!("{code:?}")).copied().unwrap_or(0)
    }

    fn only(&self, allowed: &[Code]) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|c| format!("{c:?}")).collect();
        self.codes.keys().all(|k| allowed.contains(k))
    }
}

/// The code a caller sees. tonic's client reports a call it could not send because the
/// connection closed under it ("connection closed" from hyper) as CANCELLED; every other
/// gRPC client says UNAVAILABLE, and it is the same fact: the call never reached a handler.
fn code_of<T>(result: &Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(s) if s.code() == Code::Cancelled && format!("{s:?}").contains("connection closed") => {
            Code::Unavailable
        }
        Err(s) => s.code(),
    }
}

/// Usernames present in a PostgreSQL database, read directly.
async fn stored_usernames(url: &str) -> std::collections::HashSet<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, String>("SELECT usuario FROM usuarios")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Callers that add users in a loop until stopped, recording every answer and the names
/// of the acknowledged writes.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    tally: Arc<Mutex<Tally>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Writers {
    fn start(callers: usize, client: &ProdutoServiceClient<Channel>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..callers {
            let (stop, acked, tally) = (stop.clone(), acked.clone(), tally.clone());
            let mut client = client.clone();
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let usuario = format!("w{w}_{i}");
                    i += 1;
                    let started = Instant::now();
                    let result = client
                        .adicionar_usuario(admin(AdicionarUsuarioRequest {
                            usuario: usuario.clone(),
                            senha: "senha-forte-1".into(),
                            nivel: 1,
                        }))
                        .await;
                    tally
                        .lock()
                        .unwrap()
                        .add(code_of(&result), started.elapsed());
                    match result {
                        Ok(_) => acked.lock().unwrap().push(usuario),
                        // A failing caller backs off a little, as a real one would.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        }
        Writers {
            stop,
            acked,
            tally,
            tasks,
        }
    }

    fn acked_so_far(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops them and hands back the tally and the acknowledged names.
    async fn finish(mut self) -> (Tally, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        let tally = std::mem::take(&mut *self.tally.lock().unwrap());
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (tally, acked)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_under_write_load_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(PgCluster::start());
    let app = app_on(fault_config(&cluster.url())).await;
    let writers = Writers::start(16, &app.produto);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killer = cluster.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    let killed = Instant::now();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    let noticed = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_during_outage = writers.acked_so_far();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        writers.acked_so_far(),
        acked_during_outage,
        "no write is acknowledged while the database is down"
    );

    let starter = cluster.clone();
    tokio::task::spawn_blocking(move || starter.start_again())
        .await
        .unwrap();
    let restarted = Instant::now();
    app.wait_for_readiness(ServingStatus::Serving).await;
    let ready_again = restarted.elapsed();
    let before = writers.acked_so_far();
    while writers.acked_so_far() == before {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "writes never resumed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let writes_again = restarted.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tally, acked) = writers.finish().await;
    eprintln!(
        "crash/restart: {tally:?}; outage noticed in {noticed:?}; ready {ready_again:?} and writing {writes_again:?} after restart; {} writes acknowledged",
        acked.len()
    );
    assert!(tally.only(&[Code::Ok, Code::Unavailable]), "{tally:?}");
    assert!(
        tally.count(Code::Unavailable) > 0,
        "the outage was seen: {tally:?}"
    );
    // acquire (1 s) + statement (1 s) + hashing, with room for a loaded machine.
    assert!(
        tally.slowest < Duration::from_secs(3),
        "a call hung: {tally:?}"
    );
    let stored = stored_usernames(&cluster.url()).await;
    let lost: Vec<_> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    app.wait_for_idle_pool().await;
}

/// An app on the shared PostgreSQL, through a proxy, with one user `maria` (level 7).
async fn app_behind_proxy(configure: impl FnOnce(&mut Settings)) -> (TestApp, Proxy, TestDb) {
    let database = TestDb::create(Backend::Postgres).await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let mut config = fault_config(&url);
    configure(&mut config);
    let app = app_on(config).await;
    app.add_user("maria", "senha-forte-1", 7).await.unwrap();
    (app, proxy, database)
}

/// Opens connections up to `n` by running `n` reads at once.
async fn warm_pool(app: &TestApp, n: usize) {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let app_client = app.produto.clone();
        calls.spawn(nivel_of(app_client, "maria"));
    }
    while calls.join_next().await.is_some() {}
}

/// One ObterNivel of `maria` per client, all at once; the tally of their answers.
async fn lookups_at_once(clients: impl Iterator<Item = ProdutoServiceClient<Channel>>) -> Tally {
    let mut calls = tokio::task::JoinSet::new();
    for client in clients {
        calls.spawn(async move {
            let started = Instant::now();
            let result = nivel_of(client, "maria").await;
            (code_of(&result), started.elapsed())
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = calls.join_next().await {
        let (code, took) = joined.unwrap();
        tally.add(code, took);
    }
    tally
}

async fn nivel_of(
    mut client: ProdutoServiceClient<Channel>,
    usuario: &str,
) -> Result<i32, tonic::Status> {
    client
        .obter_nivel(ObterNivelRequest {
            usuario: usuario.into(),
        })
        .await
        .map(|r| r.into_inner().nivel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_are_replaced_and_counted() {
    let _serial = SERIAL.lock().await;
    let (app, proxy, _db) = app_behind_proxy(|_| {}).await;
    warm_pool(&app, 20).await;
    let before = app.pool_status().await;
    assert!(before.pool_size > 1, "{before:?}");

    // Cut while idle: reads are retried on fresh connections, so callers see nothing.
    proxy.cut();
    for _ in 0..5 {
        assert_eq!(app.nivel("maria").await.unwrap(), 7);
    }
    let after_idle_cut = app.pool_status().await;
    assert!(
        after_idle_cut.connections_lost_total > before.connections_lost_total,
        "{after_idle_cut:?}"
    );

    // Cut while busy: calls succeed, or fail with UNAVAILABLE and then succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (stop, tally, client) = (stop.clone(), tally.clone(), app.produto.clone());
        readers.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let result = nivel_of(client.clone(), "maria").await;
                tally
                    .lock()
                    .unwrap()
                    .add(code_of(&result), started.elapsed());
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    while readers.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let status = app.pool_status().await;
    eprintln!(
        "cut while busy: {tally:?}; lost connections {}",
        status.connections_lost_total
    );
    assert!(tally.only(&[Code::Ok, Code::Unavailable]), "{tally:?}");
    assert!(tally.slowest < Duration::from_secs(3), "{tally:?}");
    assert_eq!(app.nivel("maria").await.unwrap(), 7);
    assert!(status.connections_lost_total > after_idle_cut.connections_lost_total);
    app.wait_for_idle_pool().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_database_is_given_up_on_in_bounded_time_and_resumed_after() {
    let _serial = SERIAL.lock().await;
    let (app, proxy, _db) = app_behind_proxy(|_| {}).await;
    warm_pool(&app, 8).await;

    proxy.blackhole();
    let tally = lookups_at_once((0..16).map(|_| app.produto.clone())).await;
    app.wait_for_readiness(ServingStatus::NotServing).await;
    assert!(!app.pool_status().await.healthy);
    eprintln!("blackhole: {tally:?}");
    assert!(tally.only(&[Code::Unavailable]), "{tally:?}");
    // At worst a read tries twice: (acquire 1 s + statement 1 s) each.
    assert!(tally.slowest < Duration::from_millis(4500), "{tally:?}");
    // While the probe says the database is down, callers are told to wait longer.
    let down = app.nivel("maria").await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let details = down.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "DATABASE_UNAVAILABLE");
    assert_eq!(
        details.retry_info().and_then(|r| r.retry_delay),
        Some(produto::error::RETRY_DELAY_DATABASE_DOWN),
        "{down:?}"
    );

    proxy.up();
    app.wait_for_readiness(ServingStatus::Serving).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.nivel("maria").await.is_err() {
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.nivel("maria").await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_sheds_the_excess_with_unavailable_and_leaks_nothing() {
    let _serial = SERIAL.lock().await;
    // Unbatched: one statement per call, so 500 callers need 500 connection turns. (Batched,
    // the same crowd shares a few statements and nobody waits: all 500 answered OK here.)
    let (app, proxy, _db) = app_behind_proxy(|c| {
        c.db.max_connections = 20;
        c.db.batch_nivel = false;
    })
    .await;
    warm_pool(&app, 40).await;
    proxy.set_latency(Duration::from_millis(100));

    // Several HTTP/2 connections, as many clients would have.
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(ProdutoServiceClient::new(channel));
    }
    let max_waiting = Arc::new(AtomicU32::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (max_waiting, sampling, mut pool) =
            (max_waiting.clone(), sampling.clone(), app.pool.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Ok(s) = pool.pool_status(produto::pb::PoolStatusRequest {}).await {
                    max_waiting.fetch_max(s.into_inner().requests_waiting, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let tally = lookups_at_once((0..500).map(|i| channels[i % channels.len()].clone())).await;
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    proxy.set_latency(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = app.pool_status().await;
    eprintln!(
        "exhaustion: {tally:?}; most callers waiting at once {}; acquire timeouts {}",
        max_waiting.load(Ordering::SeqCst),
        status.acquire_timeouts_total
    );
    assert!(tally.only(&[Code::Ok, Code::Unavailable]), "{tally:?}");
    assert!(
        tally.count(Code::Ok) > 0 && tally.count(Code::Unavailable) > 0,
        "{tally:?}"
    );
    // The acquire timeout (1 s) plus one slow statement (our side waits for the query timeout,
    // 1 s, and half of it more, so that PostgreSQL's statement_timeout fires first) and the
    // machine's noise.
    assert!(
        tally.slowest < Duration::from_millis(3000),
        "a caller hung: {tally:?}"
    );
    assert!(max_waiting.load(Ordering::SeqCst) > 0);
    assert!(status.acquire_timeouts_total > 0, "{status:?}");
    assert!(status.pool_size <= 20, "{status:?}");
    assert_eq!(status.used_connections, 0, "{status:?}");
    assert_eq!(status.requests_waiting, 0, "{status:?}");
    assert_eq!(app.nivel("maria").await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_calls_leave_nothing_checked_out() {
    let _serial = SERIAL.lock().await;
    let (app, proxy, _db) = app_behind_proxy(|_| {}).await;
    // Each statement takes ~80 ms; each caller gives up after 60 ms, mid-statement or
    // while queued for the next batch of lookups.
    proxy.set_latency(Duration::from_millis(40));
    let done = Arc::new(AtomicU32::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (done, tally, mut client) = (done.clone(), tally.clone(), app.produto.clone());
        callers.spawn(async move {
            for _ in 0..200 {
                let mut request = Request::new(ObterNivelRequest {
                    usuario: "maria".into(),
                });
                request.set_timeout(Duration::from_millis(60));
                let started = Instant::now();
                let result = client.obter_nivel(request).await;
                tally
                    .lock()
                    .unwrap()
                    .add(code_of(&result), started.elapsed());
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while callers.join_next().await.is_some() {}
    proxy.set_latency(Duration::ZERO);
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "cancellation: {} calls, {tally:?}",
        done.load(Ordering::SeqCst)
    );
    assert_eq!(done.load(Ordering::SeqCst), 10_000);
    // The server answers DEADLINE_EXCEEDED a little before the deadline; on a loaded
    // machine a tonic client's own timer often wins (it reports CANCELLED and resets the
    // stream), and so many resets in a burst make the HTTP/2 layer treat the connection as
    // a rapid-reset attack and close it (the client then sees RESOURCE_EXHAUSTED, UNKNOWN or
    // UNAVAILABLE until it reconnects). Every one of those is a caller that gave up, which
    // is what this test is about; tests/api checks the DEADLINE_EXCEEDED code on its own.
    assert!(tally.count(Code::DeadlineExceeded) > 0, "{tally:?}");
    assert!(tally.count(Code::Ok) == 0, "{tally:?}");
    assert!(
        tally.slowest < Duration::from_secs(2),
        "a call hung: {tally:?}"
    );
    // Cancelled statements finish on the server and their connections come back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = app.pool_status().await;
        if status.used_connections == 0 && status.requests_waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "left checked out: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.nivel("maria").await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let app = app_on(fault_config(&TestDb::create(Backend::Sqlite).await.url)).await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM",
        &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 255, 254, 253],
        &[0u8; 70_000],
    ];
    for bytes in garbage {
        let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let _ = socket.write_all(bytes).await;
        let _ = socket.shutdown().await;
        let mut sink = Vec::new();
        // The server closes the connection (or answers an error) promptly.
        let read =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the server kept a garbage connection open");
        // Everyone else is still served.
        assert_eq!(
            app.nivel("ninguem").await.unwrap_err().code(),
            Code::NotFound
        );
    }
}

#[test]
fn sigterm_under_load_drains_in_flight_calls_and_exits_zero() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sigterm_under_load());
}

async fn sigterm_under_load() {
    let _serial = SERIAL.lock().await;
    let database = TestDb::create(Backend::Postgres).await;
    let mut server = ServerProcess::spawn(&[
        ("DATABASE_URL", &database.url),
        ("PRODUTO_ADMIN_TOKEN", produto_testkit::ADMIN_TOKEN),
        ("PRODUTO_DRAIN_TIMEOUT", "5s"),
        ("PRODUTO_ARGON2_M_KIB", "8192"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let channel = server.channel.clone();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    while health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
        .ok()
        != Some(ServingStatus::Serving as i32)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let writers = Writers::start(64, &ProdutoServiceClient::new(channel.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = Instant::now();
    server.sigterm();
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server exits within the drain time")
        .unwrap();
    let took = sent.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tally, acked) = writers.finish().await;
    eprintln!(
        "sigterm: exited {exit:?} after {took:?}; {tally:?}; {} writes acknowledged",
        acked.len()
    );
    assert!(exit.success(), "exit status {exit:?}");
    assert!(took < Duration::from_secs(5), "drain took {took:?}");
    assert!(tally.only(&[Code::Ok, Code::Unavailable]), "{tally:?}");
    let stored = stored_usernames(&database.url).await;
    let lost: Vec<_> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Callers that look `maria` up in a loop until stopped, each call with a 10 s deadline (far
/// longer than the query timeout, so that it is the server's bound that ends a stalled call).
fn lookups_in_a_loop(
    callers: usize,
    client: &ProdutoServiceClient<Channel>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinSet<Tally> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (mut client, stop) = (client.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::SeqCst) {
                let mut request = Request::new(ObterNivelRequest {
                    usuario: "maria".into(),
                });
                request.set_timeout(Duration::from_secs(10));
                let started = Instant::now();
                let result = client.obter_nivel(request).await;
                tally.add(code_of(&result), started.elapsed());
                if result.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tally
        });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lock_longer_than_the_query_timeout_never_takes_more_backends_than_the_pool() {
    use sqlx::{Connection, Executor};
    let _serial = SERIAL.lock().await;
    const MAX: u32 = 10;
    let cluster = PgCluster::start();
    let mut config = fault_config(&cluster.url());
    config.db.max_connections = MAX;
    let app = app_on(config).await;
    app.add_user("maria", "senha-forte-1", 7).await.unwrap();

    // Backends of the service on its database, sampled every 20 ms throughout.
    let most_backends = Arc::new(AtomicU32::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let mut watcher = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    let sampler = {
        let (most, sampling) = (most_backends.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'produto'",
                )
                .fetch_one(&mut watcher)
                .await
                .unwrap();
                most.fetch_max(u32::try_from(n).unwrap(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let lookups = lookups_in_a_loop(32, &app.produto, &stop);
    let writers = Writers::start(8, &app.produto);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The lock, held for five query timeouts by a transaction on a connection of its own.
    let mut locker = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE usuarios IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during_lock = most_backends.load(Ordering::SeqCst);
    locker.execute("COMMIT").await.unwrap();
    let released = Instant::now();

    // Service resumes once the lock is gone.
    let resumed = loop {
        match app.nivel("maria").await {
            Ok(7) => break released.elapsed(),
            other => assert!(
                released.elapsed() < Duration::from_secs(10),
                "service did not resume after the lock: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::default();
    for t in lookups.join_all().await {
        for (code, n) in t.codes {
            *tally.codes.entry(code).or_default() += n;
        }
        tally.slowest = tally.slowest.max(t.slowest);
    }
    let (writes, _) = writers.finish().await;
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let most = most_backends.load(Ordering::SeqCst);
    eprintln!(
        "table lock: most backends {most} (during the lock {during_lock}), pool max {MAX} + probe; \
         resumed {resumed:?} after release; lookups {tally:?}; writes {writes:?}"
    );
    assert!(
        most <= MAX + 1,
        "{most} backends on the database with a pool of {MAX} (+1 probe)"
    );
    assert!(tally.only(&[Code::Ok, Code::Unavailable]), "{tally:?}");
    assert!(writes.only(&[Code::Ok, Code::Unavailable]), "{writes:?}");
    assert!(
        tally.count(Code::Unavailable) > 0,
        "the lock was felt: {tally:?}"
    );
    // The query timeout (1 s) and its margin bound every stalled call, well inside 10 s.
    assert!(tally.slowest < Duration::from_secs(4), "{tally:?}");
}
