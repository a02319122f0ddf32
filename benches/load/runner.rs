//! The closed-loop load runner: N callers, each issuing its next call as soon as the last one
//! answered, for a warm-up and then a measured window; latencies go into HDR histograms and
//! failures are counted by code. The server's RSS is sampled while the load runs, and its CPU
//! time read at the start and the end of the measured window.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::server::{cpu_ticks, rss_kib, ticks_to_us};

/// One call's future: `Err` carries the failure's code (a gRPC code name or `sqlx:...`).
pub type CallFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// What one caller runs in a loop.
pub type Call = Box<dyn FnMut() -> CallFuture + Send>;

/// Latencies are recorded in microseconds, up to a minute, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What one group of callers did in the measured window.
#[derive(Debug)]
pub struct Outcome {
    pub callers: usize,
    /// Every call made, warm-up included.
    pub total: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latency of every call (successful or not) that started and ended in the window.
    pub latency: Histogram<u64>,
    pub window: Duration,
    /// Largest VmRSS of the server seen while the load ran, in KiB.
    pub server_rss_peak_kib: Option<u64>,
    /// Calls that ended in the window (whatever they started): what the server's CPU time
    /// over the window paid for.
    pub served: u64,
    /// The server's user + system CPU over the window, in clock ticks; None when several
    /// groups share the server (it cannot be split between them) or /proc is unreadable.
    pub cpu_ticks: Option<u64>,
}

impl Outcome {
    /// Adds another slice of the same measurement (an ABBA round) to this one.
    pub fn merge(&mut self, other: Outcome) {
        self.total += other.total;
        self.ok += other.ok;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.window += other.window;
        self.server_rss_peak_kib = self.server_rss_peak_kib.max(other.server_rss_peak_kib);
        self.served += other.served;
        self.cpu_ticks = self.cpu_ticks.zip(other.cpu_ticks).map(|(a, b)| a + b);
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// The server's CPU per call served, in µs.
    pub fn cpu_us_per_req(&self) -> Option<f64> {
        let ticks = self.cpu_ticks?;
        (self.served > 0).then(|| ticks_to_us(ticks) / self.served as f64)
    }
}

/// A group of callers that run together: `make(i)` builds caller `i`'s call.
pub struct Group<'a> {
    pub callers: usize,
    pub make: Box<dyn FnMut(usize) -> Call + 'a>,
}

impl<'a> Group<'a> {
    pub fn new(callers: usize, make: impl FnMut(usize) -> Call + 'a) -> Self {
        Group {
            callers,
            make: Box::new(make),
        }
    }
}

/// Runs every group at once for `warmup + window`; returns one outcome per group.
pub async fn run(
    groups: Vec<Group<'_>>,
    warmup: Duration,
    window: Duration,
    server_pid: Option<u32>,
) -> Vec<Outcome> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let sampler = server_pid.map(|pid| tokio::spawn(sample_rss(pid, end)));
    let cpu = server_pid
        .filter(|_| groups.len() == 1)
        .map(|pid| tokio::spawn(sample_cpu(pid, measure_from, end)));

    let mut tasks = Vec::new();
    for (g, mut group) in groups.into_iter().enumerate() {
        for i in 0..group.callers {
            let mut call = (group.make)(i);
            tasks.push((
                g,
                group.callers,
                tokio::spawn(async move {
                    let mut latency = histogram();
                    let mut ok = 0u64;
                    let mut total = 0u64;
                    let mut served = 0u64;
                    let mut errors = BTreeMap::<String, u64>::new();
                    loop {
                        let began = Instant::now();
                        if began >= end {
                            break;
                        }
                        let result = call().await;
                        let done = Instant::now();
                        total += 1;
                        if done >= measure_from && done <= end {
                            served += 1;
                        }
                        if began < measure_from || done > end {
                            continue;
                        }
                        latency.saturating_record(
                            u64::try_from(done.duration_since(began).as_micros())
                                .unwrap_or(u64::MAX),
                        );
                        match result {
                            Ok(()) => ok += 1,
                            Err(code) => *errors.entry(code).or_default() += 1,
                        }
                    }
                    (total, ok, served, errors, latency)
                }),
            ));
        }
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    for (g, callers, task) in tasks {
        let (total, ok, served, errors, latency) = task.await.expect("a caller panicked");
        while outcomes.len() <= g {
            outcomes.push(Outcome {
                callers,
                total: 0,
                ok: 0,
                errors: BTreeMap::new(),
                latency: histogram(),
                window,
                server_rss_peak_kib: None,
                served: 0,
                cpu_ticks: None,
            });
        }
        let outcome = &mut outcomes[g];
        outcome.total += total;
        outcome.served += served;
        outcome.ok += ok;
        for (code, n) in errors {
            *outcome.errors.entry(code).or_default() += n;
        }
        outcome
            .latency
            .add(&latency)
            .expect("same histogram bounds");
    }
    let peak = match sampler {
        Some(s) => s.await.ok().flatten(),
        None => None,
    };
    let ticks = match cpu {
        Some(c) => c.await.ok().flatten(),
        None => None,
    };
    for outcome in &mut outcomes {
        outcome.server_rss_peak_kib = peak;
        outcome.cpu_ticks = ticks;
    }
    outcomes
}

/// The CPU ticks `pid` spent between `from` and `to`.
async fn sample_cpu(pid: u32, from: Instant, to: Instant) -> Option<u64> {
    tokio::time::sleep_until(from.into()).await;
    let before = cpu_ticks(pid)?;
    tokio::time::sleep_until(to.into()).await;
    Some(cpu_ticks(pid)?.saturating_sub(before))
}

/// Largest VmRSS of `pid` seen every 20 ms until `end`.
pub async fn sample_rss(pid: u32, end: Instant) -> Option<u64> {
    let mut peak = None;
    while Instant::now() < end {
        if let Some((rss, _)) = rss_kib(pid) {
            peak = peak.max(Some(rss));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

/// A small, fast generator for picking random users (no need for a crypto RNG here).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One run compared side by side: the pid of the server whose CPU is read, and its callers.
pub type Side<'a> = (u32, &'a dyn Fn(usize) -> Call);

/// Plays `sides` against each other: `window` of each cut into `rounds` slices played in ABBA
/// order (A B C, C B A, ...), each after a warm-up of a fifth of a slice (at most 1 s), and
/// merged, so that the load other processes put on the machine falls on each alike. One
/// outcome per side, in order.
pub async fn abba(
    sides: &[Side<'_>],
    callers: usize,
    rounds: u32,
    window: Duration,
) -> Vec<Outcome> {
    let rounds = rounds.max(1);
    let slice = window / rounds;
    let warmup = (slice / 5).min(Duration::from_secs(1));
    let mut merged: Vec<Option<Outcome>> = sides.iter().map(|_| None).collect();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for i in order {
            let (pid, make) = sides[i];
            let o = run(vec![Group::new(callers, make)], warmup, slice, Some(pid))
                .await
                .remove(0);
            match &mut merged[i] {
                Some(m) => m.merge(o),
                slot => *slot = Some(o),
            }
        }
    }
    merged
        .into_iter()
        .map(|o| o.expect("at least one round"))
        .collect()
}

/// [`abba`] of one call against several servers: `make(channels, i)` on each `(pid, channels)`.
pub async fn abba_servers(
    servers: &[(u32, &[Channel])],
    make: fn(&[Channel], usize) -> Call,
    callers: usize,
    rounds: u32,
    window: Duration,
) -> Vec<Outcome> {
    let makes: Vec<_> = servers
        .iter()
        .map(|&(_, channels)| move |i| make(channels, i))
        .collect();
    let sides: Vec<Side> = servers
        .iter()
        .zip(&makes)
        .map(|(&(pid, _), make)| (pid, make as &dyn Fn(usize) -> Call))
        .collect();
    abba(&sides, callers, rounds, window).await
}
