//! Read replicas: the servers produto connects to (the primary of `DATABASE_URL` and the
//! streaming standbys of `PRODUTO_REPLICA_URLS`), each with a pool of its own, what the probe
//! last saw of each, and the rule that routes a query to one of them.
//!
//! The design, in the order a query meets it:
//!
//! - **Roles come from the probe, among the candidates the configuration names.** Every
//!   probe asks each server `pg_is_in_recovery()` and its replay lag. The primary is the
//!   write candidate that answered "not in recovery", in the order configured, as libpq's
//!   `target_session_attrs=read-write` picks among several hosts. The write candidates are
//!   the hosts of `DATABASE_URL` (one, or several in libpq's multi-host form) and, only with
//!   `PRODUTO_REPLICA_FAILOVER`, the replicas' (see [`super::hosts`]): so a load-balanced read
//!   endpoint whose connection lands on a freshly promoted node never takes the writes, and
//!   when a listed candidate is promoted (Patroni, `pg_ctl promote`) writes go there with no
//!   restart. Until a probe has answered, `DATABASE_URL`'s first host is the primary. While
//!   there are several candidates and none is writable, a failed write asks for a probe at
//!   once ([`Servers::primary_lost`]), so writes follow a promotion within a probe.
//! - **Writes** (AdicionarUsuario, rehash updates, the throttling table) and reads that must
//!   see their own writes go to the primary. A connection that answers SQLSTATE 25006
//!   (read-only transaction: the server was demoted, or is a standby) is discarded, the server
//!   is marked in recovery at once and the call answers UNAVAILABLE (safe to retry).
//! - **Reads** (ObterNivel, the credential lookup of VerificarLogin) go round robin to the
//!   replicas that are readable: reachable at the last probe, in recovery, and with a replay
//!   lag known and within `PRODUTO_REPLICA_MAX_LAG`. With none readable, reads go to the
//!   primary. A read that fails on a replica (it died between two probes) is retried once on
//!   the primary. The ObterNivel batcher runs per server, so a batch never mixes servers.
//! - **No stale "does not exist".** Replication is asynchronous, so a user just added may not
//!   be on a replica yet. A miss on a replica (unknown user, NOT_FOUND) is therefore confirmed
//!   on the primary before it is answered; misses are rare, so this costs little. Together
//!   with the lag bound this gives the guarantee: a user that exists is never reported
//!   missing while the primary is up, and a value changed on the primary outside produto (an
//!   operator changing a level) is read stale for at most about the lag bound plus one probe
//!   interval. While the primary is down a replica's miss is answered as it is: there is no
//!   better knowledge left (and the writes the replica never received are lost to a failover
//!   anyway).
//! - **Lag** is 0 when the replica has replayed everything it received (an idle primary does
//!   not make it look stale), else the age of the last replayed transaction
//!   (`now() - pg_last_xact_replay_timestamp()`), which overestimates: a replica judged
//!   lagging may be a little fresher, never staler.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use sqlx::{Pool, postgres::Postgres, sqlite::Sqlite};
use tokio::sync::{Notify, watch};

use super::{PoolStats, hosts::Candidacy, url::LoadBalance};

/// What a query needs of the server it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// May run on a replica within the lag bound.
    Read,
    /// Must run on the primary: a write, or a read that must see the primary's latest state.
    Primary,
}

/// What a server is now, as the probe last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// The probe's question to a PostgreSQL server: is it in recovery, and how far behind is its
/// replay, in milliseconds (NULL: unknown, e.g. nothing replayed since it started).
pub const PG_PROBE_SQL: &str = "SELECT pg_is_in_recovery(), CASE \
     WHEN NOT pg_is_in_recovery() THEN 0::float8 \
     WHEN pg_last_wal_receive_lsn() IS NOT NULL \
      AND pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0::float8 \
     ELSE (EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::float8 \
     END";

/// What one probe found on a reachable server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub in_recovery: bool,
    /// Replay lag; `None` when the server cannot tell.
    pub lag: Option<Duration>,
}

/// The pool of one backend.
#[derive(Clone, Debug)]
pub enum Backend {
    Postgres(Pool<Postgres>),
    Sqlite(Pool<Sqlite>),
}

/// One server: its pool, its figures, and what the probe last saw of it.
#[derive(Debug)]
pub struct Server {
    pub(crate) backend: Backend,
    pub(crate) stats: Arc<PoolStats>,
    /// `host:port/database`, never the credentials: for PoolStatus, metrics and logs.
    pub(crate) address: String,
    pub(crate) min_connections: u32,
    pub(crate) max_connections: u32,
    /// What the configuration lets it be: a write candidate, a read target, or both.
    pub(crate) candidacy: Candidacy,
    in_recovery: AtomicBool,
    /// Writes it refused as read-only (SQLSTATE 25006): sent while it was no longer the primary.
    refused_writes: AtomicU64,
    /// Replay lag in ms at the last probe; -1: unknown.
    lag_ms: AtomicI64,
    /// Queries routed to this server as reads (ObterNivel lookups and credential lookups,
    /// a batch counting once).
    reads: AtomicU64,
}

impl Server {
    pub(crate) fn new(
        backend: Backend,
        address: String,
        (min_connections, max_connections): (u32, u32),
        stats: Arc<PoolStats>,
    ) -> Self {
        Server {
            backend,
            stats,
            address,
            min_connections,
            max_connections,
            // Until told otherwise (see `with_candidacy`), as before multi-host URLs: any
            // server may take writes or reads, reads spread over all.
            candidacy: Candidacy {
                reads: true,
                balance: LoadBalance::Random,
                ..Candidacy::PRIMARY
            },
            in_recovery: AtomicBool::new(false),
            refused_writes: AtomicU64::new(0),
            lag_ms: AtomicI64::new(-1),
            reads: AtomicU64::new(0),
        }
    }

    /// Whether the last probe reached it.
    pub fn reachable(&self) -> bool {
        self.stats.healthy()
    }

    /// Replay lag at the last probe (`None`: unknown, or unreachable).
    pub fn lag(&self) -> Option<Duration> {
        u64::try_from(self.lag_ms.load(Relaxed))
            .ok()
            .map(Duration::from_millis)
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Relaxed)
    }

    /// Writes it refused as read-only since start.
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes.load(Relaxed)
    }

    /// Sets what the configuration lets it be.
    pub(crate) fn with_candidacy(mut self, candidacy: Candidacy) -> Self {
        self.candidacy = candidacy;
        self
    }

    pub(crate) fn count_read(&self) {
        self.reads.fetch_add(1, Relaxed);
    }
}

/// Every server, and which one is the primary now.
#[derive(Debug)]
pub struct Servers {
    /// `DATABASE_URL` first, then the replicas in their configured order.
    list: Vec<Server>,
    primary: AtomicUsize,
    next_read: AtomicUsize,
    max_lag: Duration,
    /// Raised when the primary failed a statement while another server could take over.
    lost: Notify,
    /// The primary's index, for those waiting for it to move.
    primary_changes: watch::Sender<usize>,
}

impl Servers {
    pub(crate) fn new(list: Vec<Server>, max_lag: Duration) -> Self {
        assert!(!list.is_empty(), "at least the primary");
        Servers {
            list,
            primary: AtomicUsize::new(0),
            next_read: AtomicUsize::new(0),
            max_lag,
            lost: Notify::new(),
            primary_changes: watch::channel(0).0,
        }
    }

    pub fn all(&self) -> &[Server] {
        &self.list
    }

    pub fn get(&self, index: usize) -> &Server {
        &self.list[index]
    }

    /// Whether any replica is configured.
    pub fn has_replicas(&self) -> bool {
        self.list.len() > 1
    }

    pub fn primary_index(&self) -> usize {
        self.primary.load(Relaxed)
    }

    pub fn primary(&self) -> &Server {
        &self.list[self.primary_index()]
    }

    pub fn role(&self, index: usize) -> Role {
        if index == self.primary_index() {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    /// Whether more than one server may take the writes: then which one does is found by the
    /// probe, and followed when it moves.
    pub fn follows_primary(&self) -> bool {
        self.list.iter().filter(|s| s.candidacy.writes).count() > 1
    }

    /// Whether the primary was reachable and out of recovery at the last probe.
    pub fn primary_writable(&self) -> bool {
        let primary = self.primary();
        primary.reachable() && !primary.in_recovery.load(Relaxed)
    }

    /// The primary failed a statement (its connection broke, or it refused a write as
    /// read-only): with other candidates, the supervisor probes at once.
    pub(crate) fn primary_lost(&self) {
        if self.follows_primary() {
            self.lost.notify_one();
        }
    }

    /// The primary's index as it changes.
    pub(crate) fn watch_primary(&self) -> watch::Receiver<usize> {
        self.primary_changes.subscribe()
    }

    /// Resolves once [`Servers::primary_lost`] was called (at once if it was since the last
    /// wait).
    pub async fn primary_lost_notified(&self) {
        self.lost.notified().await;
    }

    /// Whether reads may go to server `index`: a read target reachable and in recovery, its
    /// lag known and within the bound.
    pub fn readable(&self, index: usize) -> bool {
        let server = &self.list[index];
        index != self.primary_index()
            && server.candidacy.reads
            && server.reachable()
            && server.in_recovery.load(Relaxed)
            && server.lag().is_some_and(|lag| lag <= self.max_lag)
    }

    /// The server a query with this access goes to: for a read, the next readable replica
    /// (round robin), or the primary when none is.
    pub fn route(&self, access: Access) -> usize {
        if access == Access::Primary || !self.has_replicas() {
            return self.primary_index();
        }
        // A URL without load balancing gives its reads to its first readable host only.
        let mut readable: Vec<usize> = Vec::new();
        for i in (0..self.list.len()).filter(|&i| self.readable(i)) {
            let c = &self.list[i].candidacy;
            let first_of_url = readable
                .last()
                .is_none_or(|&last| self.list[last].candidacy.url != c.url);
            if c.balance == LoadBalance::Random || first_of_url {
                readable.push(i);
            }
        }
        if readable.is_empty() {
            return self.primary_index();
        }
        readable[self.next_read.fetch_add(1, Relaxed) % readable.len()]
    }

    /// Records one probe of server `index` (`None`: unreachable). Call
    /// [`Servers::elect_primary`] once every server has been probed.
    pub(crate) fn record_probe(&self, index: usize, reading: Option<Reading>) {
        let server = &self.list[index];
        server.stats.healthy.store(reading.is_some(), Relaxed);
        if let Some(r) = reading {
            server.in_recovery.store(r.in_recovery, Relaxed);
            let lag = r
                .lag
                .map_or(-1, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
            server.lag_ms.store(lag, Relaxed);
        } else {
            server.lag_ms.store(-1, Relaxed);
        }
    }

    /// Picks the primary: the current one while it is reachable and out of recovery, else
    /// the first write candidate that is; with none, the current one stays (writes fail
    /// until one appears).
    pub(crate) fn elect_primary(&self) {
        let writable =
            |s: &Server| s.candidacy.writes && s.reachable() && !s.in_recovery.load(Relaxed);
        let current = self.primary_index();
        if writable(&self.list[current]) {
            return;
        }
        if let Some(next) = self.list.iter().position(writable) {
            self.primary.store(next, Relaxed);
            self.primary_changes.send_replace(next);
            tracing::warn!(
                from = %self.list[current].address,
                to = %self.list[next].address,
                "primary changed: writes now go to another server"
            );
        }
    }

    /// A write on server `index` answered "read-only transaction" (SQLSTATE 25006): it is in
    /// recovery now, whatever the last probe said; the next probe elects another primary.
    pub(crate) fn demote(&self, index: usize) {
        self.list[index].in_recovery.store(true, Relaxed);
        self.list[index].refused_writes.fetch_add(1, Relaxed);
        if index == self.primary_index() {
            self.primary_lost();
        }
        tracing::warn!(
            server = %self.list[index].address,
            "the primary refused a write as read-only; looking for the new primary"
        );
    }
}

/// `host:port/database` of a PostgreSQL server, without user or password.
pub fn address_of(options: &sqlx::postgres::PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// Whether a failed statement was refused because the server is read-only (a standby).
pub fn is_read_only_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("25006"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::*;

    fn servers(n: usize) -> Servers {
        let list = (0..n)
            .map(|i| {
                let options =
                    PgConnectOptions::from_str(&format!("postgres://u:secret@h{i}:5432/d"))
                        .unwrap();
                let address = address_of(&options);
                let pool = PgPoolOptions::new().connect_lazy_with(options);
                Server::new(Backend::Postgres(pool), address, (0, 1), Arc::default())
            })
            .collect();
        Servers::new(list, Duration::from_secs(1))
    }

    fn replica(lag_ms: u64) -> Option<Reading> {
        Some(Reading {
            in_recovery: true,
            lag: Some(Duration::from_millis(lag_ms)),
        })
    }

    const PRIMARY: Option<Reading> = Some(Reading {
        in_recovery: false,
        lag: Some(Duration::ZERO),
    });

    #[tokio::test]
    async fn reads_spread_over_fresh_replicas_and_fall_back_to_the_primary() {
        let s = servers(3);
        assert_eq!(s.get(1).address, "h1:5432/d", "no credentials");
        // Before any probe: everything on DATABASE_URL.
        assert_eq!(s.route(Access::Read), 0);
        s.record_probe(0, PRIMARY);
        s.record_probe(1, replica(10));
        s.record_probe(2, replica(20));
        s.elect_primary();
        let reads: Vec<usize> = (0..4).map(|_| s.route(Access::Read)).collect();
        assert_eq!(reads.iter().filter(|&&i| i == 1).count(), 2, "{reads:?}");
        assert_eq!(reads.iter().filter(|&&i| i == 2).count(), 2, "{reads:?}");
        assert_eq!(s.route(Access::Primary), 0);

        // Lagging, down, or of unknown lag: no reads.
        s.record_probe(1, replica(1500));
        s.record_probe(2, None);
        assert_eq!(s.route(Access::Read), 0);
        s.record_probe(
            2,
            Some(Reading {
                in_recovery: true,
                lag: None,
            }),
        );
        assert_eq!(s.route(Access::Read), 0);
        s.record_probe(1, replica(0));
        assert_eq!(s.route(Access::Read), 1);
    }

    /// Servers `(writes, reads, url, balance)`, in order.
    fn configured(list: &[(bool, bool, usize, LoadBalance)]) -> Servers {
        let base = servers(list.len());
        let list = base
            .list
            .into_iter()
            .zip(list)
            .map(|(server, &(writes, reads, url, balance))| {
                server.with_candidacy(Candidacy {
                    writes,
                    reads,
                    url,
                    balance,
                    ..Candidacy::PRIMARY
                })
            })
            .collect();
        Servers::new(list, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_read_endpoint_found_out_of_recovery_never_takes_the_writes() {
        // DATABASE_URL (a load balancer's write port) and its read port as a replica.
        let s = configured(&[
            (true, false, 0, LoadBalance::Disable),
            (false, true, 1, LoadBalance::Disable),
        ]);
        assert!(!s.follows_primary());
        s.record_probe(0, None);
        // The read port's connection sits on the node just promoted.
        s.record_probe(1, PRIMARY);
        s.elect_primary();
        assert_eq!(s.primary_index(), 0, "writes stay on the write endpoint");
        assert_eq!(s.route(Access::Read), 0, "and it is no read target either");
        s.record_probe(1, replica(0));
        assert_eq!(s.route(Access::Read), 1);
        // A multi-host DATABASE_URL: its hosts take the writes in turn, never reads.
        let s = configured(&[
            (true, false, 0, LoadBalance::Disable),
            (true, false, 0, LoadBalance::Disable),
            (false, true, 1, LoadBalance::Disable),
        ]);
        assert!(s.follows_primary());
        s.record_probe(0, None);
        s.record_probe(1, replica(0));
        s.record_probe(2, replica(0));
        s.elect_primary();
        assert!(!s.primary_writable());
        assert_eq!(s.route(Access::Read), 2);
        s.record_probe(1, PRIMARY);
        s.elect_primary();
        assert_eq!(s.primary_index(), 1);
        assert!(s.primary_writable());
    }

    #[tokio::test]
    async fn a_replica_url_without_load_balancing_reads_from_its_first_standby() {
        let s = configured(&[
            (true, false, 0, LoadBalance::Disable),
            (false, true, 1, LoadBalance::Disable),
            (false, true, 1, LoadBalance::Disable),
            (false, true, 2, LoadBalance::Random),
            (false, true, 2, LoadBalance::Random),
        ]);
        s.record_probe(0, PRIMARY);
        for i in 1..5 {
            s.record_probe(i, replica(0));
        }
        s.elect_primary();
        let mut reads = [0; 5];
        for _ in 0..30 {
            reads[s.route(Access::Read)] += 1;
        }
        assert_eq!(reads, [0, 10, 0, 10, 10]);
        // The first one down: the next host of the same URL takes over.
        s.record_probe(1, None);
        let mut reads = [0; 5];
        for _ in 0..30 {
            reads[s.route(Access::Read)] += 1;
        }
        assert_eq!(reads, [0, 0, 10, 10, 10]);
    }

    #[tokio::test]
    async fn a_promoted_replica_becomes_the_primary_and_a_demoted_one_stops_taking_writes() {
        let s = servers(2);
        s.record_probe(0, PRIMARY);
        s.record_probe(1, replica(0));
        s.elect_primary();
        assert_eq!(s.primary_index(), 0);

        // The primary dies: it stays the primary (writes fail) until another is writable.
        s.record_probe(0, None);
        s.elect_primary();
        assert_eq!(s.primary_index(), 0);
        assert_eq!(s.route(Access::Read), 1, "reads go on from the replica");

        // The standby is promoted.
        s.record_probe(1, PRIMARY);
        s.elect_primary();
        assert_eq!(s.primary_index(), 1);
        assert_eq!(s.role(1), Role::Primary);
        assert_eq!(
            s.route(Access::Read),
            1,
            "no replica left: reads on the primary"
        );

        // The old primary comes back as a standby of the new one: reads, never writes.
        s.record_probe(0, replica(0));
        s.elect_primary();
        assert_eq!(s.primary_index(), 1);
        assert_eq!(s.route(Access::Read), 0);

        // A write on 1 is refused as read-only: it is out until a probe says otherwise.
        s.demote(1);
        s.record_probe(0, PRIMARY);
        s.elect_primary();
        assert_eq!(s.primary_index(), 0);
    }
}
