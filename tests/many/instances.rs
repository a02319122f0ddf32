//! Three `produto-server` processes on one database, and the library's balancing client
//! in front of them: migrations run once, throttling is shared, and a SIGKILLed instance
//! costs the client's calls nothing but retryable errors.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use produto::{
    client::{BalancedClient, ClientSettings},
    pb::{
        ObterNivelRequest, PoolStatusRequest, VerificarLoginRequest,
        pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient,
    },
    service_config::RetryPolicy,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use produto_testkit::{ADMIN_TOKEN, Backend, TestDb, admin, process::ServerProcess};

use crate::Tally;

/// Waits (up to 30 s: three servers start on a busy machine) until `channel` reports ready.
async fn wait_ready(channel: &Channel) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().ok() == Some(&(ServingStatus::Serving as i32)) {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn acquires(channel: &Channel) -> u64 {
    PoolServiceClient::new(channel.clone())
        .pool_status(PoolStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .acquires_total
}

/// Waits (up to 20 s) until each of `servers` has served `more` more acquires.
async fn wait_until_serving(servers: &[&ServerProcess], more: u64, when: &str) {
    let before: Vec<u64> = join_all(servers.iter().map(|s| acquires(&s.channel))).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<u64> = join_all(servers.iter().map(|s| acquires(&s.channel))).await;
        if now.iter().zip(&before).all(|(n, b)| *n > b + more) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every instance serves {when}: {before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(channel: &Channel, senha: &str) -> bool {
    ProdutoServiceClient::new(channel.clone())
        .verificar_login(VerificarLoginRequest {
            usuario: "ana".into(),
            senha: senha.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .valido
}

/// A balancing client over `servers`, resolving every `resolve_every`, with the service
/// config's retry policy but shorter waits (its first is up to 1 s).
async fn client_of(servers: &[ServerProcess], resolve_every: Duration) -> BalancedClient {
    let mut settings = ClientSettings::new(servers.iter().map(|s| s.addr.to_string()));
    settings.resolve_every = resolve_every;
    settings.connect_timeout = Duration::from_secs(1);
    settings.retry = Some(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        backoff_multiplier: 2.0,
        retryable_codes: vec![Code::Unavailable],
    });
    let client = BalancedClient::connect(settings).await.unwrap();
    assert_eq!(client.addresses().len(), servers.len());
    client
}

/// `callers` tasks looking up ana (level 4) through `client` until `stop` (at most `calls`
/// each), each tallying the codes it got.
fn lookups(
    client: &BalancedClient,
    callers: usize,
    calls: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..callers)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..calls {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = client
                        .obter_nivel(ObterNivelRequest {
                            usuario: "ana".into(),
                        })
                        .await
                        .map(|r| r.into_inner().nivel);
                    if let Ok(nivel) = &result {
                        assert_eq!(*nivel, 4);
                    }
                    tally.add(&result);
                }
                tally
            })
        })
        .collect()
}

/// Stops the callers and adds up their tallies.
async fn stop_lookups(stop: &AtomicBool, callers: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for caller in callers {
        tally.merge(caller.await.unwrap());
    }
    tally
}

/// Waits (up to 10 s) until the client no longer sends to `killed`.
async fn wait_dropped(client: &BalancedClient, killed: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.addresses().contains(&killed) {
        assert!(
            Instant::now() < deadline,
            "the killed instance is never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_database_and_survive_a_sigkill() {
    let database = TestDb::create(Backend::Postgres).await;
    let logs = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN),
        ("PRODUTO_ARGON2_M_KIB", "1024"),
        ("PRODUTO_ARGON2_T", "1"),
        ("PRODUTO_PROBE_INTERVAL", "100ms"),
        ("PRODUTO_MAX_CONNECTIONS", "5"),
        ("PRODUTO_LOGIN_MAX_FAILURES", "3"),
        ("RUST_LOG", "info"),
    ];
    // All three at the same moment, on an empty schema.
    let log_of = |i: usize| logs.path().join(format!("server{i}.log"));
    let paths: Vec<_> = (0..3).map(log_of).collect();
    let servers = join_all(
        paths
            .iter()
            .map(|path| ServerProcess::spawn_logging_to(&env, Some(path))),
    )
    .await;
    join_all(servers.iter().map(|s| wait_ready(&s.channel))).await;

    // Migrations ran once: each version recorded once, every instance without an error.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
        .await
        .unwrap();
    let versions: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, count(*) FROM _sqlx_migrations WHERE success GROUP BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!versions.is_empty());
    assert!(versions.iter().all(|(_, n)| *n == 1), "{versions:?}");
    let mut migrated = 0;
    for i in 0..3 {
        let log = std::fs::read_to_string(log_of(i)).unwrap();
        assert!(!log.contains("ERROR"), "server {i}: {log}");
        migrated += usize::from(log.contains("schema migrated"));
    }
    assert_eq!(migrated, 3, "each instance reports the schema in place");

    // Throttling is shared: three failures, one on each instance, lock the user out on all.
    ProdutoServiceClient::new(servers[0].channel.clone())
        .adicionar_usuario(admin(produto::pb::AdicionarUsuarioRequest {
            usuario: "ana".into(),
            senha: "senha-da-ana-1".into(),
            nivel: 4,
        }))
        .await
        .unwrap();
    for server in &servers {
        assert!(!login(&server.channel, "senha-errada").await);
    }
    for server in &servers {
        assert!(
            !login(&server.channel, "senha-da-ana-1").await,
            "the right password is refused while locked out, on every instance"
        );
    }

    // A balancing client over the three; lookups from several callers.
    let client = client_of(&servers, Duration::from_millis(200)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = lookups(&client, 8, 2000, &stop);

    // Every instance serves some of the load before the kill.
    wait_until_serving(&servers.iter().collect::<Vec<_>>(), 20, "before the kill").await;
    servers[1].sigkill();
    let killed = servers[1].addr;
    wait_dropped(&client, killed).await;
    // Load continues on the other two for a while.
    wait_until_serving(&[&servers[0], &servers[2]], 50, "after the kill").await;
    let tally = stop_lookups(&stop, callers).await;
    let (ok, unavailable, total) = (
        tally.count(Code::Ok),
        tally.count(Code::Unavailable),
        tally.total(),
    );
    eprintln!(
        "SIGKILL under balanced load: {tally:?} after {} retried attempts; addresses now {:?}",
        client.retries(),
        client.addresses()
    );
    assert_eq!(
        ok + unavailable,
        total,
        "only OK or the retryable UNAVAILABLE"
    );
    // At most the calls in flight on the killed instance (8 callers) fail, after retries.
    assert!(unavailable <= 8, "{unavailable} UNAVAILABLE");
    assert_eq!(client.addresses().len(), 2);
}

/// Waits until `servers[index]`, just started, is ready and serves the client's calls
/// (generous bound: a busy machine), then until all of them do; returns how long it took
/// from its readiness.
async fn back_in_rotation(
    client: &BalancedClient,
    servers: &[ServerProcess],
    index: usize,
) -> Duration {
    wait_ready(&servers[index].channel).await;
    let ready = Instant::now();
    wait_until_serving(&[&servers[index]], 20, "after it started again").await;
    let took = ready.elapsed();
    assert!(client.addresses().contains(&servers[index].addr));
    wait_until_serving(&servers.iter().collect::<Vec<_>>(), 20, "with all three").await;
    took
}

/// The balancer takes an instance back: of three, one is SIGKILLed (calls go on, on the two
/// left, and the client drops it), then started again on the same address; it gets calls
/// again within about one resolve interval (the bound is generous: a busy machine); and
/// again when it is killed and started at once, before the client may have noticed. At
/// most the calls in flight on it (4 callers, twice) fail, as UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_takes_back_an_instance_started_again_on_its_address() {
    let database = TestDb::create(Backend::Postgres).await;
    let logs = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN),
        ("PRODUTO_ARGON2_M_KIB", "1024"),
        ("PRODUTO_ARGON2_T", "1"),
        ("PRODUTO_PROBE_INTERVAL", "100ms"),
        ("PRODUTO_MAX_CONNECTIONS", "3"),
        ("RUST_LOG", "info"),
    ];
    let log_of = |i: usize| logs.path().join(format!("server{i}.log"));
    let paths: Vec<_> = (0..5).map(log_of).collect();
    let mut servers = join_all(
        paths[..3]
            .iter()
            .map(|path| ServerProcess::spawn_logging_to(&env, Some(path))),
    )
    .await;
    join_all(servers.iter().map(|s| wait_ready(&s.channel))).await;
    ProdutoServiceClient::new(servers[0].channel.clone())
        .adicionar_usuario(admin(produto::pb::AdicionarUsuarioRequest {
            usuario: "ana".into(),
            senha: "senha-da-ana-1".into(),
            nivel: 4,
        }))
        .await
        .unwrap();

    let resolve_every = Duration::from_millis(500);
    let client = client_of(&servers, resolve_every).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = lookups(&client, 4, 20_000, &stop);
    wait_until_serving(&servers.iter().collect::<Vec<_>>(), 20, "before the kill").await;

    servers[1].sigkill();
    let killed = servers[1].addr;
    servers[1].child.wait().await.unwrap();
    wait_dropped(&client, killed).await;
    wait_until_serving(&[&servers[0], &servers[2]], 20, "after the kill").await;

    // Started again where it was: the client finds it at its next resolve and sends to it.
    servers[1] = ServerProcess::spawn_at(killed.port(), &env, Some(&paths[3])).await;
    let back_after = back_in_rotation(&client, &servers, 1).await;

    // Killed and started again at once, before the client may have noticed: taken back
    // either way (dropped and added again, or reconnected by the balancer).
    servers[1].sigkill();
    servers[1].child.wait().await.unwrap();
    servers[1] = ServerProcess::spawn_at(killed.port(), &env, Some(&paths[4])).await;
    let back_at_once_after = back_in_rotation(&client, &servers, 1).await;

    let tally = stop_lookups(&stop, callers).await;
    eprintln!(
        "an instance started again got calls {back_after:?} after it was ready, \
         {back_at_once_after:?} when restarted at once (resolve interval {resolve_every:?}); \
         calls: {tally:?}, {} retried attempts",
        client.retries()
    );
    let (ok, unavailable) = (tally.count(Code::Ok), tally.count(Code::Unavailable));
    assert_eq!(
        ok + unavailable,
        tally.total(),
        "only OK or the retryable UNAVAILABLE"
    );
    assert!(unavailable <= 8, "{unavailable} UNAVAILABLE");
}
