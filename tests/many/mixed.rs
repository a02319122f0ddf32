//! The mixed load issue 23 was filed on: 16 callers from one address, each sending, of every
//! ten calls, eight ObterNivel, one VerificarLogin of one user with the right password and one
//! AdicionarUsuario, through PgBouncer in transaction pooling (6 s) and straight to PostgreSQL
//! (2 min). Before issue 23 a few right-password logins of every run were answered
//! `valido: false`; now none may be. Production's argon2 cost and throttling defaults, so
//! that logins overlap as they do in production. Ignored by default (minutes of load):
//! `cargo test --test many mixed_load -- --ignored --nocapture` (`PRODUTO_MIXED_SECS`
//! overrides both durations).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use produto::{
    Settings,
    pb::{
        AdicionarUsuarioRequest, ObterNivelRequest, VerificarLoginRequest,
        produto_service_client::ProdutoServiceClient,
    },
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{
    Backend, TestApp, TestDb, admin,
    pgbouncer::{self, BouncerSettings, PgBouncer},
    spawn_with, test_config,
};

use crate::bouncer::{database_name, migrate_directly, upstream_port};

const CALLERS: usize = 16;
const USER: &str = "maria";
const PASSWORD: &str = "senha-forte-da-maria";

/// What the callers got, per RPC: answers by outcome (`ok`, `refused` for a right password
/// answered `valido: false`, or the gRPC code of an error).
#[derive(Debug, Default)]
struct Counts(BTreeMap<(&'static str, String), u64>);

impl Counts {
    fn add(&mut self, rpc: &'static str, outcome: String) {
        *self.0.entry((rpc, outcome)).or_default() += 1;
    }

    fn merge(&mut self, other: Counts) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    fn get(&self, rpc: &'static str, outcome: &str) -> u64 {
        self.0.get(&(rpc, outcome.to_owned())).copied().unwrap_or(0)
    }

    fn of(&self, rpc: &'static str) -> u64 {
        self.0
            .iter()
            .filter(|((r, _), _)| *r == rpc)
            .map(|(_, n)| n)
            .sum()
    }
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// How long a run lasts: `default`, or `PRODUTO_MIXED_SECS`.
fn duration(default: Duration) -> Duration {
    std::env::var("PRODUTO_MIXED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(default, Duration::from_secs)
}

/// One caller on a connection of its own (all from 127.0.0.1, so one throttling identity):
/// calls in a cycle of ten, starting at its own place in the cycle so that the callers' logins
/// and additions spread over time, until `until`.
async fn caller(channel: Channel, index: usize, until: Instant) -> Counts {
    let mut client = ProdutoServiceClient::new(channel);
    let mut counts = Counts::default();
    let mut n = index;
    while Instant::now() < until {
        match n % 10 {
            8 => {
                let result = client
                    .verificar_login(VerificarLoginRequest {
                        usuario: USER.into(),
                        senha: PASSWORD.into(),
                    })
                    .await
                    .map(|r| r.into_inner());
                let what = match &result {
                    Ok(r) if r.valido => "ok".into(),
                    Ok(_) => "refused".into(),
                    Err(_) => outcome(&result),
                };
                counts.add("VerificarLogin", what);
            }
            9 => {
                let result = client
                    .adicionar_usuario(admin(AdicionarUsuarioRequest {
                        usuario: format!("c{index}n{n}"),
                        senha: "senha-forte-nova".into(),
                        nivel: 1,
                    }))
                    .await;
                counts.add("AdicionarUsuario", outcome(&result));
            }
            _ => {
                let result = client
                    .obter_nivel(ObterNivelRequest {
                        usuario: USER.into(),
                    })
                    .await;
                counts.add("ObterNivel", outcome(&result));
            }
        }
        n += 1;
    }
    counts
}

/// Runs the load against `app` for `length`, prints the counts and asserts that no right
/// password was refused.
async fn run(app: &TestApp, what: &str, length: Duration) {
    app.add_user(USER, PASSWORD, 2).await.unwrap();
    let throttled_before = app.pool_status().await.logins_throttled_total;
    let mut channels = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        let channel = Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    let started = Instant::now();
    let until = started + length;
    let callers: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(i, channel)| tokio::spawn(caller(channel, i, until)))
        .collect();
    let mut counts = Counts::default();
    for caller in callers {
        counts.merge(caller.await.unwrap());
    }
    let took = started.elapsed();
    let throttled = app.pool_status().await.logins_throttled_total - throttled_before;
    eprintln!(
        "{what}: {CALLERS} callers for {took:.1?}, {} calls",
        counts.0.values().sum::<u64>()
    );
    for ((rpc, outcome), n) in &counts.0 {
        eprintln!("  {rpc:<17} {outcome:<18} {n:>7}");
    }
    eprintln!("  logins throttled (server's counter): {throttled}");
    let logins = counts.of("VerificarLogin");
    assert!(logins > 0, "no login was sent");
    assert_eq!(
        counts.get("VerificarLogin", "refused"),
        0,
        "{what}: right passwords answered valido=false, of {logins} logins"
    );
    assert_eq!(throttled, 0, "{what}: logins throttled");
}

/// Production's hashing cost and throttling over the tests' other settings.
fn production_like(url: &str) -> Settings {
    let mut config = test_config(url);
    config.hashing = Settings::new(url).hashing;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load run: run it with --ignored --nocapture"]
async fn mixed_load_through_transaction_pooling_refuses_no_right_password() {
    if !pgbouncer::installed() {
        return;
    }
    let database = TestDb::create(Backend::Postgres).await;
    migrate_directly(&database.url).await;
    let bouncer = PgBouncer::start(upstream_port(), &BouncerSettings::default());
    let mut config = production_like(&bouncer.url(database_name(&database.url)));
    config.no_migrate = true;
    config.db.pgbouncer_transaction_pooling = true;
    // More client connections than PgBouncer's 4 server connections, so that they share them.
    config.db.max_connections = 12;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    run(
        &app,
        "through PgBouncer (transaction pooling)",
        duration(Duration::from_secs(6)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load run: run it with --ignored --nocapture"]
async fn mixed_load_directly_refuses_no_right_password() {
    let database = TestDb::create(Backend::Postgres).await;
    let app = spawn_with(production_like(&database.url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    run(&app, "directly", duration(Duration::from_secs(120))).await;
}
