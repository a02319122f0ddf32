//! The effect of each patch of the vendored sqlx-core (vendor/README.md, vendor/patches), on
//! the real PostgreSQL of the tests: each fails if its patch is dropped or undone.
#![cfg(target_os = "linux")]

use std::{
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use sqlx::{
    Connection, Executor, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The server the tests use, as the other test binaries read it.
fn admin_options() -> PgConnectOptions {
    std::env::var("PRODUTO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        .parse()
        .expect("PRODUTO_TEST_DATABASE_URL is a PostgreSQL URL")
}

/// A database of this test's own, dropped (with its connections) at the end.
struct Database {
    name: String,
    options: PgConnectOptions,
}

impl Database {
    async fn create() -> Database {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "produto_vendor_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect_with(&admin_options())
            .await
            .expect("connect");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        let options = admin_options().database(&name);
        Database { name, options }
    }

    /// A pool of one connection, so that every statement reuses the same one.
    async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.options.clone())
            .await
            .expect("connect the pool")
    }

    /// Closes `pool`, then drops the database with any connection left.
    async fn close(self, pool: PgPool) {
        pool.close().await;
        let mut admin = PgConnection::connect_with(&admin_options())
            .await
            .expect("connect");
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await
            .expect("drop the test database");
    }
}

/// Patch 0003: `Pool::acquire()`'s future does not carry the connection set-up inline.
/// In this (debug) test build it is 792 bytes with the patch and 4 096 without it (the
/// release server measured 14.5 KiB without it): the bound sits between.
#[tokio::test]
async fn the_acquire_future_stays_small() {
    let database = Database::create().await;
    let pool = database.pool().await;
    let acquire = pool.acquire();
    let size = std::mem::size_of_val(&acquire);
    drop(acquire);
    eprintln!("Pool::acquire()'s future: {size} bytes");
    database.close(pool).await;
    assert!(
        size < 2048,
        "Pool::acquire()'s future is {size} bytes: is vendor/patches/0003 still applied?"
    );
}

/// Patch 0002: a clean connection is back in the idle queue the moment it is released, not
/// after a spawned task has pinged it. The runtime is current-thread and nothing is awaited
/// between the release and the check, so no spawned task can have run: only the direct path
/// can make the connection idle in time.
#[tokio::test(flavor = "current_thread")]
async fn a_clean_connection_is_idle_again_as_soon_as_it_is_released() {
    let database = Database::create().await;
    let pool = database.pool().await;
    for round in 0..3 {
        let answer: i32 = sqlx::query_scalar("SELECT $1")
            .bind(round)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(answer, round);
        assert_eq!(
            (pool.size(), pool.num_idle()),
            (1, 1),
            "round {round}: the connection is not idle right after its statement"
        );

        let connection = pool.acquire().await.unwrap();
        assert_eq!(pool.num_idle(), 0);
        drop(connection);
        assert_eq!(
            pool.num_idle(),
            1,
            "round {round}: the released connection is not idle at once"
        );
    }
    database.close(pool).await;
}

/// Patch 0002's limit: a connection dropped inside a transaction has a rollback to send, so
/// it takes upstream's path (a task that rolls back and pings) and is idle only after it.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_left_in_a_transaction_goes_through_the_slow_path() {
    let database = Database::create().await;
    let pool = database.pool().await;
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE left_behind (id int)")
        .execute(&mut *transaction)
        .await
        .unwrap();
    drop(transaction);
    assert_eq!(
        pool.num_idle(),
        0,
        "a connection with a rollback to send was made idle without it"
    );
    // The spawned task rolls back and returns it: wait for that, with a generous bound.
    let idle = async {
        while pool.num_idle() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), idle)
        .await
        .expect("the connection is idle again within 30 s");
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('left_behind')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(table, None, "the transaction was not rolled back");
    database.close(pool).await;
}

/// Patch 0001: the socket sqlx opens to PostgreSQL has TCP_NODELAY. The connection's own
/// socket is found through the client port PostgreSQL sees (`inet_client_port()`), its inode
/// in /proc/net/tcp and the file descriptor in /proc/self/fd that points at it.
#[tokio::test(flavor = "current_thread")]
async fn the_postgres_socket_has_tcp_nodelay() {
    let database = Database::create().await;
    let pool = database.pool().await;
    let mut connection = pool.acquire().await.unwrap();
    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    let port = port.expect("the tests reach PostgreSQL over TCP, not a Unix socket");
    let nodelay = tcp_nodelay_of_local_port(port as u16);

    // The same reading on a socket without the option says false: the check can fail.
    let server = admin_options();
    let plain = tokio::net::TcpStream::connect((server.get_host(), server.get_port()))
        .await
        .unwrap();
    let plain_nodelay = tcp_nodelay_of_local_port(plain.local_addr().unwrap().port());

    drop(connection);
    drop(plain);
    database.close(pool).await;
    assert_eq!(
        nodelay,
        Some(true),
        "sqlx's PostgreSQL socket has no TCP_NODELAY: is vendor/patches/0001 still applied?"
    );
    assert_eq!(plain_nodelay, Some(false));
}

/// TCP_NODELAY of this process's TCP socket bound to local `port`, if there is one.
fn tcp_nodelay_of_local_port(port: u16) -> Option<bool> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit_once(':')?.1;
                let inode = fields.get(9)?;
                // An earlier socket on the same ephemeral port may linger in TIME_WAIT with
                // inode 0 (the suite opens many connections): only a live socket counts.
                (u16::from_str_radix(local_port, 16).ok()? == port && *inode != "0")
                    .then(|| inode.to_string())
            })
        })?;
    let target = format!("socket:[{inode}]");
    let fd = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        })?
        .file_name()
        .to_str()?
        .parse::<i32>()
        .ok()?;
    // SAFETY: `fd` is the socket of a connection the caller holds open until after this call
    // returns; it is only borrowed for one getsockopt, never closed here.
    #[allow(
        unsafe_code,
        reason = "reading an option of a socket owned by sqlx needs its fd"
    )]
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).tcp_nodelay().ok()
}
