//! Integration tests: the real server on a loopback port, a real database per test
//! (PostgreSQL and SQLite alike), and the generated gRPC clients.

mod batch;
mod bot;
mod clients;
mod docs;
mod ops;
mod pool_release;
mod security;
mod standin;
mod startup;
mod telegram;

use std::time::{Duration, Instant};

use produto::pb::{AdicionarUsuarioRequest, ObterNivelRequest, VerificarLoginRequest};
use produto_testkit::{
    Backend, TestApp, TestDb, admin, http, proxy, spawn_app, spawn_with, test_config,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Runs each listed test against both backends: `postgres::name` and `sqlite::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
    };
}

// After the macro: they run their tests on both backends too.
mod import;
mod legacy_hashes;
mod sessions;
mod throttling;
mod users;

on_both_backends!(
    a_new_user_can_log_in_with_the_right_password,
    wrong_password_and_unknown_user_get_the_same_answer,
    obter_nivel_returns_the_level_or_not_found,
    adding_a_duplicate_user_returns_already_exists,
    adicionar_usuario_requires_the_admin_token,
    adicionar_usuario_is_refused_when_no_token_is_configured,
    bad_fields_are_invalid_argument_naming_the_field,
    oversized_requests_are_rejected_without_a_crash,
    health_reports_readiness_and_liveness,
    pool_status_reports_live_figures,
    a_short_deadline_gets_deadline_exceeded_and_frees_the_connection,
    shutdown_ends_watch_streams_and_closes_the_pool,
    outdated_hashes_are_upgraded_on_login,
    usernames_are_stored_literally,
);

async fn a_new_user_can_log_in_with_the_right_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    assert!(id > 0);
    let id2 = app.add_user("joão", "outra-senha-2", 0).await.unwrap();
    assert_ne!(id, id2);

    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
    assert_eq!(app.login("joão", "outra-senha-2").await.unwrap(), (true, 0));
}

async fn wrong_password_and_unknown_user_get_the_same_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();

    // nivel is only set when valido: a wrong password must not reveal the level.
    assert_eq!(
        app.login("maria", "senha-errada").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("ninguem", "senha-errada").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("Maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
}

async fn obter_nivel_returns_the_level_or_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("admin", "senha-do-admin", 2).await.unwrap();
    assert_eq!(app.nivel("admin").await.unwrap(), 2);

    let err = app.nivel("fantasma").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("fantasma"), "{}", err.message());
}

async fn adding_a_duplicate_user_returns_already_exists(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();
    let err = app.add_user("maria", "outra-senha-2", 5).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("maria"), "{}", err.message());
    // The first user is untouched.
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 1)
    );
}

async fn adicionar_usuario_requires_the_admin_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let message = || AdicionarUsuarioRequest {
        usuario: "intruso".into(),
        senha: "senha-forte-1".into(),
        nivel: 9,
    };
    let mut client = app.produto.clone();

    let err = client.adicionar_usuario(message()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut wrong = Request::new(message());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer not-the-token".parse().unwrap());
    let err = client.adicionar_usuario(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains(produto_testkit::ADMIN_TOKEN));

    // Unauthenticated callers learn nothing about their fields either.
    let mut bad_fields = Request::new(AdicionarUsuarioRequest {
        usuario: String::new(),
        senha: "x".into(),
        nivel: -1,
    });
    bad_fields
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let err = client.adicionar_usuario(bad_fields).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    assert_eq!(
        app.nivel("intruso").await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(client.adicionar_usuario(admin(message())).await.is_ok());
}

async fn adicionar_usuario_is_refused_when_no_token_is_configured(backend: Backend) {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    config.admin_token = None;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    let err = app.add_user("maria", "senha-forte-1", 1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("PRODUTO_ADMIN_TOKEN"),
        "{}",
        err.message()
    );
}

async fn bad_fields_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases: [(&str, &str, i32, &str); 9] = [
        ("", "senha-forte-1", 0, "usuario"),
        (&"x".repeat(65), "senha-forte-1", 0, "usuario"),
        ("a\u{0}b", "senha-forte-1", 0, "usuario"),
        ("tab\there", "senha-forte-1", 0, "usuario"),
        (" maria", "senha-forte-1", 0, "usuario"),
        ("maria ", "senha-forte-1", 0, "usuario"),
        ("maria", "curta", 0, "senha"),
        ("maria", &"x".repeat(1025), 0, "senha"),
        ("maria", "senha-forte-1", -1, "nivel"),
    ];
    for (usuario, senha, nivel, field) in cases {
        let err = app.add_user(usuario, senha, nivel).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{usuario:?}/{nivel}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    // Nothing was created by any of them.
    assert_eq!(app.nivel("maria").await.unwrap_err().code(), Code::NotFound);

    let err = app.login("", "x").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("usuario"));
    let err = app.login("maria", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("senha"));
    let err = app.nivel(&"é".repeat(65)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // 64 characters of two bytes each are within the limit (characters, not bytes).
    assert_eq!(
        app.nivel(&"é".repeat(64)).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn oversized_requests_are_rejected_without_a_crash(backend: Backend) {
    let app = spawn_app(backend).await;
    let err = app
        .login("maria", &"x".repeat(64 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    // The server is still there.
    assert_eq!(app.login("maria", "x").await.unwrap(), (false, 0));
}

async fn health_reports_readiness_and_liveness(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.health_of("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        app.health_of("produto.v1.ProdutoService").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        app.health_of("liveness").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        app.health_of("no.such.Service").await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn pool_status_reports_live_figures(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.pool_status().await;
    for i in 0..5 {
        let _ = app.nivel(&format!("u{i}")).await;
    }
    let after = app.pool_status().await;
    assert_eq!(after.status, "active");
    assert!(after.healthy);
    assert_eq!(after.min_connections, 1);
    assert_eq!(after.max_connections, 20);
    assert_eq!(after.acquires_total, before.acquires_total + 5);
    assert_eq!(after.used_connections, 0);
    assert_eq!(after.requests_waiting, 0);
    assert_eq!(after.acquire_timeouts_total, 0);
    assert!(after.pool_size >= 1 && after.pool_size <= 20, "{after:?}");
    assert!(after.idle_connections >= 1);
    assert!(after.connections_opened_total >= 1);
    assert!(after.last_probe_unix_ms > 0);
    let expected_backend = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(after.backend, expected_backend);
}

async fn a_short_deadline_gets_deadline_exceeded_and_frees_the_connection(backend: Backend) {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    // A costly argon2 (128 MiB, 16 passes: 2 GiB of memory traffic, most of a second even
    // on a fast idle core) on one hashing thread: every login takes longer than the deadline.
    config.hashing = config.hashing.with_costs(128 * 1024, 16, 1).unwrap();
    config.hashing.concurrency = 1;
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();

    // More callers than hashing slots: some are cut off while hashing, others while queued.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let mut client = app.produto.clone();
        calls.spawn(async move {
            let mut request = Request::new(VerificarLoginRequest {
                usuario: "maria".into(),
                senha: "senha-forte-1".into(),
            });
            request.set_timeout(Duration::from_millis(300));
            let started = Instant::now();
            let result = client.verificar_login(request).await;
            (result, started.elapsed())
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (result, took) = joined.unwrap();
        let err = result.unwrap_err();
        // The server answers DEADLINE_EXCEEDED a little before the deadline; on a loaded
        // machine its answer can still arrive after the client's own timer, which tonic
        // reports as CANCELLED "Timeout expired". Either way the call ended at the deadline;
        // that the server cut it is checked on its own count below.
        assert!(
            err.code() == Code::DeadlineExceeded
                || (err.code() == Code::Cancelled && err.message().contains("Timeout expired")),
            "{err:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
    }
    // The server itself gave up on every one of them (its own DEADLINE_EXCEEDED, counted
    // whether or not the client heard it first).
    let admin = app.admin_addr.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = http::http_get(admin, "/metrics").await;
        let cut = text
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains("grpc_method=\"VerificarLogin\"")
                    && l.contains("grpc_code=\"DeadlineExceeded\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if cut == 6 {
            break;
        }
        assert!(
            cut < 6 && Instant::now() < deadline,
            "the server counted {cut} DEADLINE_EXCEEDED logins, not 6"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connections come free (after the brief statements that give the abandoned
    // attempts back to the login throttle).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.pool_status().await;
        if status.used_connections == 0 && status.requests_waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections stay in use: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The hash cut off mid-way finishes in the background and frees its slot (the queued
    // ones whose callers left are never started): the service answers again afterwards.
    // How long that takes depends on the machine's load, so wait for the slot to come free
    // (a login answered other than UNAVAILABLE "busy hashing"), generously bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        match app.login("maria", "senha-forte-1").await {
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert_eq!(answer.unwrap(), (true, 1));
}

async fn shutdown_ends_watch_streams_and_closes_the_pool(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut watch = app
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let took = app.stop().await;
    // The drain bound is 3 s in tests: an open Watch stream must not hold it open.
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let mut seen = Vec::new();
    while let Some(Ok(update)) = watch.next().await {
        seen.push(update.status);
    }
    assert_eq!(seen, vec![ServingStatus::NotServing as i32]);
    assert_eq!(app.db.snapshot().status, "closed");

    // New calls are refused.
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

async fn outdated_hashes_are_upgraded_on_login(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();
    app.stop().await;
    let database = std::mem::replace(&mut app.database, TestDb::create(backend).await);
    drop(app);

    let mut config = test_config(&database.url);
    config.hashing = config.hashing.with_costs(1024, 2, 1).unwrap();
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 1)
    );
    let stored = stored_hash(&app, "maria").await;
    assert!(stored.contains("m=1024,t=2,p=1"), "{stored}");
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 1)
    );
}

async fn usernames_are_stored_literally(backend: Backend) {
    let app = spawn_app(backend).await;
    let names = [
        "'; DROP TABLE usuarios; --",
        "\" OR 1=1 --",
        "maria' OR 'a'='a",
        "%",
        "_",
        "ação ñ 日本",
    ];
    for (i, name) in names.iter().enumerate() {
        app.add_user(name, "senha-forte-1", i as i32).await.unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(app.nivel(name).await.unwrap(), i as i32, "{name}");
        assert_eq!(
            app.login(name, "senha-forte-1").await.unwrap(),
            (true, i as i32)
        );
    }
    assert_eq!(app.nivel("maria").await.unwrap_err().code(), Code::NotFound);
    let stored = stored_hash(&app, names[0]).await;
    assert!(
        stored.starts_with("$argon2id$"),
        "passwords are stored hashed"
    );
}

/// Reads a user's stored hash straight from the database, bypassing the service.
async fn stored_hash(app: &TestApp, usuario: &str) -> String {
    use produto::db::Backend as Pool;
    let sql = "SELECT senha_hash FROM usuarios WHERE usuario = $1";
    match app.db.backend() {
        Pool::Postgres(p) => sqlx::query_scalar(sql).bind(usuario).fetch_one(p).await,
        Pool::Sqlite(p) => sqlx::query_scalar(sql).bind(usuario).fetch_one(p).await,
    }
    .unwrap()
}

// PostgreSQL-only: the database goes away and comes back behind a proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_calls_fail_fast_while_it_is_down() {
    let database = TestDb::create(Backend::Postgres).await;
    let proxy = proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(url, database.url, "the admin URL must name 127.0.0.1:5432");
    let app = spawn_with(test_config(&url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 4).await.unwrap();

    proxy.down();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    assert_eq!(
        app.health_of("liveness").await.unwrap(),
        ServingStatus::Serving
    );
    let started = Instant::now();
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains("5432"),
        "no internals: {}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed fast: {:?}",
        started.elapsed()
    );
    let status = app.pool_status().await;
    assert!(!status.healthy);
    assert_eq!(status.status, "active");

    proxy.up();
    app.wait_for_readiness(ServingStatus::Serving).await;
    assert_eq!(app.nivel("maria").await.unwrap(), 4);
    assert!(app.pool_status().await.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_the_database_is_down_becomes_ready_when_it_returns() {
    let database = TestDb::create(Backend::Postgres).await;
    let proxy = proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    proxy.down();
    let url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let app = spawn_with(test_config(&url), database).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.health_of("").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(
        app.health_of("liveness").await.unwrap(),
        ServingStatus::Serving
    );
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    proxy.up();
    app.wait_for_readiness(ServingStatus::Serving).await;
    assert_eq!(app.nivel("maria").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_every_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("produto.v1.ProdutoService".into()),
        MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "produto.v1.ProdutoService",
        "produto.v1.PoolService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for _ in 0..2 {
        let response = responses.next().await.unwrap().unwrap().message_response;
        let Some(MessageResponse::FileDescriptorResponse(files)) = response else {
            panic!("expected descriptors, got {response:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_the_pool_without_leaking() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_user("maria", "senha-forte-1", 7).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let mut client = app.produto.clone();
        calls.spawn(async move {
            client
                .obter_nivel(ObterNivelRequest {
                    usuario: "maria".into(),
                })
                .await
                .map(|r| r.into_inner().nivel)
        });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap(), 7);
    }
    let status = app.wait_for_idle_pool().await;
    assert!(status.pool_size <= 20, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_is_made_with_the_adicionar_usuario_command() {
    let database = TestDb::create(Backend::Postgres).await;
    let run = |usuario: &str, senha: &str, stdin: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_produto-server"));
        command
            .env_clear()
            .env("DATABASE_URL", &database.url)
            .env("PRODUTO_ARGON2_M_KIB", "1024")
            .env("RUST_LOG", "warn")
            .args(["adicionar-usuario", usuario, "2"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if !stdin {
            command.env("PRODUTO_SENHA", senha);
        }
        let mut child = command.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if stdin {
                writeln!(input, "{senha}").unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    // As the README's first admin: the password on standard input.
    let made = run("admin", "trevo-gaveta-pimenta-4821", true);
    assert!(made.status.success(), "{made:?}");
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        stdout.contains("created user admin with level 2"),
        "{stdout}"
    );
    assert!(!stdout.contains("trevo-gaveta-pimenta-4821"));
    let from_stdin = run("outra", "outra senha longa", true);
    assert!(from_stdin.status.success(), "{from_stdin:?}");

    // The same rules as the RPC: a common password and a taken name are refused.
    let weak = run("fraco", "password123", false);
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too common"));
    let again = run("admin", "trevo-gaveta-pimenta-4821", false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let mut config = test_config(&database.url);
    config.hashing = config.hashing.with_costs(1024, 1, 1).unwrap();
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    assert_eq!(
        app.login("admin", "trevo-gaveta-pimenta-4821")
            .await
            .unwrap(),
        (true, 2)
    );
    assert_eq!(
        app.login("outra", "outra senha longa").await.unwrap(),
        (true, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_serves_on_for_the_delay_after_readiness_turns_off() {
    use produto::pb::produto_service_client::ProdutoServiceClient;
    let database = TestDb::create(Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.shutdown_delay = Duration::from_secs(2);
    let mut app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 4).await.unwrap();

    let asked = Instant::now();
    app.begin_stop();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    // A new connection, as a balancer that has not noticed yet would open, is still served.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .expect("the port stays open during the delay");
    let nivel = ProdutoServiceClient::new(channel)
        .obter_nivel(ObterNivelRequest {
            usuario: "maria".into(),
        })
        .await
        .expect("calls are served during the delay")
        .into_inner()
        .nivel;
    assert_eq!(nivel, 4);
    app.stop().await;
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
