//! The results: one row per scenario run, the targets checked against them, printed as a
//! table and written as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::runner::Outcome;

/// Latency percentiles of a row, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One scenario at one concurrency.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub variant: String,
    /// Who made the load: `rust` (this bench's callers), `h2load`, `pgbench`, or `-`.
    pub load: &'static str,
    /// Callers (closed loop), or concurrent streams for h2load, clients for pgbench.
    pub callers: usize,
    pub ok: u64,
    pub rps: f64,
    /// None where the load generator reports no percentiles (h2load, pgbench).
    pub latency: Option<Latency>,
    pub errors: BTreeMap<String, u64>,
    pub server_rss_peak_kib: Option<u64>,
    /// The server process's user + system CPU over the row, per request answered, in µs.
    pub cpu_us_per_req: Option<f64>,
    /// PostgreSQL's CPU over the row (every postgres process), per request, in µs (h2load rows).
    pub db_cpu_us_per_req: Option<f64>,
    /// ObterNivel calls per pool acquire on the server: the mean batch size.
    pub lookups_per_query: Option<f64>,
}

impl Row {
    pub fn from_outcome(
        scenario: impl Into<String>,
        variant: impl Into<String>,
        o: &Outcome,
    ) -> Self {
        let mut row = Row::new(
            scenario,
            variant,
            o.callers,
            o.ok,
            o.rps(),
            &o.latency,
            o.errors.clone(),
            o.server_rss_peak_kib,
        );
        row.load = "rust";
        row.cpu_us_per_req = o.cpu_us_per_req();
        row
    }

    #[allow(clippy::too_many_arguments)] // reason: a plain constructor of a plain record
    pub fn new(
        scenario: impl Into<String>,
        variant: impl Into<String>,
        callers: usize,
        ok: u64,
        rps: f64,
        h: &hdrhistogram::Histogram<u64>,
        errors: BTreeMap<String, u64>,
        server_rss_peak_kib: Option<u64>,
    ) -> Self {
        Row {
            scenario: scenario.into(),
            variant: variant.into(),
            load: "-",
            callers,
            ok,
            rps,
            latency: Some(Latency {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            }),
            errors,
            server_rss_peak_kib,
            cpu_us_per_req: None,
            db_cpu_us_per_req: None,
            lookups_per_query: None,
        }
    }

    /// A row measured by an outside load generator (no latency percentiles).
    pub fn external(
        scenario: impl Into<String>,
        variant: impl Into<String>,
        load: &'static str,
        callers: usize,
        ok: u64,
        rps: f64,
    ) -> Self {
        Row {
            scenario: scenario.into(),
            variant: variant.into(),
            load,
            callers,
            ok,
            rps,
            latency: None,
            errors: BTreeMap::new(),
            server_rss_peak_kib: None,
            cpu_us_per_req: None,
            db_cpu_us_per_req: None,
            lookups_per_query: None,
        }
    }

    /// p99 in µs (0 without percentiles).
    pub fn p99(&self) -> u64 {
        self.latency.map_or(0, |l| l.p99)
    }

    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "variant": self.variant,
            "load": self.load,
            "callers": self.callers,
            "ok": self.ok,
            "rps": round(self.rps),
            "latency_us": self.latency.map(|l| json!({
                "p50": l.p50, "p90": l.p90, "p99": l.p99, "p99_9": l.p999, "max": l.max,
            })),
            "errors": self.errors,
            "server_rss_peak_kib": self.server_rss_peak_kib,
            "server_cpu_us_per_request": self.cpu_us_per_req.map(round),
            "postgres_cpu_us_per_request": self.db_cpu_us_per_req.map(round),
            "lookups_per_query": self.lookups_per_query.map(round),
        })
    }
}

/// A target of the issue, checked.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub measured: f64,
    pub unit: &'static str,
    /// e.g. ">= 0.5".
    pub goal: String,
    pub met: bool,
}

impl Target {
    pub fn at_least(name: impl Into<String>, measured: f64, unit: &'static str, goal: f64) -> Self {
        Target {
            name: name.into(),
            measured,
            unit,
            goal: format!(">= {goal}"),
            met: measured >= goal,
        }
    }

    pub fn above(name: impl Into<String>, measured: f64, unit: &'static str, goal: f64) -> Self {
        Target {
            name: name.into(),
            measured,
            unit,
            goal: format!("> {goal}"),
            met: measured > goal,
        }
    }

    pub fn at_most(name: impl Into<String>, measured: f64, unit: &'static str, goal: f64) -> Self {
        Target {
            name: name.into(),
            measured,
            unit,
            goal: format!("<= {goal}"),
            met: measured <= goal,
        }
    }

    pub fn below(name: impl Into<String>, measured: f64, unit: &'static str, goal: f64) -> Self {
        Target {
            name: name.into(),
            measured,
            unit,
            goal: format!("< {goal}"),
            met: measured < goal,
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The readable table.
pub fn print_table(rows: &[Row], targets: &[Target], notes: &[(String, String)]) {
    println!();
    println!(
        "{:<30} {:<14} {:<7} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6}  errors",
        "scenario",
        "variant",
        "load",
        "callers",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9ms",
        "max ms",
        "RSS MiB",
        "CPU µs",
        "DB µs",
        "batch"
    );
    for r in rows {
        let errors = if r.errors.is_empty() {
            "-".to_string()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rss = r
            .server_rss_peak_kib
            .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
        let batch = r
            .lookups_per_query
            .map_or("-".to_string(), |b| format!("{b:.1}"));
        let cpu = r
            .cpu_us_per_req
            .map_or("-".to_string(), |c| format!("{c:.1}"));
        let db = r
            .db_cpu_us_per_req
            .map_or("-".to_string(), |c| format!("{c:.1}"));
        let l = |f: fn(&Latency) -> u64| r.latency.as_ref().map_or("-".to_string(), |l| ms(f(l)));
        println!(
            "{:<30} {:<14} {:<7} {:>7} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6}  {}",
            r.scenario,
            r.variant,
            r.load,
            r.callers,
            r.rps,
            l(|l| l.p50),
            l(|l| l.p90),
            l(|l| l.p99),
            l(|l| l.p999),
            l(|l| l.max),
            rss,
            cpu,
            db,
            batch,
            errors
        );
    }
    println!();
    for (k, v) in notes {
        println!("{k}: {v}");
    }
    println!();
    println!("{:<80} {:>12} {:>10}  met", "target", "measured", "goal");
    for t in targets {
        println!(
            "{:<80} {:>10.2}{:<2} {:>10}  {}",
            t.name,
            t.measured,
            t.unit,
            t.goal,
            if t.met { "yes" } else { "NO" }
        );
    }
}

/// The machine-readable document.
pub fn json(rows: &[Row], targets: &[Target], notes: &[(String, String)]) -> Value {
    json!({
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "measured": round(t.measured), "unit": t.unit, "goal": t.goal, "met": t.met,
        })).collect::<Vec<_>>(),
        "notes": notes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
    })
}
