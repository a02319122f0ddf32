//! Starts the real server on 127.0.0.1:0 against a fresh database (a new PostgreSQL database
//! or a new SQLite file per test) and hands back real gRPC clients. Dropping the app stops
//! the server and drops its database. The one module that uses the server library's types.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

// The server library's types, all in this one place.
use produto::{
    Application, Error, Settings,
    db::Db,
    login::{LoginCounters, LoginSnapshot},
    pb::{
        self, pool_service_client::PoolServiceClient, produto_service_client::ProdutoServiceClient,
    },
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::database::{Backend, TestDb};

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
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin HTTP port, when the configuration turned it on.
    pub admin_addr: Option<SocketAddr>,
    pub produto: ProdutoServiceClient<Channel>,
    pub pool: PoolServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    pub db: Db,
    login: Arc<LoginCounters>,
    pub database: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), Error>>>,
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
    let login = app.login_counters().clone();
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
        login,
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
        let request = admin(pb::AdicionarUsuarioRequest {
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
            .verificar_login(pb::VerificarLoginRequest {
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
            .obter_nivel(pb::ObterNivelRequest {
                usuario: usuario.into(),
            })
            .await?
            .into_inner()
            .nivel)
    }

    /// The server's login counters now (throttled logins, passwords checked, attempts
    /// counted in memory), read in process.
    pub fn login_counters(&self) -> LoginSnapshot {
        self.login.snapshot()
    }

    pub async fn pool_status(&self) -> pb::PoolStatusResponse {
        self.pool
            .clone()
            .pool_status(pb::PoolStatusRequest {})
            .await
            .expect("PoolStatus always answers")
            .into_inner()
    }

    /// The pool's status once no connection is in use, waiting up to 30 s for it: a
    /// connection goes back to the pool a moment after its call answered (and a background
    /// task may hold one briefly), so "nothing is held" is a condition to wait for. Fails
    /// if a connection stays in use.
    pub async fn wait_for_idle_pool(&self) -> pb::PoolStatusResponse {
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

    pub async fn change_own_password(
        &self,
        usuario: &str,
        atual: &str,
        nova: &str,
    ) -> Result<(), tonic::Status> {
        self.produto
            .clone()
            .alterar_senha(senha_request(usuario, atual, nova))
            .await
            .map(|_| ())
    }

    pub async fn set_password(&self, usuario: &str, nova: &str) -> Result<(), tonic::Status> {
        self.produto
            .clone()
            .alterar_senha(admin(senha_request(usuario, "", nova)))
            .await
            .map(|_| ())
    }

    pub async fn set_nivel(&self, usuario: &str, nivel: i32) -> Result<(), tonic::Status> {
        self.produto
            .clone()
            .alterar_nivel(admin(pb::AlterarNivelRequest {
                usuario: usuario.into(),
                nivel,
            }))
            .await
            .map(|_| ())
    }

    pub async fn remove(&self, usuario: &str) -> Result<(), tonic::Status> {
        self.produto
            .clone()
            .remover_usuario(admin(pb::RemoverUsuarioRequest {
                usuario: usuario.into(),
            }))
            .await
            .map(|_| ())
    }

    pub async fn list(
        &self,
        page_size: i32,
        page_token: &str,
        prefixo: &str,
    ) -> Result<pb::ListarUsuariosResponse, tonic::Status> {
        self.produto
            .clone()
            .listar_usuarios(admin(pb::ListarUsuariosRequest {
                page_size,
                page_token: page_token.into(),
                prefixo: prefixo.into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    /// Every name of a listing, page by page (asserting the pages are at most `page_size`).
    pub async fn list_all(&self, page_size: i32, prefixo: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list(page_size, &token, prefixo).await.unwrap();
            assert!(page.usuarios.len() <= page_size as usize);
            pages.push(page.usuarios.into_iter().map(|u| u.usuario).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            token = page.next_page_token;
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

/// An AlterarSenha request (no token: wrap it in [`admin`] for an admin's change).
pub fn senha_request(usuario: &str, atual: &str, nova: &str) -> pb::AlterarSenhaRequest {
    pb::AlterarSenhaRequest {
        usuario: usuario.into(),
        senha_atual: atual.into(),
        senha_nova: nova.into(),
    }
}
