//! Starts the real server on 127.0.0.1:0 against a fresh database (a new PostgreSQL database
//! or a new SQLite file per test) and hands back real gRPC clients. Dropping the app stops
//! the server and drops its database.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

#[path = "../support/db_url.rs"]
mod db_url;

use produto::{
    Application, Settings,
    db::Db,
    pb::{pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The bot's caller token, in every test server's caller tokens file ([`caller_tokens_file`]).
pub const BOT_TOKEN: &str = "test-bot-caller-token-0123456789";
/// Another caller's token, in the same file.
pub const OTHER_CALLER_TOKEN: &str = "test-other-caller-token-0123456789";

/// A caller tokens file naming `bot` ([`BOT_TOKEN`]) and `other` ([`OTHER_CALLER_TOKEN`]),
/// written once per test process: every test server reads it (callers that send neither
/// token stay anonymous, as before).
pub fn caller_tokens_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("produto-test-callers-{}.txt", std::process::id()));
        std::fs::write(
            &path,
            format!("bot {BOT_TOKEN}\nother {OTHER_CALLER_TOKEN}\n"),
        )
        .expect("write the caller tokens file");
        path
    })
    .clone()
}

/// Statements the server's background tasks run on their own clocks (the legacy-hash
/// gauge's count, the purge of old attempts, the connection budget): a test that counts a
/// call's statements or acquires must leave these out, since one may land in between.
pub const BACKGROUND_STATEMENTS: [&str; 5] = [
    "legacy_hash_counts",
    "purge_login_attempts",
    "connection_budget",
    "purge_sessions",
    "audit_purge",
];

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("PRODUTO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test only.
///
/// Not `#[sqlx::test]`, though it too makes a database per test: it hands the test a pool or
/// connect options, where the server under test takes a URL and builds its own pools; it runs
/// the test on a current-thread runtime (ours run server and client side by side on
/// `multi_thread`); it picks the backend by the argument's type (ours run one body on both);
/// and by default it applies the migrations itself, which the server must do on its own.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => {
                static N: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "produto_test_{}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed),
                    rand_suffix()
                );
                let admin = postgres_admin_url();
                let mut conn = connect_pg(&admin).await;
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create the test database");
                let url = db_url::with_database(&admin, &name);
                TestDb {
                    url,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("produto.db").display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = connect_pg(&admin).await;
                let _ = sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
                )
                .await;
            });
        })
        .join();
    }
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("tests need PostgreSQL at {url}: {e}"))
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}

/// A test configuration: port 0, fast probes, cheap argon2 so tests stay quick (the admin
/// HTTP port is off, as in `Settings::new`; tests of it turn it on at port 0). Built by hand:
/// tests never parse the process environment.
pub fn test_config(database_url: &str) -> Settings {
    let mut config = Settings::new(database_url);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.probe_interval = Duration::from_millis(100);
    config.db.acquire_timeout = Duration::from_secs(2);
    config.hashing.queue_timeout = Duration::from_secs(2);
    config.drain_timeout = Duration::from_secs(3);
    config.hashing = config.hashing.with_costs(1024, 1, 1).unwrap();
    config.shutdown_delay = Duration::ZERO;
    config.caller_tokens_file = Some(caller_tokens_file());
    // The strength check is tested on its own (tests/api/sessions.rs); the other tests keep
    // their short example passwords. The username rule stays.
    config.password_policy.min_score = 0;
    config
}

/// A running server and clients connected to it.
#[allow(dead_code, reason = "each test uses the fields it needs")]
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin HTTP port, when the configuration turned it on.
    pub admin_addr: Option<SocketAddr>,
    pub produto: ProdutoServiceClient<Channel>,
    pub pool: PoolServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    pub db: Db,
    pub database: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), produto::Error>>>,
}

/// Starts a server on a fresh database and waits until it is ready.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let database = TestDb::create(backend).await;
    let config = test_config(&database.url);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// Starts a server on `addr` (the port of one that was stopped) over `database`, and waits
/// until it is ready. Retries the bind briefly, in case the old socket is not quite gone.
pub async fn spawn_on(addr: SocketAddr, database: TestDb) -> TestApp {
    let mut config = test_config(&database.url);
    config.addr = addr;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = tokio::net::TcpListener::bind(addr).await {
        assert!(Instant::now() < deadline, "{addr} stays taken: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// Starts a server with a given configuration, without waiting for readiness.
pub async fn spawn_with(config: Settings, database: TestDb) -> TestApp {
    let app = Application::build(config).await.expect("build the app");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let db = app.db().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the server");
    TestApp {
        addr,
        admin_addr,
        produto: ProdutoServiceClient::new(channel.clone()),
        pool: PoolServiceClient::new(channel.clone()),
        health: HealthClient::new(channel.clone()),
        channel,
        db,
        database,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Health status of a service name (Err: the gRPC status, e.g. NOT_FOUND).
    pub async fn health_of(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let response = self
            .health
            .clone()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        Ok(ServingStatus::try_from(response.into_inner().status).unwrap())
    }

    /// Waits until readiness (`""`) reports `want`, up to a minute: generous, since the
    /// machines are shared and busy (a server behind PgBouncer once took over 10 s to get
    /// its first probe through while two builds ran).
    pub async fn wait_for_readiness(&self, want: ServingStatus) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.health_of("").await;
            if now.as_ref().ok() == Some(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "readiness never became {want:?} (last: {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a user through the RPC, with the admin token.
    pub async fn add_user(
        &self,
        usuario: &str,
        senha: &str,
        nivel: i32,
    ) -> Result<i64, tonic::Status> {
        let request = admin(produto::pb::AdicionarUsuarioRequest {
            usuario: usuario.into(),
            senha: senha.into(),
            nivel,
        });
        Ok(self
            .produto
            .clone()
            .adicionar_usuario(request)
            .await?
            .into_inner()
            .id)
    }

    pub async fn login(&self, usuario: &str, senha: &str) -> Result<(bool, i32), tonic::Status> {
        let r = self
            .produto
            .clone()
            .verificar_login(produto::pb::VerificarLoginRequest {
                usuario: usuario.into(),
                senha: senha.into(),
            })
            .await?
            .into_inner();
        Ok((r.valido, r.nivel))
    }

    /// `n` logins of `usuario` with `senha` sent at once, on this app's one connection (one
    /// caller, one address): how many answered `valido: true`. Every one must get an answer.
    pub async fn concurrent_logins(&self, usuario: &str, senha: &str, n: usize) -> usize {
        let logins = (0..n).map(|_| self.login(usuario, senha));
        futures_util::future::join_all(logins)
            .await
            .into_iter()
            .map(|r| r.expect("every login gets an answer"))
            .filter(|(valido, _)| *valido)
            .count()
    }

    pub async fn nivel(&self, usuario: &str) -> Result<i32, tonic::Status> {
        Ok(self
            .produto
            .clone()
            .obter_nivel(produto::pb::ObterNivelRequest {
                usuario: usuario.into(),
            })
            .await?
            .into_inner()
            .nivel)
    }

    pub async fn pool_status(&self) -> produto::pb::PoolStatusResponse {
        self.pool
            .clone()
            .pool_status(produto::pb::PoolStatusRequest {})
            .await
            .expect("PoolStatus always answers")
            .into_inner()
    }

    /// The pool's status once no connection is in use, waiting up to 30 s for it: a
    /// connection goes back to the pool a moment after its call answered (and a background
    /// task may hold one briefly), so "nothing is held" is a condition to wait for. Fails
    /// if a connection stays in use.
    pub async fn wait_for_idle_pool(&self) -> produto::pb::PoolStatusResponse {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.pool_status().await;
            if status.used_connections == 0 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "a connection stays in use: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and hands back its address and database, so that a test can start
    /// another server in its place with [`spawn_on`].
    pub async fn stop_keeping_database(mut self) -> (SocketAddr, TestDb) {
        self.stop().await;
        // A SQLite placeholder is only a temporary directory: cheap to create and to drop.
        let placeholder = TestDb::create(Backend::Sqlite).await;
        (
            self.addr,
            std::mem::replace(&mut self.database, placeholder),
        )
    }

    /// Sends the shutdown signal without waiting for the server to stop.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Sends the shutdown signal and waits for the server to stop; returns how long it took.
    pub async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), server)
                .await
                .expect("server stops within its drain bound")
                .expect("server task did not panic")
                .expect("server stopped cleanly");
        }
        started.elapsed()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A request carrying a session token (`produto-session`).
pub fn with_session<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("produto-session", token.parse().unwrap());
    request
}

/// A request from caller `token` (a caller token) for end user `end_user`.
pub fn as_caller<T>(message: T, token: &str, end_user: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .metadata_mut()
        .insert("produto-end-user", end_user.parse().unwrap());
    request
}

/// A request carrying the admin token.
pub fn admin<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    request
}

/// The `produto-bot` binary, built (once per test binary) if it is missing or stale. It
/// belongs to the bot's crate, and cargo hands a test only its own package's binaries
/// (`CARGO_BIN_EXE_*`): so the test asks cargo for the bot crate's own test (`--test cli`,
/// which needs the binary), in the profile this test was built in. A plain `cargo test` has
/// built it already (the same features: nothing to rebuild).
pub fn bot_binary() -> &'static std::path::Path {
    static BOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BOT.get_or_init(|| {
        // target/<profile>/deps/<test binary> -> target/<profile>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(std::path::Path::parent)
            .expect("a test binary lives in target/<profile>/deps");
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args(["test", "--quiet", "--no-run", "--test", "cli"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo for produto-bot");
        assert!(
            status.success(),
            "cargo test --no-run --test cli (produto-bot) failed"
        );
        let bot = profile_dir.join(format!("produto-bot{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bot.is_file(),
            "{} is missing after the build",
            bot.display()
        );
        bot
    })
}
