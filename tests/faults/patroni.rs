//! Patroni in the suite: three PostgreSQL nodes run by Patroni (etcd as its store,
//! `synchronous_mode`) behind HAProxy with Patroni's `/primary` and `/replica` checks, all on
//! loopback ports chosen at run time. produto runs under a steady load of writes, ObterNivel
//! and right-password logins through a planned switchover and then a SIGKILL of the leader's
//! postgres; once through HAProxy (write port, read port as the replica URL), once with
//! libpq's multi-host URLs straight at the nodes.
//!
//! Needs Debian's `patroni`, `etcd-server` and `haproxy` (`.ci/run` installs them); without
//! them the tests say so and pass, except under `CI=true`, where they fail.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use produto::pb::{
    AdicionarUsuarioRequest, AlterarNivelRequest, ObterNivelRequest, VerificarLoginRequest,
    produto_service_client::ProdutoServiceClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};

use produto_testkit::{TestApp, admin, cluster, test_config};

use super::{SERIAL, app_on, code_of};

/// Bound on the cluster's start (initdb, two base backups, the sync standby chosen) and on
/// a member's return after a switchover or a crash.
const CLUSTER_BOUND: Duration = Duration::from_secs(120);
/// Bound on a promotion after the switchover request or the kill.
const PROMOTION_BOUND: Duration = Duration::from_secs(60);
/// After the kill, how long to wait for Patroni's fast failover before taking it that
/// Patroni restarted postgres in place (it fails over within about 3 s when it does).
const IN_PLACE_RESTART_BOUND: Duration = Duration::from_secs(15);
/// How soon after Patroni's promotion writes must be acknowledged again.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(3);
/// Each call's own bound, far above the server's (acquire and query timeouts of 2 s).
const CALL_BOUND: Duration = Duration::from_secs(15);
const PASSWORD: &str = "senha-forte-1";
const SEEDED: usize = 20;

/// How produto reaches the cluster.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// HAProxy: DATABASE_URL is its write port, the replica URL its read port.
    HaProxy,
    /// libpq's multi-host URLs: every node in DATABASE_URL (read-write) and in the replica
    /// URL (standby, load-balanced).
    MultiHost,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patroni_switchover_and_crash_through_haproxy() {
    run(Via::HaProxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patroni_switchover_and_crash_with_multi_host_urls() {
    run(Via::MultiHost).await;
}

/// Whether the tools are installed; under `CI=true` their absence fails the test.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["patroni", "etcd", "haproxy"]
        .into_iter()
        .filter(|tool| {
            !["/usr/bin", "/usr/sbin", "/usr/local/bin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the Patroni tests need {missing:?}: apt-get install patroni etcd-server haproxy"
    );
    eprintln!("skipped: {missing:?} not installed (apt-get install patroni etcd-server haproxy)");
    false
}

async fn run(via: Via) {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().await;
    // produto's own log, for a failure's cause (the server logs what it answers INTERNAL);
    // one file for the binary (a global subscriber is set once).
    let log = std::env::temp_dir().join("produto-patroni.log");
    if let Ok(writer) = std::fs::File::create(&log) {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_writer(Mutex::new(writer))
                .with_ansi(false)
                .with_env_filter("warn")
                .finish(),
        );
    }
    tracing::warn!(?via, "Patroni scenario starts (a marker, not a problem)");
    eprintln!("produto's log: {}", log.display());
    let mut ha = tokio::task::spawn_blocking(HaCluster::start).await.unwrap();
    ha.wait_healthy().await;

    let mut config = test_config(&ha.database_url(via));
    config.db.replica_urls = vec![ha.replica_url(via)];
    config.db.query_timeout = Duration::from_secs(2);
    config.db.acquire_timeout = Duration::from_secs(2);
    // The production default: writes must not depend on a fast probe.
    config.probe_interval = Duration::from_secs(2);
    let app = app_on(config).await;
    for i in 0..SEEDED {
        app.add_user(&format!("seed{i}"), PASSWORD, (i % 3) as i32)
            .await
            .unwrap();
    }
    let load = Load::start(&app.produto);
    load.wait_for_writes(20).await;
    // Through HAProxy the write port is the only write candidate: the read port must never
    // become the primary, even when its connection lands on a node just promoted.
    let (db, watching) = (app.db.clone(), Arc::new(AtomicBool::new(true)));
    let primaries = tokio::spawn({
        let watching = watching.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            while watching.load(Ordering::SeqCst) {
                seen.insert(db.servers().primary_index());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    });

    // A planned switchover.
    let old = ha.leader().await;
    let mut watch = PromotionWatch::start(&ha, &old);
    let started = Instant::now();
    ha.switchover(&old.name).await;
    let promoted = ha.promoted(&mut watch, PROMOTION_BOUND).await;
    let switchover = measure(&app, &load, promoted, started).await;
    ha.wait_healthy().await;

    // A crash: the leader's postgres killed, every process of it at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old = ha.leader().await;
    let mut watch = PromotionWatch::start(&ha, &old);
    let before_kill = refused_writes(&app);
    let started = Instant::now();
    ha.kill_postgres(&old);
    let mut crash_kind = "the leader's postgres";
    let promoted = match watch.wait(IN_PLACE_RESTART_BOUND).await {
        Some(at) => at,
        None => {
            crash_kind = "the leader's postgres, restarted in place, then the whole node";
            // Patroni judged no failover possible at that instant (it asks the synchronous
            // standby's REST API, which a loaded machine may answer late) and restarted
            // postgres in place: the node dies instead, and the leader key expires.
            eprintln!("Patroni restarted the crashed postgres in place: killing the whole node");
            ha.kill_node(&old);
            ha.promoted(&mut watch, PROMOTION_BOUND).await
        }
    };
    let crash = measure(&app, &load, promoted, started).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut outcome = load.finish().await;
    watching.store(false, Ordering::SeqCst);
    let primaries = primaries.await.unwrap();
    if let Via::HaProxy = via {
        assert_eq!(
            primaries.into_iter().collect::<Vec<_>>(),
            [0],
            "writes left the write port"
        );
    }
    outcome.refused_at_end = refused_writes(&app);
    let leader = ha.leader().await;
    let stored = stored_levels(&ha.node_url(leader.index)).await;
    check(&outcome, &stored);
    // Once writes were back, no write went to a standby (refused as read-only) until the
    // next fault, nor after the last.
    assert_eq!(
        before_kill, switchover.refused_then,
        "writes refused as read-only after the switchover had settled"
    );
    assert_eq!(
        outcome.refused_at_end, crash.refused_then,
        "writes refused as read-only after the failover had settled"
    );
    eprintln!(
        "patroni via {via:?}: {} writes acknowledged, 0 lost; codes {:?}; \
         switchover: promoted {:.2} s after the request, writes back {:.2} s after the \
         promotion; crash ({crash_kind} SIGKILLed): promoted {:.2} s after the kill, writes \
         back {:.2} s after the promotion; longest read gap {:.2} s",
        outcome.added.len() + outcome.altered.len(),
        outcome.codes,
        switchover.promoted_after.as_secs_f64(),
        switchover.writes_back_after.as_secs_f64(),
        crash.promoted_after.as_secs_f64(),
        crash.writes_back_after.as_secs_f64(),
        outcome.longest_read_gap.as_secs_f64(),
    );
}

/// What one fault showed: when the new leader left recovery, when writes came back, and the
/// writes refused as read-only once they had.
struct Fault {
    promoted_after: Duration,
    writes_back_after: Duration,
    refused_then: u64,
}

/// Waits for the promotion and the first write acknowledged after it.
async fn measure(app: &TestApp, load: &Load, promoted: Instant, started: Instant) -> Fault {
    let back = load.first_write_done_after(promoted, PROMOTION_BOUND).await;
    let writes_back_after = back.saturating_duration_since(promoted);
    assert!(
        writes_back_after <= WRITES_BACK_WITHIN,
        "writes came back {writes_back_after:?} after the promotion"
    );
    // A write already in flight to the old primary is answered within milliseconds (a
    // standby refuses it at once): counted before the snapshot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Fault {
        promoted_after: promoted - started,
        writes_back_after,
        refused_then: refused_writes(app),
    }
}

fn refused_writes(app: &TestApp) -> u64 {
    app.db
        .servers()
        .all()
        .iter()
        .map(|s| s.refused_writes())
        .sum()
}

/// The assertions over the whole run.
fn check(outcome: &Outcome, stored: &BTreeMap<String, i32>) {
    let unexpected: Vec<&String> = outcome
        .codes
        .keys()
        .filter(|c| !matches!(c.as_str(), "Ok" | "Unavailable"))
        .collect();
    assert!(unexpected.is_empty(), "codes: {:?}", outcome.codes);
    assert_eq!(outcome.refused_logins, 0, "right passwords refused");
    assert_eq!(outcome.wrong_reads, 0, "ObterNivel answered a wrong level");
    let lost: Vec<&String> = outcome
        .added
        .iter()
        .filter(|u| !stored.contains_key(*u))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged AdicionarUsuario lost: {lost:?}"
    );
    let reverted: Vec<&String> = outcome
        .altered
        .iter()
        .filter(|u| stored.get(*u) != Some(&2))
        .collect();
    assert!(
        reverted.is_empty(),
        "acknowledged AlterarNivel lost: {reverted:?}"
    );
}

/// The cluster: etcd, three Patroni nodes, HAProxy. Everything is killed when dropped.
struct HaCluster {
    dir: tempfile::TempDir,
    as_root: bool,
    etcd: Proc,
    haproxy: Proc,
    nodes: Vec<Node>,
    write_port: u16,
    read_port: u16,
}

struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    patroni: Option<Proc>,
}

/// A child process in a process group of its own, killed with its group when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> Proc {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(log).unwrap();
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        Proc(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {command:?}: {e}")),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = i32::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl HaCluster {
    fn start() -> HaCluster {
        let dir = tempfile::Builder::new()
            .prefix("produto-patroni-")
            .tempdir()
            .unwrap();
        let port = cluster::free_port;
        let (etcd_port, peer_port) = (port(), port());
        let etcd = Proc::spawn(
            {
                let mut c = Command::new("etcd");
                c.args([
                    "--name",
                    "etcd0",
                    "--data-dir",
                    &dir.path().join("etcd").display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{etcd_port}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{etcd_port}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer_port}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer_port}"),
                    "--initial-cluster",
                    &format!("etcd0=http://127.0.0.1:{peer_port}"),
                ]);
                c
            },
            &dir.path().join("etcd.log"),
        );
        let nodes: Vec<Node> = (1..=3)
            .map(|n| Node {
                name: format!("node{n}"),
                pg_port: port(),
                rest_port: port(),
                patroni: None,
            })
            .collect();
        let (write_port, read_port) = (port(), port());
        std::fs::write(
            dir.path().join("haproxy.cfg"),
            haproxy_config(&nodes, write_port, read_port),
        )
        .unwrap();
        let haproxy = Proc::spawn(
            {
                let mut c = Command::new("haproxy");
                c.arg("-db").arg("-f").arg(dir.path().join("haproxy.cfg"));
                c
            },
            &dir.path().join("haproxy.log"),
        );
        let bin = cluster::pg_bin_dir();
        for node in &nodes {
            let home = dir.path().join(&node.name);
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(
                home.join("patroni.yml"),
                patroni_config(node, &home, &bin, etcd_port),
            )
            .unwrap();
        }
        // PostgreSQL refuses to run as root: as root, the nodes run as the postgres user.
        let as_root = cluster::hand_to_postgres_if_root(dir.path());
        let mut ha = HaCluster {
            dir,
            as_root,
            etcd,
            haproxy,
            nodes,
            write_port,
            read_port,
        };
        for index in 0..ha.nodes.len() {
            let home = ha.dir.path().join(&ha.nodes[index].name);
            let mut command = if ha.as_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", "patroni"]);
                c
            } else {
                Command::new("patroni")
            };
            command.arg(home.join("patroni.yml")).current_dir(&home);
            ha.nodes[index].patroni = Some(Proc::spawn(command, &home.join("patroni.log")));
            if index == 0 {
                // The first node bootstraps the cluster alone, so that it is the one that
                // runs initdb; the others then copy it.
                ha.wait_blocking_for_leader();
            }
        }
        ha
    }

    fn wait_blocking_for_leader(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.nodes[0].rest_port))
            {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /primary HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                started.elapsed() < CLUSTER_BOUND,
                "node1 did not bootstrap within {CLUSTER_BOUND:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tails of the logs, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = vec![
            self.dir.path().join("etcd.log"),
            self.dir.path().join("haproxy.log"),
        ];
        files.extend(
            self.nodes
                .iter()
                .map(|n| self.dir.path().join(&n.name).join("patroni.log")),
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("\n--- {}\n", file.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until every member runs, one is the leader and one the synchronous standby
    /// (without one, synchronous mode allows no failover).
    async fn wait_healthy(&self) {
        let started = Instant::now();
        loop {
            if let Some(members) = self.members().await {
                let running = members
                    .iter()
                    .filter(|m| m.state == "running" || m.state == "streaming")
                    .count();
                let leader = members
                    .iter()
                    .any(|m| m.role == "leader" && m.state == "running");
                let sync = members.iter().any(|m| m.role == "sync_standby");
                if running == self.nodes.len() && leader && sync {
                    return;
                }
            }
            assert!(
                started.elapsed() < CLUSTER_BOUND,
                "the cluster was not healthy within {CLUSTER_BOUND:?}: {:?}{}",
                self.members().await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The members as any reachable node's REST API lists them.
    async fn members(&self) -> Option<Vec<Member>> {
        for node in &self.nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], node.rest_port));
            let Ok(Ok((200, body))) = tokio::time::timeout(
                Duration::from_secs(2),
                try_http(addr, "GET", "/cluster", ""),
            )
            .await
            else {
                continue;
            };
            let cluster: serde_json::Value = serde_json::from_str(&body).ok()?;
            let members = cluster["members"].as_array()?;
            return Some(
                members
                    .iter()
                    .map(|m| Member {
                        name: m["name"].as_str().unwrap_or("").to_owned(),
                        role: m["role"].as_str().unwrap_or("").to_owned(),
                        state: m["state"].as_str().unwrap_or("").to_owned(),
                    })
                    .collect(),
            );
        }
        None
    }

    /// The leader now.
    async fn leader(&self) -> Leader {
        let started = Instant::now();
        loop {
            if let Some(members) = self.members().await
                && let Some(m) = members
                    .iter()
                    .find(|m| m.role == "leader" && m.state == "running")
                && let Some(index) = self.nodes.iter().position(|n| n.name == m.name)
            {
                return Leader {
                    name: m.name.clone(),
                    index,
                };
            }
            assert!(
                started.elapsed() < CLUSTER_BOUND,
                "no leader{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A planned switchover away from `leader`, through Patroni's REST API (which answers
    /// once it is done).
    async fn switchover(&self, leader: &str) {
        let node = &self.nodes[0];
        let addr = SocketAddr::from(([127, 0, 0, 1], node.rest_port));
        let body = format!("{{\"leader\": \"{leader}\"}}");
        let answer = tokio::time::timeout(
            PROMOTION_BOUND,
            try_http(addr, "POST", "/switchover", &body),
        )
        .await
        .expect("the switchover request did not answer in time")
        .expect("the switchover request failed");
        assert_eq!(answer.0, 200, "switchover: {answer:?}{}", self.logs());
    }

    /// When another node than the old leader left recovery, within `bound`.
    async fn promoted(&self, watch: &mut PromotionWatch, bound: Duration) -> Instant {
        match watch.wait(bound).await {
            Some(at) => at,
            None => panic!(
                "no other node promoted within {bound:?}: {:?}{}",
                self.members().await,
                self.logs()
            ),
        }
    }

    /// The whole node dies: its Patroni, then its postgres.
    fn kill_node(&mut self, leader: &Leader) {
        self.nodes[leader.index].patroni.take();
        self.kill_postgres(leader);
    }

    /// SIGKILL to the node's postmaster and every backend of it at once: a crash.
    fn kill_postgres(&self, leader: &Leader) {
        let data = self
            .dir
            .path()
            .join(&self.nodes[leader.index].name)
            .join("data");
        for (pid, _) in cluster::postmaster_family(&data) {
            let pid = i32::try_from(pid).unwrap();
            // SAFETY: kill(2) on processes of the test's own cluster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    fn database_url(&self, via: Via) -> String {
        self.url(via, self.write_port, "target_session_attrs=read-write")
    }

    fn replica_url(&self, via: Via) -> String {
        let params = match via {
            Via::HaProxy => "target_session_attrs=standby",
            Via::MultiHost => "target_session_attrs=standby&load_balance_hosts=random",
        };
        self.url(via, self.read_port, params)
    }

    /// A URL to HAProxy's `proxy_port`, or to every node.
    fn url(&self, via: Via, proxy_port: u16, params: &str) -> String {
        let hosts = match via {
            Via::HaProxy => format!("127.0.0.1:{proxy_port}"),
            Via::MultiHost => self.host_list(),
        };
        format!("postgres://postgres@{hosts}/postgres?{params}")
    }

    fn host_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.pg_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_url(&self, index: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.nodes[index].pg_port
        )
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        // Patroni first (it would restart its postgres), then each postgres, which Patroni
        // started in a session of its own.
        for node in &mut self.nodes {
            node.patroni.take();
        }
        let bin = cluster::pg_bin_dir().join("pg_ctl");
        for node in &self.nodes {
            let data = self.dir.path().join(&node.name).join("data");
            if !data.join("postmaster.pid").exists() {
                continue;
            }
            let _ = cluster::as_postgres(&bin, self.as_root)
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
        let _ = (&self.etcd, &self.haproxy);
    }
}

#[derive(Debug)]
#[allow(dead_code, reason = "shown in failure messages")]
struct Member {
    name: String,
    role: String,
    state: String,
}

struct Leader {
    name: String,
    index: usize,
}

fn haproxy_config(nodes: &[Node], write_port: u16, read_port: u16) -> String {
    // Patroni's documented checks, with a short interval: HAProxy routes to the new leader
    // within about a second of its promotion.
    let servers = |check: &str| {
        nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} check port {} # {check}\n",
                    n.name, n.pg_port, n.rest_port
                )
            })
            .collect::<String>()
    };
    format!(
        "global\n    maxconn 400\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30m\n    \
         timeout server 30m\n    timeout check 1s\n\
         listen primary\n    bind 127.0.0.1:{write_port}\n    option httpchk GET /primary\n    \
         http-check expect status 200\n    \
         default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n{}\
         listen replicas\n    bind 127.0.0.1:{read_port}\n    balance roundrobin\n    \
         option httpchk GET /replica\n    http-check expect status 200\n    \
         default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n{}",
        servers("primary"),
        servers("replica"),
    )
}

fn patroni_config(node: &Node, home: &Path, bin: &Path, etcd_port: u16) -> String {
    let home = home.display();
    let bin = bin.display();
    // ttl/loop_wait/retry_timeout short, so that a failover takes seconds; a crashed primary
    // is failed over at once (primary_start_timeout 0) rather than restarted in place.
    format!(
        r#"scope: produto-test
namespace: /produto-test/
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    primary_start_timeout: 0
    synchronous_mode: true
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
        max_connections: 100
        max_wal_senders: 10
        max_replication_slots: 10
        fsync: "off"
  initdb:
    - encoding: UTF8
    - auth: trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {home}/data
  bin_dir: {bin}
  pgpass: {home}/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
      password: replicator
    rewind:
      username: postgres
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: '{home}'
"#,
        name = node.name,
        rest = node.rest_port,
        pg = node.pg_port,
    )
}

/// One HTTP/1.0 request to Patroni's REST API: the status and the body.
async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, body.to_owned()))
}

/// Watches every node but the old leader for the moment one leaves recovery.
struct PromotionWatch(tokio::task::JoinHandle<Instant>);

impl Drop for PromotionWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PromotionWatch {
    fn start(ha: &HaCluster, old: &Leader) -> PromotionWatch {
        let urls: Vec<String> = (0..ha.nodes.len())
            .filter(|&i| i != old.index)
            .map(|i| ha.node_url(i))
            .collect();
        PromotionWatch(tokio::spawn(async move {
            use sqlx::Connection;
            let mut conns: Vec<Option<sqlx::PgConnection>> = urls.iter().map(|_| None).collect();
            loop {
                for (url, slot) in urls.iter().zip(conns.iter_mut()) {
                    if slot.is_none() {
                        *slot = tokio::time::timeout(
                            Duration::from_millis(500),
                            sqlx::PgConnection::connect(url),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok);
                    }
                    let Some(conn) = slot.as_mut() else { continue };
                    let asked = tokio::time::timeout(
                        Duration::from_millis(500),
                        sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                            .fetch_one(&mut *conn),
                    )
                    .await;
                    match asked {
                        Ok(Ok(false)) => return Instant::now(),
                        Ok(Ok(true)) => {}
                        _ => *slot = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }))
    }

    /// When a node left recovery; `None` when none did within `bound` (the watch goes on).
    async fn wait(&mut self, bound: Duration) -> Option<Instant> {
        tokio::time::timeout(bound, &mut self.0)
            .await
            .ok()
            .map(Result::unwrap)
    }
}

/// The steady load: two writers (AdicionarUsuario then AlterarNivel of the new user), two
/// readers (ObterNivel of the seeded users), one caller logging in with right passwords.
struct Load {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<LoadState>>,
    tasks: tokio::task::JoinSet<()>,
}

#[derive(Default)]
struct LoadState {
    codes: BTreeMap<String, u32>,
    added: Vec<String>,
    altered: Vec<String>,
    /// When each acknowledged write finished.
    write_acks: Vec<Instant>,
    refused_logins: u32,
    wrong_reads: u32,
    last_read: Option<Instant>,
    longest_read_gap: Duration,
}

struct Outcome {
    codes: BTreeMap<String, u32>,
    added: Vec<String>,
    altered: Vec<String>,
    refused_logins: u32,
    wrong_reads: u32,
    longest_read_gap: Duration,
    refused_at_end: u64,
}

impl Load {
    fn start(client: &ProdutoServiceClient<Channel>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(LoadState::default()));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..2 {
            let (stop, state, mut client) = (stop.clone(), state.clone(), client.clone());
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let usuario = format!("w{w}_{i}");
                    i += 1;
                    let added = bounded(client.adicionar_usuario(admin(AdicionarUsuarioRequest {
                        usuario: usuario.clone(),
                        senha: PASSWORD.into(),
                        nivel: 1,
                    })))
                    .await;
                    let ok = record(&state, &added, |s| s.added.push(usuario.clone()));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let altered = bounded(client.alterar_nivel(admin(AlterarNivelRequest {
                        usuario: usuario.clone(),
                        nivel: 2,
                    })))
                    .await;
                    if !record(&state, &altered, |s| s.altered.push(usuario.clone())) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        for r in 0..2 {
            let (stop, state, mut client) = (stop.clone(), state.clone(), client.clone());
            tasks.spawn(async move {
                let mut i = r;
                while !stop.load(Ordering::SeqCst) {
                    let n = i % SEEDED;
                    i += 1;
                    let result = bounded(client.obter_nivel(ObterNivelRequest {
                        usuario: format!("seed{n}"),
                    }))
                    .await;
                    {
                        let mut s = state.lock().unwrap();
                        *s.codes
                            .entry(format!("{:?}", code_of(&result)))
                            .or_default() += 1;
                        if let Ok(answer) = &result {
                            if answer.get_ref().nivel != (n % 3) as i32 {
                                s.wrong_reads += 1;
                            }
                            let now = Instant::now();
                            if let Some(last) = s.last_read {
                                s.longest_read_gap = s.longest_read_gap.max(now - last);
                            }
                            s.last_read = Some(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        {
            let (stop, state, mut client) = (stop.clone(), state.clone(), client.clone());
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let n = i % SEEDED;
                    i += 1;
                    let result = bounded(client.verificar_login(VerificarLoginRequest {
                        usuario: format!("seed{n}"),
                        senha: PASSWORD.into(),
                    }))
                    .await;
                    {
                        let mut s = state.lock().unwrap();
                        *s.codes
                            .entry(format!("{:?}", code_of(&result)))
                            .or_default() += 1;
                        match &result {
                            Ok(answer) if !answer.get_ref().valido => s.refused_logins += 1,
                            Err(status) if status.code() == Code::Unauthenticated => {
                                s.refused_logins += 1
                            }
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        Load { stop, state, tasks }
    }

    async fn wait_for_writes(&self, n: usize) {
        let started = Instant::now();
        while self.state.lock().unwrap().added.len() < n {
            assert!(
                started.elapsed() < PROMOTION_BOUND,
                "writes are not acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When the first write acknowledged after `after` finished.
    async fn first_write_done_after(&self, after: Instant, bound: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(&at) = self
                .state
                .lock()
                .unwrap()
                .write_acks
                .iter()
                .find(|&&at| at > after)
            {
                return at;
            }
            assert!(
                started.elapsed() < bound,
                "no write acknowledged within {bound:?} of the promotion"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(mut self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        let s = std::mem::take(&mut *self.state.lock().unwrap());
        Outcome {
            codes: s.codes,
            added: s.added,
            altered: s.altered,
            refused_logins: s.refused_logins,
            wrong_reads: s.wrong_reads,
            longest_read_gap: s.longest_read_gap,
            refused_at_end: 0,
        }
    }
}

/// A call bounded by [`CALL_BOUND`]; past it, DEADLINE_EXCEEDED (which fails the test).
async fn bounded<T>(
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("the test's own bound")))
}

/// Counts a write's answer; on success runs `acked` and notes the time. True when OK.
fn record<T>(
    state: &Mutex<LoadState>,
    result: &Result<T, tonic::Status>,
    acked: impl FnOnce(&mut LoadState),
) -> bool {
    let mut s = state.lock().unwrap();
    *s.codes.entry(format!("{:?}", code_of(result))).or_default() += 1;
    if result.is_ok() {
        acked(&mut s);
        s.write_acks.push(Instant::now());
    }
    result.is_ok()
}

/// Every user and level, read from the leader directly.
async fn stored_levels(url: &str) -> BTreeMap<String, i32> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as::<_, (String, i32)>("SELECT usuario, nivel FROM usuarios")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}
