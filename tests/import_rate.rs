//! The rate of `import-users` on a large table: the real `produto-server` binary imports
//! 100 000 rows of an old bot's table (PostgreSQL, every legacy hash format in turn) into a
//! fresh PostgreSQL database and into a fresh SQLite file, and prints rows per second. Not
//! part of CI (ignored); docs/benchmarks.md has the figures. Run it with
//!
//!     cargo test --release --test import_rate -- --ignored --nocapture
//!
//! `PRODUTO_IMPORT_RATE_ROWS` changes the row count; PostgreSQL as for the other tests
//! (`PRODUTO_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::time::{Duration, Instant};

use produto_testkit::{database::with_database, postgres_admin_url as admin_url};
use sqlx::{Connection, PgConnection};

/// A database of its own, dropped at the end.
struct Database {
    name: String,
    url: String,
}

impl Database {
    async fn create(label: &str) -> Database {
        let name = format!("produto_rate_{label}_{}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .unwrap();
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = with_database(&admin_url(), &name);
        Database { name, url }
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// One stored password per legacy format, as an old bot's table holds them (the import
/// checks each hash's shape and cost, never verifies it: the rate does not depend on which
/// password made it).
fn hashes() -> Vec<String> {
    use argon2::{
        PasswordHasher,
        password_hash::{SaltString, rand_core::OsRng},
    };
    let argon2 = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19456, 2, 1, None).unwrap(),
    )
    .hash_password(b"senha", &SaltString::generate(&mut OsRng))
    .unwrap()
    .to_string();
    let pbkdf2 = |salt: &str| {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"senha", salt.as_bytes(), 600_000, &mut out);
        out
    };
    let werkzeug = format!("pbkdf2:sha256:600000$sal1${}", hex::encode(pbkdf2("sal1")));
    let django = format!(
        "pbkdf2_sha256$600000$sal2${}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pbkdf2("sal2"))
    );
    vec![
        argon2,
        bcrypt::hash("senha", 10).unwrap(),
        werkzeug,
        django,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"senha")),
    ]
}

/// The old bot's table with `rows` users.
async fn old_bot_table(source: &Database, rows: u64) {
    let mut conn = PgConnection::connect(&source.url).await.unwrap();
    sqlx::query(
        "CREATE TABLE usuarios (id serial PRIMARY KEY, usuario varchar(100), \
         senha varchar(255), nivel integer)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO usuarios (usuario, senha, nivel) \
         SELECT 'usuario' || i, ($1::text[])[1 + i % cardinality($1::text[])], i % 3 \
         FROM generate_series(1, $2::bigint) AS i",
    )
    .bind(hashes())
    .bind(i64::try_from(rows).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Runs `produto-server import-users --table usuarios` into `target`; returns its time.
fn import(source: &Database, target: &str) -> Duration {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_produto-server"))
        .args(["import-users", "--table", "usuarios"])
        .env_clear()
        .env("PRODUTO_IMPORT_FROM", &source.url)
        .env("DATABASE_URL", target)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run produto-server import-users");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rejected 0"), "{stdout}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on purpose, see the module docs"]
async fn import_rate_on_a_large_table() {
    let rows: u64 = std::env::var("PRODUTO_IMPORT_RATE_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let source = Database::create("source").await;
    old_bot_table(&source, rows).await;

    let target = Database::create("target").await;
    let to_postgres = import(&source, &target.url);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("produto.db").display());
    let to_sqlite = import(&source, &sqlite);
    // A second run finds every user already there: the cost of checking alone.
    let again = import(&source, &target.url);

    let rate = |took: Duration| rows as f64 / took.as_secs_f64();
    println!(
        "import-users, {rows} rows (argon2, bcrypt, Werkzeug and Django PBKDF2, SHA-256 in turn):"
    );
    for (what, took) in [
        ("PostgreSQL -> PostgreSQL", to_postgres),
        ("PostgreSQL -> SQLite", to_sqlite),
        ("PostgreSQL -> PostgreSQL, all already there", again),
    ] {
        println!(
            "  {what:<45} {:>7.1} s  {:>7.0} rows/s",
            took.as_secs_f64(),
            rate(took)
        );
    }
    target.drop().await;
    source.drop().await;
}
