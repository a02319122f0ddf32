//! Security: brute-force throttling, TLS and mutual TLS, fuzzed requests, malformed
//! protobuf. (Timing against user enumeration is tests/timing.rs.)

use std::time::Duration;

use proptest::{prelude::*, test_runner::TestRunner};
use tonic::{
    Code, Request,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::health_check_response::ServingStatus;

use produto::{
    Application,
    config::TlsSettings,
    pb::{
        AdicionarUsuarioRequest, ObterNivelRequest, VerificarLoginRequest,
        produto_service_client::ProdutoServiceClient,
    },
};
use produto_testkit::{Backend, TestDb, admin, spawn_with, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_a_caller_out_of_a_username_across_instances_until_the_window_passes()
 {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.throttle.max_failures = 3;
    config.throttle.window = Duration::from_secs(2);
    let a = spawn_with(config.clone(), database).await;
    a.wait_for_readiness(ServingStatus::Serving).await;
    // A second instance on the same database shares the count. (Its own TestDb is an
    // unused placeholder: the database belongs to `a`.)
    let b = spawn_with(config, TestDb::create(Backend::Sqlite).await).await;
    b.wait_for_readiness(ServingStatus::Serving).await;

    a.add_user("maria", "senha-forte-1", 2).await.unwrap();
    for app in [&a, &b, &a] {
        assert_eq!(app.login("maria", "errada").await.unwrap(), (false, 0));
    }
    // Locked: even the right password is refused, on either instance, like a wrong one.
    assert_eq!(b.login("maria", "senha-forte-1").await.unwrap(), (false, 0));
    assert_eq!(a.login("maria", "senha-forte-1").await.unwrap(), (false, 0));
    assert_eq!(a.pool_status().await.logins_throttled_total, 1);
    assert_eq!(b.pool_status().await.logins_throttled_total, 1);
    // Unknown usernames are throttled the same way.
    for _ in 0..4 {
        assert_eq!(a.login("ninguem", "x").await.unwrap(), (false, 0));
    }
    assert_eq!(a.pool_status().await.logins_throttled_total, 2);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(a.login("maria", "senha-forte-1").await.unwrap(), (true, 2));
    // Success cleared the count: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(a.login("maria", "errada").await.unwrap(), (false, 0));
    }
    assert_eq!(a.login("maria", "senha-forte-1").await.unwrap(), (true, 2));
}

/// A CA, a server certificate for localhost and a client certificate, made at test time.
pub(crate) struct Pki {
    pub(crate) ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        // Every certificate gets a name of its own: with rcgen's one default name for all,
        // a leaf's issuer equals its subject, and BoringSSL (grpcio) takes it for self-signed.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "produto test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].as_str());
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["produto-bot".into()]);
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

/// A server with TLS on (and client certificates required when `mutual`).
pub(crate) struct TlsServer {
    pub(crate) addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), produto::Error>>,
    _database: TestDb,
}

impl TlsServer {
    pub(crate) async fn start(pki: &Pki, mutual: bool) -> TlsServer {
        Self::start_with(pki, mutual, |_| {}).await
    }

    /// As `start`, with the admin port on and the configuration adjusted by `configure`.
    async fn start_with(
        pki: &Pki,
        mutual: bool,
        configure: impl FnOnce(&mut produto::config::Settings),
    ) -> TlsServer {
        let database = TestDb::create(Backend::Sqlite).await;
        let mut config = test_config(&database.url);
        config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        config.tls = Some(TlsSettings {
            cert: pki.file("server.pem", &pki.server_cert),
            key: pki.file("server.key", &pki.server_key),
            client_ca: mutual.then(|| pki.file("ca.pem", &pki.ca)),
        });
        configure(&mut config);
        let app = Application::build(config).await.unwrap();
        let addr = app.local_addr();
        let admin_addr = app.admin_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        // Wait (generously: the machine may be busy) until the probe marks the server ready.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while produto_testkit::http::http_get(admin_addr, "/readyz")
            .await
            .0
            != 200
        {
            assert!(std::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TlsServer {
            addr,
            admin_addr,
            stop,
            task,
            _database: database,
        }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn tls_client(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<ProdutoServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(ProdutoServiceClient::new(channel))
}

async fn nivel(
    client: Result<ProdutoServiceClient<tonic::transport::Channel>, tonic::transport::Error>,
    usuario: &str,
) -> Result<i32, String> {
    let mut client = client.map_err(|e| format!("connect: {e}"))?;
    client
        .obter_nivel(ObterNivelRequest {
            usuario: usuario.into(),
        })
        .await
        .map(|r| r.into_inner().nivel)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, true).await;
    let addr = server.addr;

    let trusting = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost")
    };
    let with_cert = trusting().identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    let good = nivel(tls_client(addr, with_cert).await, "ninguem").await;
    assert_eq!(good, Err("NotFound: usuario 'ninguem' not found".into()));

    // The bot speaks mutual TLS to an https:// server.
    let mut bot_config =
        produto_bot::BotConfig::for_server(format!("https://localhost:{}", addr.port()));
    bot_config.tls_ca = Some(pki.file("bot-ca.pem", &pki.ca));
    bot_config.tls_cert = Some(pki.file("bot.pem", &pki.client_cert));
    bot_config.tls_key = Some(pki.file("bot.key", &pki.client_key));
    let bot = produto_bot::Bot::build(&bot_config).unwrap();
    let chat = produto_bot::ChatId(1);
    assert_eq!(
        bot.handle(chat, "/login ninguem senha-errada").await,
        produto_bot::reply::LOGIN_FAILED
    );
    // Without its certificate the bot is refused: it never gets an answer to the login.
    bot_config.tls_cert = None;
    bot_config.tls_key = None;
    let bot = produto_bot::Bot::build(&bot_config).unwrap();
    let refused = bot.handle(chat, "/login ninguem senha-errada").await;
    assert_ne!(refused, produto_bot::reply::LOGIN_FAILED);
    assert!(!refused.is_empty());

    let without_cert = nivel(tls_client(addr, trusting()).await, "ninguem").await;
    let err = without_cert.unwrap_err();
    assert!(
        !err.starts_with("NotFound"),
        "a client without a certificate got in: {err}"
    );

    // A plaintext client gets nowhere either.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map(ProdutoServiceClient::new);
    assert!(nivel(plain, "ninguem").await.is_err());

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_certificates_serves_any_client_that_trusts_the_server() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, false).await;
    let addr = server.addr;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let answer = nivel(tls_client(addr, tls).await, "ninguem").await;
    assert_eq!(answer, Err("NotFound: usuario 'ninguem' not found".into()));
    // A client that does not trust the server's CA refuses it.
    let untrusting = ClientTlsConfig::new().domain_name("localhost");
    assert!(
        nivel(tls_client(addr, untrusting).await, "ninguem")
            .await
            .is_err()
    );
    server.stop().await;
}

/// The codes a well-behaved server may answer to arbitrary input.
fn acceptable(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::ResourceExhausted
    )
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[a-z]{1,10}",
        "\\PC{60,70}",
        // Combining characters, right-to-left marks, NULs and other controls.
        "[a\u{0300}\u{0301}\u{200f}\u{0}\u{7}\u{feff} ]{0,80}",
        prop::collection::vec(any::<char>(), 0..3000).prop_map(|v| v.into_iter().collect()),
    ]
}

#[test]
fn fuzzed_requests_always_get_a_proper_status() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let database = TestDb::create(Backend::Postgres).await;
        let app = spawn_with(test_config(&database.url), database).await;
        app.wait_for_readiness(ServingStatus::Serving).await;
        app
    });
    let cases = 400;
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (arbitrary_text(), arbitrary_text(), any::<i32>());
    runner
        .run(&strategy, |(usuario, senha, nivel)| {
            rt.block_on(async {
                let mut client = app.produto.clone();
                let codes = [
                    client
                        .verificar_login(VerificarLoginRequest {
                            usuario: usuario.clone(),
                            senha: senha.clone(),
                        })
                        .await
                        .map_or_else(|s| s.code(), |_| Code::Ok),
                    client
                        .obter_nivel(ObterNivelRequest {
                            usuario: usuario.clone(),
                        })
                        .await
                        .map_or_else(|s| s.code(), |_| Code::Ok),
                    client
                        .adicionar_usuario(admin(AdicionarUsuarioRequest {
                            usuario: usuario.clone(),
                            senha: senha.clone(),
                            nivel,
                        }))
                        .await
                        .map_or_else(|s| s.code(), |_| Code::Ok),
                ];
                for code in codes {
                    prop_assert!(acceptable(code), "{code:?} for {usuario:?}/{nivel}");
                }
                Ok(())
            })
        })
        .unwrap();
    eprintln!(
        "fuzz: {cases} generated inputs, {} calls, every answer a proper status",
        cases * 3
    );
    rt.block_on(async {
        // Still healthy after all of it.
        assert_eq!(app.health_of("").await.unwrap(), ServingStatus::Serving);
        app.wait_for_idle_pool().await;
    });
    drop(app);
}

/// A wire-compatible twin of ObterNivelRequest whose field is raw bytes, to send what a
/// string field may not hold.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRequest {
    #[prost(bytes = "vec", tag = "1")]
    usuario: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    let app = produto_testkit::spawn_app(Backend::Sqlite).await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/produto.v1.ProdutoService/ObterNivel",
    );
    let codec: tonic_prost::ProstCodec<RawRequest, produto::pb::ObterNivelResponse> =
        tonic_prost::ProstCodec::default();
    let err = grpc
        .unary(
            Request::new(RawRequest {
                usuario: vec![b'a', 0xff, 0xfe],
            }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("malformed request"),
        "{}",
        err.message()
    );
}

const BILLING_TOKEN: &str = "billing-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_caller_authentication_only_named_callers_are_served_and_counted() {
    use crate::ops::{call_path, rpc_method_labels, sample, scrape};
    use produto::auth::ADMIN_TOKEN_KEY;
    let database = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(&tokens, format!("# name token\nbilling {BILLING_TOKEN}\n")).unwrap();
    let mut config = test_config(&database.url);
    config.caller_auth = true;
    config.caller_tokens_file = Some(tokens);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, database).await;
    // Health answers without an identity.
    app.wait_for_readiness(ServingStatus::Serving).await;

    let as_billing = |mut request: Request<ObterNivelRequest>| {
        let value = format!("Bearer {BILLING_TOKEN}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        request
    };
    let nivel_of = |usuario: &str| ObterNivelRequest {
        usuario: usuario.into(),
    };
    let mut client = app.produto.clone();

    // No identity, a wrong token, or only the admin token: UNAUTHENTICATED, saying how.
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("authorization: Bearer"),
        "{}",
        err.message()
    );
    let mut wrong = Request::new(nivel_of("maria"));
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer billing-token-0123456780".parse().unwrap(),
    );
    let err = client.obter_nivel(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let reason = |err: &tonic::Status| {
        tonic_types::StatusExt::get_error_details(err)
            .error_info()
            .map(|info| info.reason.clone())
    };
    assert_eq!(reason(&err).as_deref(), Some("CALLER_TOKEN_INVALID"));
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CALLER_MISSING"));
    // The admin token alone, in `authorization`, is no caller token.
    let err = app.add_user("maria", "senha-forte-1", 3).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CALLER_TOKEN_INVALID"));
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // The caller token in `authorization`, the admin token beside it in its own key.
    let mut add = Request::new(AdicionarUsuarioRequest {
        usuario: "maria".into(),
        senha: "senha-forte-1".into(),
        nivel: 3,
    });
    add.metadata_mut().insert(
        "authorization",
        format!("Bearer {BILLING_TOKEN}").parse().unwrap(),
    );
    add.metadata_mut().insert(
        ADMIN_TOKEN_KEY,
        produto_testkit::ADMIN_TOKEN.parse().unwrap(),
    );
    client.adicionar_usuario(add).await.unwrap();
    let nivel = client.obter_nivel(as_billing(Request::new(nivel_of("maria"))));
    assert_eq!(nivel.await.unwrap().into_inner().nivel, 3);

    // Strangers sending to random paths are refused and counted under `unknown`.
    for i in 0..30 {
        let code = call_path(app.channel.clone(), &format!("/x{i}.Svc/M{i}"), &[]).await;
        assert_eq!(code, Code::Unauthenticated);
    }
    let metrics = scrape(&app).await;
    let caller = "produto_rpc_caller_total";
    let count = |labels: &[(&str, &str)]| sample(&metrics, caller, labels);
    assert_eq!(
        count(&[
            ("caller", "billing"),
            ("grpc_method", "ObterNivel"),
            ("grpc_code", "OK")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("caller", "billing"),
            ("grpc_method", "AdicionarUsuario"),
            ("grpc_code", "OK")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("caller", "anonymous"),
            ("grpc_method", "unknown"),
            ("grpc_code", "Unauthenticated")
        ]),
        30.0
    );
    let methods = rpc_method_labels(&metrics);
    assert!(!methods.iter().any(|m| m.starts_with('M')), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_caller_authentication_a_client_certificate_names_the_caller() {
    let pki = Pki::new();
    let server = TlsServer::start_with(&pki, true, |c| c.caller_auth = true).await;
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let with_cert = trusting.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    // Served (the user is absent), not UNAUTHENTICATED: the certificate is the identity.
    let answer = nivel(tls_client(server.addr, with_cert).await, "ninguem").await;
    assert_eq!(answer, Err("NotFound: usuario 'ninguem' not found".into()));
    let (_, body) = produto_testkit::http::http_get(server.admin_addr, "/metrics").await;
    assert!(
        body.contains(r#"produto_rpc_caller_total{caller="produto-bot",grpc_method="ObterNivel",grpc_code="NotFound"} 1"#),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_hash_asking_for_4_gib_is_refused_fast_without_the_allocation() {
    use sqlx::Connection;
    let app = produto_testkit::spawn_app(Backend::Postgres).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.add_user("joao", "senha-forte-2", 1).await.unwrap();
    // A row tampered with (or restored from somewhere odd): its hash asks for m=4 GiB.
    let mut conn = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT senha_hash FROM usuarios WHERE usuario = 'maria'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let planted = hash.replacen("m=1024,", "m=4194304,", 1);
    assert_ne!(planted, hash);
    sqlx::query("UPDATE usuarios SET senha_hash = $1 WHERE usuario = 'maria'")
        .bind(&planted)
        .execute(&mut conn)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let err = app.login("maria", "senha-forte-1").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(err.message(), "internal error");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Nothing else is affected.
    assert_eq!(app.login("joao", "senha-forte-2").await.unwrap(), (true, 1));
}

/// `authorization: Bearer` takes its scheme in any case (HTTP auth schemes are
/// case-insensitive): the admin token and a caller token alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    use produto_testkit::ADMIN_TOKEN;
    let database = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(&tokens, format!("billing {BILLING_TOKEN}\n")).unwrap();
    let app = spawn_with(test_config(&database.url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    let mut client = app.produto.clone();
    for (n, scheme) in ["bearer", "BEARER", "Bearer"].into_iter().enumerate() {
        let mut request = Request::new(AdicionarUsuarioRequest {
            usuario: format!("maria{n}"),
            senha: "senha-forte-1".into(),
            nivel: 1,
        });
        let value = format!("{scheme} {ADMIN_TOKEN}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        client
            .adicionar_usuario(request)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
    }

    let database = TestDb::create(Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.caller_auth = true;
    config.caller_tokens_file = Some(tokens);
    let guarded = spawn_with(config, database).await;
    guarded.wait_for_readiness(ServingStatus::Serving).await;
    let mut request = Request::new(ObterNivelRequest {
        usuario: "ninguem".into(),
    });
    let value = format!("bearer {BILLING_TOKEN}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    let err = guarded
        .produto
        .clone()
        .obter_nivel(request)
        .await
        .unwrap_err();
    // Identified (the unknown user is NOT_FOUND), not UNAUTHENTICATED.
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}
