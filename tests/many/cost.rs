//! The cost per request of PgBouncer and of the transaction-pooling setting: one caller,
//! sequential ObterNivel (one statement each) and VerificarLogin-free, so the figures are
//! round trips, not hashing. Ignored by default (a measurement, not a check):
//! `cargo test --test many -- --ignored --nocapture pgbouncer_cost` (BENCHMARKS.md).

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    bouncer::{database_name, migrate_directly, upstream_port},
    helpers::{Backend, TestDb, spawn_with, test_config},
    pgbouncer::{self, BouncerSettings, PgBouncer, PoolMode},
};

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
