//! The connection budget read at start: PostgreSQL's figures, and the warning gauge when
//! this instance's largest pool could not be served.

use std::time::{Duration, Instant};

use produto::{ops::metrics::Metrics, ready::ReadyFlag};

use produto_testkit::{Backend, TestApp, TestDb, spawn_with, test_config};

async fn app_with_pool_max(max_connections: u32) -> TestApp {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.db.max_connections = max_connections;
    spawn_with(config, database).await
}

async fn budget_of(app: &TestApp) -> (u32, u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(budget) = app.db.budget() {
            return budget;
        }
        assert!(Instant::now() < deadline, "the budget is never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_read_at_start_and_flags_a_pool_too_large() {
    let app = app_with_pool_max(5).await;
    let (max, available, needed) = budget_of(&app).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database.url)
        .await
        .unwrap();
    let shown: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(max.to_string(), shown);
    assert_eq!(needed, 6, "the pool's 5 and the probe");
    assert!(available < max);
    let metrics = Metrics::new(&app.db, ReadyFlag::default())
        .encode()
        .unwrap();
    assert_eq!(gauge(&metrics, "produto_db_connection_budget_ok"), 1);
    assert_eq!(
        gauge(&metrics, "produto_db_max_connections"),
        i64::from(max)
    );

    let greedy = app_with_pool_max(max + 10).await;
    let (_, available, needed) = budget_of(&greedy).await;
    assert!(needed > available);
    let metrics = Metrics::new(&greedy.db, ReadyFlag::default())
        .encode()
        .unwrap();
    assert_eq!(gauge(&metrics, "produto_db_connection_budget_ok"), 0);
}
