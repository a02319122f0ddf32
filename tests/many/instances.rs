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

use crate::{
    Tally,
    helpers::{ADMIN_TOKEN, Backend, TestDb, admin},
    process::ServerProcess,
};

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
    let mut settings = ClientSettings::new(servers.iter().map(|s| s.addr.to_string()));
    settings.resolve_every = Duration::from_millis(200);
    settings.connect_timeout = Duration::from_secs(1);
    // The service config's policy, with shorter waits (its first is up to 1 s).
    settings.retry = Some(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        backoff_multiplier: 2.0,
        retryable_codes: vec![Code::Unavailable],
    });
    let client = BalancedClient::connect(settings).await.unwrap();
    assert_eq!(client.addresses().len(), 3);

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                // Bounded: at most 2000 calls per caller.
                for _ in 0..2000 {
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
        .collect();

    // Every instance serves some of the load before the kill.
    wait_until_serving(&servers.iter().collect::<Vec<_>>(), 20, "before the kill").await;
    servers[1].sigkill();
    let killed = servers[1].addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.addresses().contains(&killed) {
        assert!(
            Instant::now() < deadline,
            "the killed instance is never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Load continues on the other two for a while.
    wait_until_serving(&[&servers[0], &servers[2]], 50, "after the kill").await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for caller in callers {
        tally.merge(caller.await.unwrap());
    }
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
