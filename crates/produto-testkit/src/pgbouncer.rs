//! PgBouncer (the installed `pgbouncer`, 1.18 on Debian) as a child process of the test: its
//! own config and auth file in a temporary directory, on a free loopback port, in front of a
//! PostgreSQL on 127.0.0.1 (trust auth), in session or transaction pooling.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

/// Settings of one PgBouncer; `Default` is what produto needs documented in the README.
#[derive(Debug, Clone)]
pub struct BouncerSettings {
    pub mode: PoolMode,
    /// Server connections per database and user: small, so that client connections share them.
    pub pool_size: u32,
    /// `ignore_startup_parameters = extra_float_digits`: needed by sqlx clients that send it
    /// (produto does not; the test of the failure turns it off).
    pub ignore_extra_float_digits: bool,
}

impl Default for BouncerSettings {
    fn default() -> Self {
        BouncerSettings {
            mode: PoolMode::Transaction,
            pool_size: 4,
            ignore_extra_float_digits: false,
        }
    }
}

pub struct PgBouncer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL on `127.0.0.1:upstream_port` and waits
    /// until it accepts connections. Every database name is passed through (`* =`).
    pub fn start(upstream_port: u16, settings: &BouncerSettings) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("produto-pgbouncer-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mode = match settings.mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        let ignore = if settings.ignore_extra_float_digits {
            "ignore_startup_parameters = extra_float_digits\n"
        } else {
            ""
        };
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={upstream_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             pool_mode = {mode}\n\
             default_pool_size = {size}\n\
             max_client_conn = 1000\n\
             server_login_retry = 1\n\
             {ignore}\
             logfile = {log}\n",
            auth = path("users.txt"),
            size = settings.pool_size,
            log = path("pgbouncer.log"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        // PgBouncer refuses to run as root: as root, it switches to the postgres user.
        let as_root = crate::cluster::hand_to_postgres_if_root(dir.path());
        let mut command = Command::new(pgbouncer_bin());
        if as_root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tests need pgbouncer (apt-get install pgbouncer; .ci/run installs it)");
        let mut bouncer = PgBouncer { child, dir, port };
        bouncer.wait_listening();
        bouncer
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer never listened: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `database` through this PgBouncer.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Its log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether PgBouncer can be run here; says SKIPPED when not, so a machine without it passes
/// (`.ci/run` installs it, so CI always runs these tests).
pub fn installed() -> bool {
    let found = std::process::Command::new(pgbouncer_bin())
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("SKIPPED: pgbouncer is not installed (apt-get install pgbouncer)");
    }
    found
}

/// `pgbouncer` from PATH, or /usr/sbin/pgbouncer (Debian's place, not on a user's PATH).
fn pgbouncer_bin() -> String {
    if let Ok(bin) = std::env::var("PRODUTO_TEST_PGBOUNCER") {
        return bin;
    }
    let sbin = Path::new("/usr/sbin/pgbouncer");
    if sbin.exists() {
        return sbin.display().to_string();
    }
    "pgbouncer".into()
}
