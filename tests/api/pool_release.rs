//! The patched sqlx pool (vendor/README.md): a released connection goes back to the pool
//! without a ping, and is still right for its next statement after a statement cancelled
//! midway or a transaction dropped without commit.

use std::time::Duration;

use sqlx::{Connection, postgres::PgPoolOptions};

use produto_testkit::{Backend, TestDb};

/// A pool of one connection, so that every statement reuses the one before it.
async fn one_connection(database: &TestDb) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&database.url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_statement_leaves_its_connection_right_for_the_next() {
    let database = TestDb::create(Backend::Postgres).await;
    let pool = one_connection(&database).await;
    for round in 0..3 {
        // Cut off while PostgreSQL is still sleeping: its reply is still on the way when
        // the connection goes back to the pool.
        let slow = sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.3)").fetch_one(&pool);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), slow)
                .await
                .is_err(),
            "round {round}: the sleep answered within 30 ms"
        );
        // The next statement gets its own answer, not the cancelled one's.
        let next: i32 = sqlx::query_scalar("SELECT $1")
            .bind(round + 2)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(next, round + 2);
    }
    // The same connection all along: none was closed and reopened.
    assert_eq!(pool.size(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_without_commit_is_rolled_back_before_reuse() {
    let database = TestDb::create(Backend::Postgres).await;
    let pool = one_connection(&database).await;
    sqlx::query("CREATE TABLE marks (n int)")
        .execute(&pool)
        .await
        .unwrap();
    {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO marks VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        // Dropped here: sqlx queues a ROLLBACK, which the release must send.
    }
    let mut conn = pool.acquire().await.unwrap();
    assert!(!conn.is_in_transaction());
    let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM marks")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(marks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_connection_is_available_at_once() {
    let database = TestDb::create(Backend::Postgres).await;
    let pool = one_connection(&database).await;
    for _ in 0..200 {
        let mut conn = pool.acquire().await.unwrap();
        let _: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        // Back in the idle queue when the drop returns, not after a spawned ping.
        assert_eq!(pool.num_idle(), 1);
    }
}
