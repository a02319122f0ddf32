//! A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl from the installed
//! binaries, in a temporary directory, on a free port), so that fault tests can kill and
//! restart a database without touching the machine's shared server. A cluster can also be
//! made a streaming standby of another ([`PgCluster::standby_of`]), for the replica tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_root: bool,
}

impl PgCluster {
    /// Creates and starts a cluster. Slow-ish (initdb): about a second.
    pub fn start() -> PgCluster {
        let cluster = PgCluster::empty();
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.start_again();
        cluster
    }

    /// A cluster directory with no data yet, owned by whoever will run the server.
    fn empty() -> PgCluster {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("produto-pg-")
            .tempdir()
            .unwrap();
        // initdb refuses to run as root: as root, run the cluster as the postgres user.
        let as_root = hand_to_postgres_if_root(dir.path());
        PgCluster {
            bin,
            dir,
            port: free_port(),
            as_root,
        }
    }

    /// Creates and starts a streaming standby of `primary` (a base backup taken with
    /// `pg_basebackup -R -X stream -c fast`, so it follows the primary from then on), on a
    /// port of its own. `initdb`'s defaults allow this: `wal_level=replica`, ten WAL
    /// senders, hot standby on, and trust for replication connections from 127.0.0.1.
    pub fn standby_of(primary: &PgCluster) -> PgCluster {
        let cluster = PgCluster::empty();
        let port = primary.port.to_string();
        cluster.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &cluster.data(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        cluster.start_again();
        cluster
    }

    /// CPU time (user + system) used so far by the cluster's live processes: the
    /// postmaster and its children (backends, WAL sender or receiver, startup process).
    pub fn cpu_time(&self) -> std::time::Duration {
        let ticks: u64 = postmaster_family(&self.dir.path().join("data"))
            .iter()
            .map(|(_, fields)| {
                let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
                let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
                utime + stime
            })
            .sum();
        // Linux reports these in clock ticks of 1/100 s (USER_HZ).
        std::time::Duration::from_millis(ticks * 10)
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Kills it the hard way (`-m immediate`: no shutdown checkpoint, clients cut).
    pub fn kill(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let output = as_postgres(self.bin.join(tool), self.as_root)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = as_postgres(self.bin.join("pg_ctl"), self.as_root)
            .args(["-D", data.as_str(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A command for `program`, run as the postgres user when the tests run as root (see
/// [`hand_to_postgres_if_root`]).
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The live processes of the cluster in `data`: its postmaster and the postmaster's
/// children (backends, WAL sender or receiver, startup process), each pid with the fields of
/// its `/proc/<pid>/stat` after the command name (state, ppid, ...).
pub fn postmaster_family(data: &Path) -> Vec<(u32, Vec<String>)> {
    let postmaster: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name is in parentheses and may hold spaces: split after it.
            let fields: Vec<String> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let ppid: u32 = fields.get(1)?.parse().ok()?;
            (pid == postmaster || ppid == postmaster).then_some((pid, fields))
        })
        .collect()
}

/// The newest installed PostgreSQL's bin directory (`/usr/lib/postgresql/<v>/bin`), or the
/// one in `PRODUTO_TEST_PG_BIN`.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PRODUTO_TEST_PG_BIN") {
        return dir.into();
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .expect("fault tests need PostgreSQL's server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
        .1
}

/// When the tests run as root (CI), gives `dir` to the postgres user, which PostgreSQL's and
/// PgBouncer's processes then run as (both refuse root). Returns whether they run as root.
pub fn hand_to_postgres_if_root(dir: &Path) -> bool {
    let as_root = run_output("id", &["-u"]).trim() == "0";
    if as_root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", dir.display());
    }
    as_root
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long the replication helpers wait for a condition before failing the test: generous,
/// the machine is busy.
const REPLICATION_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `check` (a query returning a boolean on `url`) until it is true, within
/// [`REPLICATION_BOUND`]; a connection error counts as "not yet" (a server starting up).
async fn wait_on(url: &str, check: &str, what: &str) {
    use sqlx::Connection;
    let started = std::time::Instant::now();
    loop {
        let outcome = async {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(check.to_owned()))
                .fetch_one(&mut conn)
                .await
        }
        .await;
        if let Ok(true) = outcome {
            return;
        }
        assert!(
            started.elapsed() < REPLICATION_BOUND,
            "{what}: still not true after {REPLICATION_BOUND:?} (last: {outcome:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs one statement on `url` and returns its first column as text.
pub async fn sql(url: &str, query: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    // Test-only SQL from the test's own constants.
    sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(format!("SELECT ({query})::text")))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Waits until the standby has replayed everything the primary has written so far.
pub async fn wait_for_replay(primary: &str, standby: &str) {
    let lsn = sql(primary, "pg_current_wal_lsn()").await;
    wait_on(
        standby,
        &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        &format!("standby replayed up to {lsn}"),
    )
    .await;
}

/// Pauses WAL replay on a standby and waits until it is paused (it keeps receiving WAL,
/// so its lag grows with every write on the primary).
pub async fn pause_replay(standby: &str) {
    sql(standby, "pg_wal_replay_pause()").await;
    wait_on(
        standby,
        "SELECT pg_get_wal_replay_pause_state() = 'paused'",
        "replay paused",
    )
    .await;
}

/// Resumes WAL replay on a standby.
pub async fn resume_replay(standby: &str) {
    sql(standby, "pg_wal_replay_resume()").await;
    wait_on(
        standby,
        "SELECT pg_get_wal_replay_pause_state() = 'not paused'",
        "replay resumed",
    )
    .await;
}

/// Waits until the server at `url` accepts writes (out of recovery: promoted).
pub async fn wait_until_primary(url: &str) {
    wait_on(url, "SELECT NOT pg_is_in_recovery()", "out of recovery").await;
}
