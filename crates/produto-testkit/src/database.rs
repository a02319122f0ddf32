//! A database that exists for one test only: a new PostgreSQL database on the shared server
//! (dropped with the test) or a new SQLite file in a temporary directory.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

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
                let url = with_database(&admin, &name);
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

/// `url` with its database name replaced by `name`, query parameters kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}
