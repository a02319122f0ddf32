//! Timing: VerificarLogin must cost the same for an unknown user as for a known user with a
//! wrong password, throttled or not, or callers could enumerate users.
//!
//! The test compares the work each path does, which is deterministic: the statements run,
//! by name, and the argon2 verifications. (It fails on the code before issue 23: a caller's
//! refused attempt ran one claim fewer than an allowed one, so a known user guessed
//! repeatedly answered faster than fresh unknown names, and with read replicas an unknown
//! user's lookup was asked again of the primary: see `tests/faults/replicas.rs`.) The
//! times themselves are measured by the load bench's scenario 9, on the release server
//! (`cargo bench --bench load -- --scenarios 9`), and by an ignored test here that prints its
//! figures: `cargo test --test timing -- --ignored --nocapture` (argon2 is optimised in the
//! dev profile).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use produto_testkit::{
    BACKGROUND_STATEMENTS, Backend, TestApp, TestDb, spawn_with, stats, test_config,
};
use tonic_health::pb::health_check_response::ServingStatus;

/// Statements run so far, by name (the `query` label of the latency histogram), without
/// the [`BACKGROUND_STATEMENTS`] ones.
fn statements(app: &TestApp) -> BTreeMap<String, u64> {
    let mut registry = prometheus_client::registry::Registry::default();
    app.db.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("produto_db_query_duration_seconds_count{query=\""))
        .map(|rest| {
            let (name, n) = rest.split_once("\"} ").unwrap();
            (name.to_owned(), n.parse().unwrap())
        })
        .filter(|(name, _)| !BACKGROUND_STATEMENTS.contains(&name.as_str()))
        .collect()
}

/// What one call did: the statements it ran (by name, how many) and the passwords checked
/// against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Work {
    statements: BTreeMap<String, u64>,
    stored_hashes_checked: u64,
}

/// Runs one login and returns its answer and the work it did.
async fn work_of(app: &TestApp, usuario: &str, senha: &str) -> ((bool, i32), Work) {
    let before = (statements(app), app.login_counters());
    let answer = app.login(usuario, senha).await.unwrap();
    let after = (statements(app), app.login_counters());
    let statements = after
        .0
        .iter()
        .map(|(name, n)| (name.clone(), n - before.0.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let checked = after.1.password_verifications_total - before.1.password_verifications_total;
    (
        answer,
        Work {
            statements,
            stored_hashes_checked: checked,
        },
    )
}

async fn app() -> TestApp {
    let database = TestDb::create(Backend::Postgres).await;
    // The default throttling (5 per caller and username, 50 per username).
    let app = spawn_with(test_config(&database.url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();
    app.add_user("joao", "senha-forte-2", 1).await.unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_path_does_the_same_work() {
    let app = app().await;
    let mut seen: Vec<(&str, Work)> = Vec::new();
    // Interleaved, as an attacker would probe: fresh unknown names, a known user guessed
    // again and again (refused from the 6th guess on), the same unknown name again and
    // again (refused likewise), and a right password.
    for i in 0..12 {
        let (answer, work) = work_of(&app, &format!("ninguem{i}"), "senha-errada").await;
        assert_eq!(answer, (false, 0));
        seen.push(("unknown user", work));
        let (answer, work) = work_of(&app, "maria", "senha-errada").await;
        assert_eq!(answer, (false, 0));
        seen.push((
            if i < 5 {
                "wrong password"
            } else {
                "wrong password, refused"
            },
            work,
        ));
        let (answer, work) = work_of(&app, "ninguem", "senha-errada").await;
        assert_eq!(answer, (false, 0));
        seen.push((
            if i < 5 {
                "unknown user again"
            } else {
                "unknown user, refused"
            },
            work,
        ));
        let (answer, work) = work_of(&app, "joao", "senha-forte-2").await;
        assert_eq!(answer, (true, 1));
        seen.push(("right password", work));
    }
    assert_eq!(app.pool_status().await.logins_throttled_total, 14);
    let first = &seen[0].1;
    eprintln!("every login: {first:?}");
    for (path, work) in &seen {
        assert_eq!(
            work.statements, first.statements,
            "{path} ran other statements than an unknown user"
        );
    }
    assert_eq!(
        first.statements.values().sum::<u64>(),
        4,
        "two claims, one credential lookup, one resolution: {first:?}"
    );
    // Only the right password and the allowed wrong ones were checked against a stored
    // hash; every other call verified the dummy hash, which has the stored hashes' costs
    // (see `password::tests::the_dummy_hash_costs_what_a_stored_hash_costs`).
    let checked = |p: &str| {
        seen.iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, w)| w.stored_hashes_checked)
            .sum::<u64>()
    };
    assert_eq!(checked("right password"), 12);
    assert_eq!(checked("wrong password"), 5);
    assert_eq!(checked("wrong password, refused"), 0);
    assert_eq!(checked("unknown user"), 0);
}

/// The measured gap, printed: 200 logins of each kind (PRODUTO_TIMING_LOGINS), interleaved,
/// at the server's default argon2 cost, with the default throttling, a known user guessed
/// repeatedly against fresh unknown names (the case of issue 23). Prints the median and p90
/// of each, and the gap of the medians with a 95 % bootstrap interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_the_gap_between_unknown_users_and_wrong_passwords() {
    let n: usize = std::env::var("PRODUTO_TIMING_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.hashing = config.hashing.with_costs(19456, 2, 1).unwrap();
    config.hashing.queue_timeout = Duration::from_secs(30);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();
    // Warm-up: connections, statement caches, the hashing threads' memory.
    for i in 0..10 {
        app.login(&format!("aquecer{i}"), "x").await.unwrap();
    }
    let (mut unknown, mut wrong) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Alternate which goes first, so that neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_unknown in order {
            let usuario = if is_unknown {
                format!("ninguem{i}")
            } else {
                "maria".to_owned()
            };
            let started = Instant::now();
            assert!(!app.login(&usuario, "senha-errada").await.unwrap().0);
            let took = started.elapsed().as_secs_f64() * 1e3;
            if is_unknown {
                unknown.push(took)
            } else {
                wrong.push(took)
            }
        }
    }
    let g = stats::Gap::of(&unknown, &wrong);
    eprintln!(
        "timing, {n} logins each, interleaved (ms): unknown user median {:.2} p90 {:.2}; \
         wrong password median {:.2} p90 {:.2}; gap of medians {:+.2} ms ({:+.1} %), \
         95 % bootstrap interval [{:+.2}, {:+.2}] ms (holds 0: {})",
        g.median_a,
        g.p90_a,
        g.median_b,
        g.p90_b,
        g.gap,
        g.gap / g.median_b * 100.0,
        g.low,
        g.high,
        g.holds_zero(),
    );
}
