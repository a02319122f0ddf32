//! Brute-force throttling as an attacker tries it: guesses sent all at once across several
//! instances, a victim locked out on purpose, and a flood of random usernames.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use produto::{
    db::Backend as DbBackend, login::throttle::LoginThrottle, login::throttle::TrustEndUser,
    pb::VerificarLoginRequest,
};
use tonic::Request;
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestApp, TestDb, spawn_with, test_config};

/// Passwords checked against a stored hash by these instances so far.
fn verifications(apps: &[&TestApp]) -> u64 {
    apps.iter()
        .map(|app| app.login_counters().password_verifications_total)
        .sum()
}

/// Waits (up to 30 s) until `condition` holds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two instances on one PostgreSQL database, with `config` adjusted by `tune`.
async fn two_instances(tune: impl Fn(&mut produto::config::Settings)) -> (TestApp, TestApp) {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    tune(&mut config);
    let a = spawn_with(config.clone(), database).await;
    a.wait_for_readiness(ServingStatus::Serving).await;
    // The second instance's own TestDb is an unused placeholder: the database is `a`'s.
    let b = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
    b.wait_for_readiness(ServingStatus::Serving).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_across_two_instances_verify_no_more_than_the_limit() {
    const GUESSES: usize = 40;
    const LIMIT: u32 = 5;
    let (a, b) = two_instances(|config| {
        config.throttle.max_failures = LIMIT;
        // One hashing thread per instance, and hashes slow enough that the guesses queue:
        // they are all in flight while the right password is sent.
        config.hashing = config.hashing.clone().with_costs(8 * 1024, 2, 1).unwrap();
        config.hashing.concurrency = 1;
        // Waiting for the hashing slot is not what this test is about.
        config.hashing.queue_timeout = Duration::from_secs(60);
        config.db.acquire_timeout = Duration::from_secs(60);
    })
    .await;
    a.add_user("maria", "senha-forte-1", 2).await.unwrap();
    let before = verifications(&[&a, &b]);

    let answered = Arc::new(AtomicUsize::new(0));
    let mut guesses = Vec::new();
    for i in 0..GUESSES {
        let app = if i % 2 == 0 { &a } else { &b };
        let mut client = app.produto.clone();
        let answered = answered.clone();
        guesses.push(tokio::spawn(async move {
            let r = client
                .verificar_login(produto::pb::VerificarLoginRequest {
                    usuario: "maria".into(),
                    senha: format!("errada-{i}"),
                })
                .await;
            answered.fetch_add(1, Ordering::SeqCst);
            r.map(|r| r.into_inner().valido)
        }));
    }
    // The guesses have begun (the limit's worth are being verified) and most are still in
    // flight when the right password arrives.
    wait_until("the guesses begin to be verified", || {
        verifications(&[&a, &b]) - before >= u64::from(LIMIT)
    })
    .await;
    let in_flight = GUESSES - answered.load(Ordering::SeqCst);
    let right = b.login("maria", "senha-forte-1").await.unwrap();
    let mut wrong_accepted = 0;
    for guess in guesses {
        if guess.await.unwrap().expect("every guess gets an answer") {
            wrong_accepted += 1;
        }
    }
    let verified = verifications(&[&a, &b]) - before;
    eprintln!(
        "{GUESSES} concurrent guesses on two instances, limit {LIMIT}: {verified} verified; \
         right password sent with {in_flight} in flight: {right:?}"
    );
    assert!(in_flight > 0, "the guesses had all been answered already");
    assert_eq!(wrong_accepted, 0);
    assert_eq!(right, (false, 0), "the right password got through the lock");
    assert!(
        verified <= u64::from(LIMIT),
        "{verified} guesses verified with a limit of {LIMIT}"
    );
}

/// A login sent on behalf of an end user (as the bot sends it).
async fn login_as(app: &TestApp, end_user: &str, usuario: &str, senha: &str) -> (bool, i32) {
    let mut request = Request::new(VerificarLoginRequest {
        usuario: usuario.into(),
        senha: senha.into(),
    });
    request
        .metadata_mut()
        .insert("produto-end-user", end_user.parse().unwrap());
    let r = app
        .produto
        .clone()
        .verificar_login(request)
        .await
        .unwrap()
        .into_inner();
    (r.valido, r.nivel)
}

/// One server whose callers are all trusted to name their end user.
async fn trusting_app(backend: Backend, tune: impl Fn(&mut produto::config::Settings)) -> TestApp {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    config.throttle.trust_end_user = TrustEndUser::Always;
    tune(&mut config);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

on_both_backends!(
    the_victim_logs_in_while_an_attacker_is_locked_out,
    many_attackers_together_lock_the_username_until_the_window_passes,
    expired_attempts_are_purged_so_a_flood_of_usernames_does_not_accumulate,
    a_purge_removes_only_expired_rows_in_batches,
);

async fn the_victim_logs_in_while_an_attacker_is_locked_out(backend: Backend) {
    let app = trusting_app(backend, |config| config.throttle.max_failures = 3).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            login_as(&app, "telegram:666", "maria", "errada").await,
            (false, 0)
        );
    }
    // The attacker is locked out, even with the right password...
    assert_eq!(
        login_as(&app, "telegram:666", "maria", "senha-forte-1").await,
        (false, 0)
    );
    assert_eq!(app.pool_status().await.logins_throttled_total, 1);
    // ...and the victim, from its own identity, is not.
    assert_eq!(
        login_as(&app, "telegram:1", "maria", "senha-forte-1").await,
        (true, 2)
    );
    // Nor is a caller that names no end user (counted by its address).
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 2)
    );
    assert_eq!(app.pool_status().await.logins_throttled_total, 1);
}

async fn many_attackers_together_lock_the_username_until_the_window_passes(backend: Backend) {
    let window = Duration::from_secs(2);
    let app = trusting_app(backend, |config| {
        config.throttle.max_failures = 2;
        config.throttle.max_failures_per_user = 6;
        config.throttle.window = window;
    })
    .await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    let began = Instant::now();
    // Three attackers, each within its own limit, use up the username's six attempts.
    for attacker in 0..3 {
        for _ in 0..2 {
            let who = format!("attacker:{attacker}");
            assert_eq!(login_as(&app, &who, "maria", "errada").await, (false, 0));
        }
    }
    let before = app.login_counters().password_verifications_total;
    // Now everyone is refused unchecked: a fresh attacker, and the victim too.
    assert_eq!(
        login_as(&app, "attacker:3", "maria", "senha-forte-1").await,
        (false, 0)
    );
    for _ in 0..3 {
        assert_eq!(
            login_as(&app, "telegram:1", "maria", "senha-forte-1").await,
            (false, 0)
        );
    }
    assert_eq!(app.login_counters().password_verifications_total, before);
    assert_eq!(app.pool_status().await.logins_throttled_total, 4);

    // When the window has passed, the victim logs in: its refused attempts were not held
    // against it (three of them, more than its own limit of two).
    tokio::time::sleep((began + window + Duration::from_millis(100)) - Instant::now()).await;
    assert_eq!(
        login_as(&app, "telegram:1", "maria", "senha-forte-1").await,
        (true, 2)
    );
    assert_eq!(
        app.login_counters().password_verifications_total,
        before + 1
    );
}

/// Rows in the attempts table.
async fn attempt_rows(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM login_tentativas";
    match app.db.backend() {
        DbBackend::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        DbBackend::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Logins on `n` random usernames, a few at a time; each leaves two rows (the caller's and
/// the username's).
async fn flood(app: &TestApp, n: usize) {
    let tag: u32 = rand_tag();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(8, |i| async move {
            let usuario = format!("flood-{tag}-{i}");
            assert_eq!(app.login(&usuario, "x").await.unwrap(), (false, 0));
        })
        .await;
}

fn rand_tag() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}

async fn expired_attempts_are_purged_so_a_flood_of_usernames_does_not_accumulate(backend: Backend) {
    const FLOOD: usize = 150;
    let window = Duration::from_secs(1);
    let app = trusting_app(backend, |config| config.throttle.window = window).await;

    flood(&app, FLOOD).await;
    let after_first = attempt_rows(&app).await;
    assert!(
        after_first > 0 && after_first <= 2 * FLOOD as i64,
        "{after_first}"
    );
    // The background purge empties the table once the window has passed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while attempt_rows(&app).await > 0 {
        assert!(Instant::now() < deadline, "expired rows were never purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_purge_removes_only_expired_rows_in_batches(backend: Backend) {
    // A long window: the server's own purge stays out of the way.
    let app = trusting_app(backend, |config| {
        config.throttle.window = Duration::from_secs(3600)
    })
    .await;
    flood(&app, 10).await;
    assert_eq!(attempt_rows(&app).await, 20);
    let policy = |window| LoginThrottle {
        max_failures: 5,
        max_failures_per_user: 50,
        window,
        trust_end_user: TrustEndUser::Never,
        authenticated: produto::login::throttle::has_client_certificate,
        tell_authenticated: false,
    };
    assert_eq!(
        policy(Duration::from_secs(3600))
            .purge(&app.db)
            .await
            .unwrap(),
        0
    );
    // More rows than one batch holds, straight through the queries the service uses.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let maria = produto::domain::Usuario::parse("maria".into()).unwrap();
    for i in 0..2500 {
        produto::login::throttle::claim_login_attempt(
            &app.db,
            &maria,
            &format!("ip:10.0.{}.{}", i / 256, i % 256),
            (now_ms - 10, 0, now_ms - 10),
        )
        .await
        .unwrap();
    }
    assert_eq!(attempt_rows(&app).await, 2520);
    let purged = policy(Duration::ZERO).purge(&app.db).await.unwrap();
    assert_eq!(purged, 2520);
    assert_eq!(attempt_rows(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_caller_cannot_escape_its_lock_by_naming_an_end_user() {
    // The default: only authenticated callers (a client certificate) may name an end user.
    let database = TestDb::create(Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.throttle.max_failures = 2;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    for i in 0..2 {
        let forged = format!("telegram:{i}");
        assert_eq!(login_as(&app, &forged, "maria", "errada").await, (false, 0));
    }
    // Every one of those counted against the caller's address: it is locked out.
    assert_eq!(
        login_as(&app, "telegram:99", "maria", "senha-forte-1").await,
        (false, 0)
    );
    assert_eq!(app.pool_status().await.logins_throttled_total, 1);
}

/// 32 logins of one user with the right password, all at once from one address, with a
/// limit of 5: every one is valid. (Before attempts in flight were told apart from failed
/// ones, the 6th and later found the limit taken and were answered `valido: false`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_right_password_logins_of_one_user_from_one_address_all_succeed() {
    const LOGINS: usize = 32;
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.throttle.max_failures = 5;
    // Hashes slow enough that many logins are in flight at once.
    config.hashing = config.hashing.clone().with_costs(4 * 1024, 2, 1).unwrap();
    config.hashing.queue_timeout = Duration::from_secs(60);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    let before = app.login_counters();
    let valid = app
        .concurrent_logins("maria", "senha-forte-1", LOGINS)
        .await;
    let after = app.login_counters();
    assert_eq!(valid, LOGINS, "right passwords refused");
    assert_eq!(
        after.password_verifications_total - before.password_verifications_total,
        LOGINS as u64
    );
    assert_eq!(after.logins_throttled_total, before.logins_throttled_total);
    // The claims were all given back: a wrong guess now is the first failure of five.
    assert_eq!(attempt_counts(&app, "maria").await, vec![(0, 0), (0, 0)]);
}

/// Every row of a username in the attempts table: (failures, in flight), the caller's first.
async fn attempt_counts(app: &TestApp, usuario: &str) -> Vec<(i32, i32)> {
    let sql = "SELECT tentativas, em_curso FROM login_tentativas WHERE usuario = $1
               ORDER BY identidade = '*', identidade";
    match app.db.backend() {
        DbBackend::Postgres(pool) => sqlx::query_as(sql).bind(usuario).fetch_all(pool).await,
        DbBackend::Sqlite(pool) => sqlx::query_as(sql).bind(usuario).fetch_all(pool).await,
    }
    .unwrap()
}

const SERVICE_TOKEN: &str = "service-token-0123456789";

/// A server with a caller token for "billing" and a limit of two failures, telling
/// authenticated callers about throttling or not.
async fn told_app(tell_authenticated: bool) -> (TestApp, tempfile::TempDir) {
    let database = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(&tokens, format!("billing {SERVICE_TOKEN}\n")).unwrap();
    let mut config = test_config(&database.url);
    config.caller_tokens_file = Some(tokens);
    config.throttle.max_failures = 2;
    config.throttle.tell_authenticated = tell_authenticated;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    (app, dir)
}

/// A login sent with the service's caller token.
async fn login_as_service(
    app: &TestApp,
    usuario: &str,
    senha: &str,
) -> Result<(bool, i32), tonic::Status> {
    let mut request = Request::new(VerificarLoginRequest {
        usuario: usuario.into(),
        senha: senha.into(),
    });
    let bearer = format!("Bearer {SERVICE_TOKEN}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let r = app.produto.clone().verificar_login(request).await?;
    Ok((r.get_ref().valido, r.get_ref().nivel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_caller_is_told_a_login_was_throttled_and_when_to_retry() {
    use tonic_types::StatusExt;
    let (app, _dir) = told_app(true).await;
    for _ in 0..2 {
        assert_eq!(
            login_as_service(&app, "maria", "errada").await.unwrap(),
            (false, 0)
        );
    }
    let throttled = login_as_service(&app, "maria", "senha-forte-1")
        .await
        .unwrap_err();
    assert_eq!(
        throttled.code(),
        tonic::Code::ResourceExhausted,
        "{throttled:?}"
    );
    let details = throttled.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "LOGIN_THROTTLED");
    assert_eq!(info.domain, "produto");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("caller")
    );
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo");
    // The window is 15 minutes, begun at the first failure a moment ago.
    assert!(
        retry > Duration::from_secs(14 * 60) && retry <= Duration::from_secs(15 * 60),
        "{retry:?}"
    );
    assert!(
        throttled.message().contains("retry in"),
        "{}",
        throttled.message()
    );
    // An anonymous caller from the same address shares the count, and is answered as a
    // wrong password: nothing tells it apart.
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    assert_eq!(app.pool_status().await.logins_throttled_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_setting_off_an_authenticated_caller_gets_a_wrong_password() {
    let (app, _dir) = told_app(false).await;
    for _ in 0..2 {
        assert_eq!(
            login_as_service(&app, "maria", "errada").await.unwrap(),
            (false, 0)
        );
    }
    assert_eq!(
        login_as_service(&app, "maria", "senha-forte-1")
            .await
            .unwrap(),
        (false, 0)
    );
    assert_eq!(app.pool_status().await.logins_throttled_total, 1);
}
