//! produto through PgBouncer 1.18: session pooling as it is; transaction pooling with
//! `PRODUTO_PGBOUNCER_TRANSACTION_POOLING` (and what fails without it); PgBouncer up while
//! the PostgreSQL behind it is down.

use std::{str::FromStr, time::Duration};

use futures_util::future::join_all;
use produto::{Settings, pb::ObterNivelRequest};
use sqlx::postgres::PgConnectOptions;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{
    Backend, TestApp, TestDb,
    cluster::PgCluster,
    pgbouncer::{self, BouncerSettings, PgBouncer, PoolMode},
    postgres_admin_url, spawn_with, test_config,
};

use crate::Tally;

/// The test PostgreSQL's port (PgBouncer connects to it on 127.0.0.1).
pub fn upstream_port() -> u16 {
    PgConnectOptions::from_str(&postgres_admin_url())
        .expect("a PostgreSQL URL")
        .get_port()
}

pub fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap().split('?').next().unwrap()
}

/// Applies the migrations straight on PostgreSQL, as `produto-server migrate` does.
pub async fn migrate_directly(url: &str) {
    produto::app::migrate(Settings::new(url))
        .await
        .expect("migrate directly");
}

/// A server on a fresh database reached through a new PgBouncer in `mode`. With
/// `transaction_setting` the schema is migrated directly first (the setting needs
/// PRODUTO_NO_MIGRATE) and the server runs with the setting on.
async fn app_through(
    mode: PoolMode,
    transaction_setting: bool,
    premigrate: bool,
) -> (TestApp, PgBouncer) {
    let database = TestDb::create(Backend::Postgres).await;
    let bouncer = PgBouncer::start(
        upstream_port(),
        &BouncerSettings {
            mode,
            ..BouncerSettings::default()
        },
    );
    let mut config = test_config(&bouncer.url(database_name(&database.url)));
    if premigrate || transaction_setting {
        migrate_directly(&database.url).await;
        config.no_migrate = true;
    }
    config.db.pgbouncer_transaction_pooling = transaction_setting;
    config.db.max_connections = match mode {
        // Each client connection holds a server connection for its whole life: the pool
        // plus the probe's connection must fit in PgBouncer's pool, or the rest wait.
        PoolMode::Session => BouncerSettings::default().pool_size - 1,
        // More client connections than server connections, so that they share them.
        PoolMode::Transaction => 12,
    };
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    (app, bouncer)
}

/// The suite's main paths, and a crowd of concurrent lookups and logins, all answered right.
async fn main_paths_work(app: &TestApp) {
    let id = app.add_user("ana", "senha-da-ana-1", 2).await.unwrap();
    assert!(id > 0);
    assert_eq!(
        app.add_user("ana", "outra-senha-1", 1)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(app.login("ana", "senha-da-ana-1").await.unwrap(), (true, 2));
    assert_eq!(app.login("ana", "senha-errada").await.unwrap(), (false, 0));
    assert_eq!(app.nivel("ana").await.unwrap(), 2);
    assert_eq!(
        app.nivel("ninguem").await.unwrap_err().code(),
        Code::NotFound
    );
    for i in 0..4 {
        app.add_user(&format!("user{i}"), "senha-do-user-1", i + 1)
            .await
            .unwrap();
    }
    let calls = (0..96).map(|n| async move {
        // Logins spread over the four users: 3 each.
        let i = if n % 8 == 0 { (n / 8) % 4 } else { n % 4 };
        if n % 8 == 0 {
            app.login(&format!("user{i}"), "senha-do-user-1")
                .await
                .map(|(ok, nivel)| (ok, nivel == i + 1))
        } else {
            app.nivel(&format!("user{i}"))
                .await
                .map(|nivel| (true, nivel == i + 1))
        }
    });
    for (n, result) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(result.unwrap(), (true, true), "call {n}");
    }
    // The probe (bounded to 1 s) may miss a beat on a loaded machine: wait for it to report
    // healthy, generously, rather than read one sample.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = app.pool_status().await;
        if status.healthy && status.used_connections == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never healthy with nothing checked out: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_serves_the_main_paths() {
    if !pgbouncer::installed() {
        return;
    }
    let (app, _bouncer) = app_through(PoolMode::Session, false, false).await;
    main_paths_work(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_with_the_setting_serves_the_main_paths() {
    if !pgbouncer::installed() {
        return;
    }
    let (app, bouncer) = app_through(PoolMode::Transaction, true, true).await;
    main_paths_work(&app).await;
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "{log}");
}

/// 32 logins of one user with the right password at once from one address, through
/// transaction pooling (where each statement waits for a shared server connection, so many
/// attempts are in flight together): every one is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_transaction_pooling_concurrent_right_password_logins_all_succeed() {
    if !pgbouncer::installed() {
        return;
    }
    let (app, _bouncer) = app_through(PoolMode::Transaction, true, true).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    for round in 0..2 {
        let valid = app.concurrent_logins("maria", "senha-forte-1", 32).await;
        assert_eq!(valid, 32, "round {round}: right passwords refused");
    }
    assert_eq!(app.pool_status().await.logins_throttled_total, 0);
}

/// Without the setting, sqlx's named statements (`sqlx_s_1`, ...) collide on the server
/// connections PgBouncer shares: part of a mixed load fails with INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_without_the_setting_fails_part_of_a_mixed_load() {
    if !pgbouncer::installed() {
        return;
    }
    let (app, _bouncer) = app_through(PoolMode::Transaction, false, true).await;
    let mut tally = Tally::default();
    for i in 0..4 {
        tally.add(
            &app.add_user(&format!("user{i}"), "senha-do-user-1", 1)
                .await,
        );
    }
    let calls = (0..200).map(|n| {
        let app = &app;
        async move {
            let usuario = format!("user{}", n % 4);
            if n % 4 == 0 {
                app.login(&usuario, "senha-do-user-1").await.map(|_| ())
            } else {
                app.nivel(&usuario).await.map(|_| ())
            }
        }
    });
    for result in join_all(calls).await {
        tally.add(&result);
    }
    eprintln!("without the setting, through transaction pooling: {tally:?}");
    assert!(tally.count(Code::Internal) > 0, "{tally:?}");
}

/// PgBouncer up, PostgreSQL behind it down: PgBouncer still accepts connections, but no
/// statement is answered. Readiness goes NOT_SERVING, calls answer UNAVAILABLE within the
/// query timeout, PoolStatus says unhealthy; all recover when PostgreSQL is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_up_with_postgres_down_is_unavailable_and_recovers() {
    if !pgbouncer::installed() {
        return;
    }
    let cluster = PgCluster::start();
    migrate_directly(&cluster.url()).await;
    let bouncer = PgBouncer::start(cluster.port, &BouncerSettings::default());
    let mut config = test_config(&bouncer.url("postgres"));
    config.no_migrate = true;
    config.db.pgbouncer_transaction_pooling = true;
    config.db.query_timeout = Duration::from_secs(2);
    config.db.acquire_timeout = Duration::from_secs(2);
    let app = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("ana", "senha-da-ana-1", 3).await.unwrap();
    assert_eq!(app.nivel("ana").await.unwrap(), 3);

    cluster.kill();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    let status = app.pool_status().await;
    assert!(!status.healthy, "{status:?}");
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let code = app
            .produto
            .clone()
            .obter_nivel(ObterNivelRequest {
                usuario: "ana".into(),
            })
            .await
            .unwrap_err()
            .code();
        assert_eq!(code, Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    cluster.start_again();
    app.wait_for_readiness(ServingStatus::Serving).await;
    // The first call after the return may still meet a connection PgBouncer had cut.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app.nivel("ana").await {
            Ok(nivel) => {
                assert_eq!(nivel, 3);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(std::time::Instant::now() < deadline, "never recovered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(app.pool_status().await.healthy);
}

/// Why produto does not send `extra_float_digits`: sqlx's default startup parameters are
/// refused by PgBouncer unless it is told to ignore that one.
#[tokio::test]
async fn pgbouncer_refuses_sqlx_default_startup_parameters() {
    if !pgbouncer::installed() {
        return;
    }
    use sqlx::{ConnectOptions, Connection};
    let bouncer = PgBouncer::start(upstream_port(), &BouncerSettings::default());
    let url = bouncer.url("postgres");
    let refused = sqlx::PgConnection::connect(&url).await.unwrap_err();
    assert!(
        refused.to_string().contains("extra_float_digits"),
        "{refused}"
    );
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .extra_float_digits(None);
    let mut conn = options.connect().await.expect("accepted without it");
    conn.ping().await.unwrap();
}

/// A connection through PgBouncer as another application would open one (without the
/// startup parameter PgBouncer refuses, nothing cached).
async fn neighbour(url: &str) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    PgConnectOptions::from_str(url)
        .unwrap()
        .extra_float_digits(None)
        .statement_cache_capacity(0)
        .connect()
        .await
        .expect("a client of the PgBouncer")
}

/// Runs `sql` (one simple query) on each of PgBouncer's `pool_size` server connections: as
/// many clients each open a transaction first, so that each holds a different server
/// connection while the others run. Returns each one's rows as text.
async fn on_every_server_connection(
    url: &str,
    pool_size: u32,
    sql: &'static str,
) -> Vec<Vec<String>> {
    use sqlx::{Connection, Row};
    let mut clients = Vec::new();
    for _ in 0..pool_size {
        clients.push(neighbour(url).await);
    }
    let mut transactions = Vec::new();
    for client in &mut clients {
        transactions.push(client.begin().await.unwrap());
    }
    let mut answers = Vec::new();
    for tx in &mut transactions {
        let rows = sqlx::raw_sql(sql).fetch_all(&mut **tx).await.unwrap();
        answers.push(
            rows.iter()
                .flat_map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)))
                .collect(),
        );
    }
    for tx in transactions {
        tx.commit().await.unwrap();
    }
    answers
}

const BOUNDS: &str = "SELECT current_setting('statement_timeout'), \
     current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')";

/// A server behind a new transaction-pooling PgBouncer of `pool_size` server connections,
/// with the setting on and the query timeout `query_timeout`.
async fn app_behind_transaction_pooling(
    pool_size: u32,
    query_timeout: Duration,
) -> (TestApp, PgBouncer) {
    let database = TestDb::create(Backend::Postgres).await;
    migrate_directly(&database.url).await;
    let bouncer = PgBouncer::start(
        upstream_port(),
        &BouncerSettings {
            pool_size,
            ..BouncerSettings::default()
        },
    );
    let mut config = test_config(&bouncer.url(database_name(&database.url)));
    config.no_migrate = true;
    config.db.pgbouncer_transaction_pooling = true;
    config.db.max_connections = 6;
    config.db.query_timeout = query_timeout;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    (app, bouncer)
}

/// Under transaction pooling our query timeout is set per transaction (`SET LOCAL`): after
/// a load of ours, every server connection PgBouncer lends shows another client the
/// database's own settings, not ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_leaves_other_clients_timeouts_alone() {
    if !pgbouncer::installed() {
        return;
    }
    let pool_size = 2;
    let (app, bouncer) = app_behind_transaction_pooling(pool_size, Duration::from_secs(3)).await;
    let url = bouncer.url(database_name(&app.database.url));
    let defaults = {
        use sqlx::{Connection, Row};
        let mut direct = sqlx::PgConnection::connect(&app.database.url)
            .await
            .unwrap();
        let row = sqlx::raw_sql(BOUNDS).fetch_one(&mut direct).await.unwrap();
        (0..3).map(|i| row.get::<String, _>(i)).collect::<Vec<_>>()
    };
    assert_ne!(
        defaults[0], "3s",
        "the test needs a query timeout that is not the default"
    );

    app.add_user("ana", "senha-da-ana-1", 2).await.unwrap();
    let calls = (0..48).map(|n| {
        let app = &app;
        async move {
            if n % 8 == 0 {
                app.login("ana", "senha-da-ana-1").await.map(|_| ())
            } else {
                app.nivel("ana").await.map(|_| ())
            }
        }
    });
    for result in join_all(calls).await {
        result.unwrap();
    }
    let seen = on_every_server_connection(&url, pool_size, BOUNDS).await;
    for (n, bounds) in seen.iter().enumerate() {
        assert_eq!(bounds, &defaults, "server connection {n} of {seen:?}");
    }
}

/// A neighbour on the same PgBouncer clears the timeouts of its sessions (`SET
/// statement_timeout = 0` on every server connection); a query of ours on a locked table
/// still ends at our query timeout, ended by PostgreSQL (the connection comes back to the
/// pool, not dropped by our own later timer), as UNAVAILABLE; and runs once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_ends_a_query_on_a_locked_table_at_our_timeout() {
    if !pgbouncer::installed() {
        return;
    }
    use sqlx::Connection;
    let pool_size = 2;
    let query_timeout = Duration::from_secs(1);
    let (app, bouncer) = app_behind_transaction_pooling(pool_size, query_timeout).await;
    let url = bouncer.url(database_name(&app.database.url));
    app.add_user("ana", "senha-da-ana-1", 2).await.unwrap();
    assert_eq!(app.nivel("ana").await.unwrap(), 2);
    on_every_server_connection(
        &url,
        pool_size,
        "SET statement_timeout = 0; SET lock_timeout = 0",
    )
    .await;

    let mut locker = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE usuarios IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let lost_before = app.pool_status().await.connections_lost_total;
    let started = std::time::Instant::now();
    let refused = app.nivel("ana").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(took >= query_timeout * 9 / 10, "ended after {took:?}");
    assert_eq!(
        app.pool_status().await.connections_lost_total,
        lost_before,
        "our own timer ended the query (after {took:?}), not the database's statement_timeout"
    );
    lock.rollback().await.unwrap();
    assert_eq!(app.nivel("ana").await.unwrap(), 2);
}
