//! The system under test: a fresh PostgreSQL database made for the run (dropped after), and
//! the release `produto-server` binary (or a floor: this bench re-run with `--serve-floor`;
//! or the Go peer)
//! started on it as a child process, timed from spawn to readiness (health `Check("")` =
//! SERVING). Its memory and CPU time are read from /proc.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::{Connection, Executor, PgConnection};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// A database that lives for one benchmark run.
pub struct BenchDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str) -> Result<Self, String> {
        let name = format!("produto_bench_{}", std::process::id());
        let mut conn = PgConnection::connect(admin_url)
            .await
            .map_err(|e| format!("cannot reach PostgreSQL at {admin_url}: {e}"))?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .map_err(|e| e.to_string())?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        let url = produto_testkit::database::with_database(admin_url, &name);
        Ok(BenchDb {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }

    pub async fn drop_database(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
        }
    }
}

/// A running server child: `produto-server` or a floor.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// produto's admin HTTP port (`/metrics`); floors have none.
    pub admin_addr: Option<SocketAddr>,
    pub label: &'static str,
    /// Spawn to the first SERVING answer.
    pub startup: Duration,
}

impl Server {
    /// Starts `produto-server` with `env` on a free loopback port and waits until it is SERVING.
    pub async fn start(
        bin: &str,
        label: &'static str,
        database_url: &str,
        env: &[(&str, String)],
    ) -> Result<Self, String> {
        Server::start_logging(bin, label, database_url, env, None).await
    }

    /// [`Server::start`], its log (stderr) written to `log` rather than the bench's stderr.
    pub async fn start_logging(
        bin: &str,
        label: &'static str,
        database_url: &str,
        env: &[(&str, String)],
        log: Option<std::fs::File>,
    ) -> Result<Self, String> {
        let addr = free_port()?;
        // The admin port serves /metrics, read before and after the h2load rows to count
        // the gRPC codes h2load cannot see; nothing scrapes it while a row runs.
        let admin_addr = free_port()?;
        let mut command = Command::new(bin);
        command
            .env("DATABASE_URL", database_url)
            .env("PRODUTO_ADDR", addr.to_string())
            .env("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PRODUTO_ADMIN_ADDR", admin_addr.to_string())
            .env("PRODUTO_SHUTDOWN_DELAY", "0s")
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        if let Some(log) = log {
            command.stderr(log);
        }
        Server::spawn(command, label, addr, Some(admin_addr)).await
    }

    /// Starts a floor: this benchmark's own executable with `--serve-floor`.
    pub async fn start_floor(
        floor: crate::floor::Floor,
        database_url: &str,
        pool_size: u32,
    ) -> Result<Self, String> {
        let addr = free_port()?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut command = Command::new(exe);
        command.args([
            "--serve-floor",
            floor.arg(),
            "--floor-addr",
            &addr.to_string(),
            "--floor-pool-size",
            &pool_size.to_string(),
            "--database-url",
            database_url,
        ]);
        Server::spawn(command, floor.label(), addr, None).await
    }

    /// Starts the Go peer (see `peer.rs`) on the run's database.
    pub async fn start_go(bin: &std::path::Path, database_url: &str) -> Result<Self, String> {
        let addr = free_port()?;
        let mut command = Command::new(bin);
        command
            .args(["--port", &addr.port().to_string(), "--table", "usuarios"])
            .args(["--database-url", database_url]);
        Server::spawn(command, "go", addr, None).await
    }

    async fn spawn(
        mut command: Command,
        label: &'static str,
        addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the {label} server: {e}"))?;
        let mut server = Server {
            child,
            addr,
            admin_addr,
            label,
            startup: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(30);
        loop {
            if serving(addr).await {
                server.startup = started.elapsed();
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{label} server exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{label} server not SERVING after 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens `n` HTTP/2 connections to the server.
    pub async fn channels(&self, n: usize) -> Result<Vec<Channel>, String> {
        let mut channels = Vec::new();
        for _ in 0..n {
            let channel = Endpoint::from_shared(format!("http://{}", self.addr))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
            channels.push(channel);
        }
        Ok(channels)
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        rss_kib(self.pid())
    }

    /// SIGTERM, then waits (bounded) for the graceful shutdown.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // On an early exit (an error, a panic) the child must not outlive the benchmark.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_millis(500), check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

fn free_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// User + system CPU time of a process so far, in clock ticks, from /proc/<pid>/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count the fields after its last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11); // from field 3 (state) to 14 (utime)
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// User + system CPU time of every PostgreSQL process on this machine (`comm` = postgres),
/// in clock ticks: the database's side of a row. Other databases of the same server count
/// too, so on a shared machine it is an upper bound.
pub fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "postgres");
        if is_postgres {
            total += cpu_ticks(pid).unwrap_or(0);
        }
    }
    Some(total)
}

/// Clock ticks to microseconds.
pub fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 * 1e6 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// produto's `grpc_server_handled_total` for `method`, by code, from its admin port: the
/// way to see the gRPC status of calls made by h2load, which only sees HTTP 200.
pub async fn handled_by_code(
    admin: SocketAddr,
    method: &str,
) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let text = metrics(admin).await?;
    let method_label = format!("grpc_method=\"{method}\"");
    let mut by_code = std::collections::BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("grpc_server_handled_total{") || !line.contains(&method_label) {
            continue;
        }
        let code = line
            .split_once("grpc_code=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(code, _)| code.to_string());
        let value = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse::<f64>().ok());
        if let (Some(code), Some(value)) = (code, value) {
            *by_code.entry(code).or_default() += value as u64;
        }
    }
    Ok(by_code)
}

/// produto's `/metrics` text (with the HTTP head), from its admin port.
pub async fn metrics(admin: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("admin port: {e}"))?;
    // HTTP/1.0: the body comes whole, not chunked, and the connection closes after it.
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// (VmRSS, VmHWM) of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
