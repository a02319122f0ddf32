//! ObterNivel batching (`PRODUTO_BATCH_NIVEL=true`): concurrent lookups share queries, and
//! each caller still gets exactly its own answer.

use std::time::Duration;

use produto::pb::ObterNivelRequest;
use tokio::task::JoinSet;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestApp, TestDb, spawn_with, test_config};

/// A server with batching on, on a fresh database.
async fn spawn_batched(backend: Backend) -> TestApp {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    config.db.batch_nivel = true;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// Inserts users `u0..u{n}` with level `i % 50` straight into the table (no hashing).
async fn seed(app: &TestApp, n: i64) {
    let produto::db::Backend::Postgres(pool) = app.db.backend() else {
        panic!("seeding is written for PostgreSQL");
    };
    sqlx::query(
        "INSERT INTO usuarios (usuario, senha_hash, nivel) \
         SELECT 'u' || i, 'not-a-hash', i % 50 FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// Looks `usuario` up on a clone of the app's client.
async fn nivel_of(app: &TestApp, usuario: String) -> Result<i32, tonic::Status> {
    app.produto
        .clone()
        .obter_nivel(ObterNivelRequest { usuario })
        .await
        .map(|r| r.into_inner().nivel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_get_exactly_their_own_levels() {
    let app = spawn_batched(Backend::Postgres).await;
    seed(&app, 300).await;
    let before = app.pool_status().await.acquires_total;

    let mut calls = JoinSet::new();
    for k in 0..600i32 {
        // Every user is asked for twice, so batches also carry duplicate names.
        let i = (k * 7) % 300;
        let mut client = app.produto.clone();
        calls.spawn(async move {
            let r = client
                .obter_nivel(ObterNivelRequest {
                    usuario: format!("u{i}"),
                })
                .await;
            (i, r.map(|r| r.into_inner().nivel))
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (i, nivel) = joined.unwrap();
        assert_eq!(nivel.unwrap(), i % 50, "u{i}");
    }
    let queries = app.pool_status().await.acquires_total - before;
    assert!(
        queries < 600,
        "600 concurrent lookups should share queries, took {queries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_get_not_found_while_the_rest_of_their_batch_succeeds() {
    let app = spawn_batched(Backend::Postgres).await;
    seed(&app, 100).await;
    let mut calls = JoinSet::new();
    for k in 0..400i32 {
        let app_client = app.produto.clone();
        calls.spawn(async move {
            let mut client = app_client;
            // Every fourth name does not exist.
            let name = if k % 4 == 0 {
                format!("ghost{k}")
            } else {
                format!("u{}", k % 100)
            };
            let r = client
                .obter_nivel(ObterNivelRequest {
                    usuario: name.clone(),
                })
                .await;
            (k, name, r)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (k, name, r) = joined.unwrap();
        if k % 4 == 0 {
            let err = r.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
            assert!(err.message().contains(&name), "{}", err.message());
        } else {
            assert_eq!(r.unwrap().into_inner().nivel, (k % 100) % 50, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_acknowledged_before_a_lookup_starts_is_always_found() {
    let app = spawn_batched(Backend::Postgres).await;
    seed(&app, 100).await;
    // Keep the lanes busy with a crowd of lookups, so that new lookups queue behind
    // queries already in flight: they must join the next query, not the running one.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut crowd = JoinSet::new();
    for k in 0..32 {
        let mut client = app.produto.clone();
        let stop = stop.clone();
        crowd.spawn(async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                let usuario = format!("u{}", (k + n) % 100);
                client
                    .obter_nivel(ObterNivelRequest { usuario })
                    .await
                    .unwrap();
                n += 1;
            }
        });
    }
    for i in 0..40 {
        let name = format!("fresh{i}");
        app.add_user(&name, "senha-forte-1", i).await.unwrap();
        assert_eq!(nivel_of(&app, name.clone()).await.unwrap(), i, "{name}");
    }
    stop.cancel();
    while let Some(joined) = crowd.join_next().await {
        joined.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_do_not_break_the_others_in_their_batch() {
    let app = spawn_batched(Backend::Postgres).await;
    seed(&app, 100).await;
    // The impatient callers get a connection of their own: a burst of cancelled streams can
    // make the HTTP/2 server drop that connection (reset-flood protection), which is not
    // what this test is about.
    let impatient_channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut calls = JoinSet::new();
    for k in 0..300i32 {
        // Every third caller gives up almost at once, mid-batch.
        let impatient = k % 3 == 0;
        let mut client = if impatient {
            produto::pb::produto_service_client::ProdutoServiceClient::new(
                impatient_channel.clone(),
            )
        } else {
            app.produto.clone()
        };
        calls.spawn(async move {
            let mut request = Request::new(ObterNivelRequest {
                usuario: format!("u{}", k % 100),
            });
            if impatient {
                request.set_timeout(Duration::from_millis(6));
            }
            (impatient, k, client.obter_nivel(request).await)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (impatient, k, r) = joined.unwrap();
        match r {
            Ok(r) => assert_eq!(r.into_inner().nivel, (k % 100) % 50),
            Err(e) => assert!(impatient, "a patient caller failed: {e:?}"),
        }
    }
    // The service is intact afterwards and no connection is held.
    assert_eq!(nivel_of(&app, "u7".into()).await.unwrap(), 7);
    app.wait_for_idle_pool().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_query_fails_every_caller_in_it_and_none_hangs() {
    let app = spawn_batched(Backend::Postgres).await;
    seed(&app, 10).await;
    let produto::db::Backend::Postgres(pool) = app.db.backend() else {
        unreachable!()
    };
    sqlx::query("ALTER TABLE usuarios RENAME TO usuarios_away")
        .execute(pool)
        .await
        .unwrap();
    let mut calls = JoinSet::new();
    for k in 0..50 {
        let mut client = app.produto.clone();
        calls.spawn(async move {
            client
                .obter_nivel(ObterNivelRequest {
                    usuario: format!("u{}", k % 10),
                })
                .await
        });
    }
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(10), calls.join_next())
        .await
        .expect("no caller hangs")
    {
        let err = joined.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert_eq!(err.message(), "internal error");
    }
    sqlx::query("ALTER TABLE usuarios_away RENAME TO usuarios")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(nivel_of(&app, "u3".into()).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_flag_keeps_the_plain_query() {
    let app = spawn_batched(Backend::Sqlite).await;
    assert!(app.db.nivel_batch().is_none());
    app.add_user("maria", "senha-forte-1", 5).await.unwrap();
    assert_eq!(nivel_of(&app, "maria".into()).await.unwrap(), 5);
    assert_eq!(
        nivel_of(&app, "ghost".into()).await.unwrap_err().code(),
        Code::NotFound
    );
}
