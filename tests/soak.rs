//! Soak: mixed load on the real `produto-server` binary for a long while (10 minutes by
//! default, `PRODUTO_SOAK_SECS` to change), with its database killed and restarted in the
//! middle. Reports error counts by code, and checks that the server's memory and its open
//! connections end where they were once warm. Not part of CI (ignored); run it with
//!
//!     cargo test --release --test soak -- --ignored --nocapture

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use produto::pb::{
    AdicionarUsuarioRequest, ObterNivelRequest, PoolStatusRequest, VerificarLoginRequest,
    pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient,
};
use produto_testkit::{cluster, process};
use tonic::{Request, transport::Channel};

const TOKEN: &str = "soak-admin-token-0123456789";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn admin<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running: run on purpose, see the module docs"]
async fn soak_mixed_load_with_a_database_restart() {
    let secs: u64 = std::env::var("PRODUTO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let cluster = Arc::new(cluster::PgCluster::start());
    let url = cluster.url();
    let mut server = process::ServerProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("PRODUTO_ADMIN_TOKEN", TOKEN),
        ("PRODUTO_ACQUIRE_TIMEOUT", "1s"),
        ("RUST_LOG", "error"),
    ])
    .await;
    let pid = server.pid();
    let channel: Channel = server.channel.clone();
    let mut produto = ProdutoServiceClient::new(channel.clone());
    let mut pool = PoolServiceClient::new(channel.clone());
    while produto
        .adicionar_usuario(admin(AdicionarUsuarioRequest {
            usuario: "base".into(),
            senha: "senha-forte-1".into(),
            nivel: 3,
        }))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let codes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..24 {
        let (stop, codes, mut client) = (stop.clone(), codes.clone(), produto.clone());
        workers.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (rpc, result) = match (w % 8, i % 50) {
                    // Mostly reads, some logins, a few writes.
                    (0, _) => (
                        "VerificarLogin",
                        client
                            .verificar_login(VerificarLoginRequest {
                                usuario: "base".into(),
                                senha: "senha-forte-1".into(),
                            })
                            .await
                            .map(|_| ()),
                    ),
                    (_, 0) => (
                        "AdicionarUsuario",
                        client
                            .adicionar_usuario(admin(AdicionarUsuarioRequest {
                                usuario: format!("s{w}_{i}"),
                                senha: "senha-forte-1".into(),
                                nivel: 1,
                            }))
                            .await
                            .map(|_| ()),
                    ),
                    _ => (
                        "ObterNivel",
                        client
                            .obter_nivel(ObterNivelRequest {
                                usuario: "base".into(),
                            })
                            .await
                            .map(|_| ()),
                    ),
                };
                let code = result.map_or_else(|s| s.code(), |_| tonic::Code::Ok);
                *codes
                    .lock()
                    .unwrap()
                    .entry(format!("{rpc} {code:?}"))
                    .or_default() += 1;
                if code != tonic::Code::Ok {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }

    let started = Instant::now();
    let total = Duration::from_secs(secs);
    let warm_at = total / 10;
    let restart_at = total / 2;
    let (mut warm_rss, mut restarted) = (0, false);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = started.elapsed();
        if warm_rss == 0 && elapsed >= warm_at {
            warm_rss = rss_kib(pid);
        }
        if !restarted && elapsed >= restart_at {
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || {
                c.kill();
                std::thread::sleep(Duration::from_secs(2));
                c.start_again();
            })
            .await
            .unwrap();
            restarted = true;
        }
        if elapsed.as_secs().is_multiple_of(30) {
            let s = pool
                .pool_status(PoolStatusRequest {})
                .await
                .map(|r| r.into_inner());
            eprintln!(
                "soak t={:>4}s rss={} KiB pool={:?} codes={:?}",
                elapsed.as_secs(),
                rss_kib(pid),
                s.map(|s| (s.pool_size, s.used_connections, s.connections_lost_total)),
                codes.lock().unwrap()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    while workers.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end_rss = rss_kib(pid);
    let status = pool
        .pool_status(PoolStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let codes = std::mem::take(&mut *codes.lock().unwrap());
    eprintln!(
        "soak done after {secs} s: rss warm {warm_rss} KiB, end {end_rss} KiB; pool size {} used {} lost {}; calls by code {codes:?}",
        status.pool_size, status.used_connections, status.connections_lost_total
    );
    assert_eq!(status.used_connections, 0);
    assert!(status.pool_size <= 20);
    // Flat: within 25 % (or 4 MiB) of the warm figure.
    assert!(
        end_rss <= warm_rss + (warm_rss / 4).max(4096),
        "RSS grew from {warm_rss} to {end_rss} KiB"
    );
    server.sigterm();
    let _ = tokio::time::timeout(Duration::from_secs(15), server.child.wait()).await;
}
