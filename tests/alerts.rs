//! The operator's files, checked with the real tools: the alert rules (`promtool check` and
//! `promtool test`), the Prometheus Operator copy of them, the Grafana dashboard against a
//! real `/metrics`, and a real Prometheus scraping a real produto with a read replica until
//! the "replica lagging" and "database unreachable" alerts go pending.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use produto::pb::AdicionarUsuarioRequest;
use produto_testkit::{
    Backend, TestApp, TestDb, admin,
    cluster::{self, PgCluster},
    http::http_get,
    spawn_with, test_config,
};
use serde_yaml_ng::Value;
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const RULES: &str = "deploy/prometheus/produto-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/produto-rules.test.yaml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/produto.json";

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_file(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every rule of the rules file.
fn rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

// PromQL, as far as these files need it: the metric selectors of an expression.

/// One label matcher: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// A metric name with its label matchers, as written in an expression.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

impl Selector {
    /// The selector as PromQL.
    fn promql(&self) -> String {
        let matchers: Vec<String> = self
            .matchers
            .iter()
            .map(|m| format!("{}{}\"{}\"", m.label, m.op, m.value))
            .collect();
        format!("{}{{{}}}", self.name, matchers.join(","))
    }
}

/// Words that are PromQL syntax, not metric names, when not followed by `(`: operators and
/// the aggregations, which may come before their `by (...)`.
const KEYWORDS: [&str; 19] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Modifiers whose `(...)` holds label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric selectors in a PromQL expression (Grafana's `$variables` skipped). Strings,
/// range durations and label lists are stepped over; a word followed by `(` is a function.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' || c == '{' {
            let close = if c == '[' { ']' } else { '}' };
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let next_char = chars.get(next).copied();
            if LABEL_LISTS.contains(&word.as_str()) {
                if next_char == Some('(') {
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if next_char == Some('(') || KEYWORDS.contains(&word.to_lowercase().as_str()) {
                // A function or aggregation, or syntax.
            } else {
                let mut matchers = Vec::new();
                if next_char == Some('{') {
                    let (parsed, end) = parse_matchers(&chars, next + 1);
                    matchers = parsed;
                    i = end;
                }
                out.push(Selector {
                    name: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The index after the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The matchers from `start` (just inside `{`) and the index after the closing `}`.
fn parse_matchers(chars: &[char], start: usize) -> (Vec<Matcher>, usize) {
    let mut matchers = Vec::new();
    let mut i = start;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (matchers, i + 1);
        }
        let label_start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[label_start..i].iter().collect();
        while chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while "=!~".contains(chars[i]) {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while chars[i].is_whitespace() {
            i += 1;
        }
        let end = skip_string(chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect();
        i = end;
        assert!(
            !label.is_empty() && ["=", "!=", "=~", "!~"].contains(&op.as_str()),
            "cannot read the matcher {label}{op}{value}"
        );
        matchers.push(Matcher { label, op, value });
    }
}

#[test]
fn selectors_are_read_from_promql() {
    let expr = r#"sum by (job, le) (rate(a_bucket{job="produto", grpc_method=~"X|Y"}[5m]))
        / ignoring (code) group_left sum(b_total{x!="}"}) > 0.05 and on(instance) up
        or histogram_quantile(0.99, c{instance=~"$instance"}[$__rate_interval]) offset 5m"#;
    let found: Vec<String> = selectors(expr).iter().map(Selector::promql).collect();
    assert_eq!(
        found,
        [
            r#"a_bucket{job="produto",grpc_method=~"X|Y"}"#,
            r#"b_total{x!="}"}"#,
            "up{}",
            r#"c{instance=~"$instance"}"#
        ]
    );
}

// The rule files.

#[test]
fn the_prometheus_rule_holds_the_same_groups_as_the_rules_file() {
    let plain = yaml(RULES);
    let operator = yaml(PROMETHEUS_RULE);
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "{PROMETHEUS_RULE} and {RULES} differ: edit both"
    );
    // Like the ServiceMonitor, it needs the Operator's CRD: kept out of the kustomization.
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let resources = kustomization["resources"].as_sequence().unwrap();
    assert!(!resources.iter().any(|r| r == "prometheusrule.yaml"));
}

#[test]
fn every_alert_says_how_bad_what_and_where_to_look_and_has_tests() {
    let tests = yaml(RULE_TESTS);
    // For each alert: (cases where it fires, cases where it must stay quiet).
    let mut cases: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for group in tests["tests"].as_sequence().unwrap() {
        for case in group["alert_rule_test"].as_sequence().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    let rules = rules();
    assert!(rules.len() >= 9, "{} rules", rules.len());
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["critical", "warning"].contains(&severity), "{name}");
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {annotation}");
        }
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(description.contains("Check first"), "{name}: {description}");
        assert!(rule["for"].is_string(), "{name}: no `for`");
        let expr = rule["expr"].as_str().unwrap();
        for selector in selectors(expr) {
            let job = Matcher {
                label: "job".into(),
                op: "=".into(),
                value: "produto".into(),
            };
            assert!(
                selector.matchers.contains(&job),
                "{name}: {} lacks job=\"produto\"",
                selector.promql()
            );
        }
        let (fires, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(
            fires > 0 && quiet > 0,
            "{name}: {fires} firing and {quiet} quiet cases in {RULE_TESTS}"
        );
    }
}

/// `program` (promtool, prometheus), or None with a message where it is not installed.
fn installed(program: &'static str) -> Option<&'static str> {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIPPED: {program} is not installed (apt-get install prometheus; .ci/run does it)"
        );
    }
    found.then_some(program)
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(promtool) = installed("promtool") else {
        return;
    };
    for args in [
        ["check", "rules", RULES],
        ["check", "rules", PROMETHEUS_RULE],
        ["test", "rules", RULE_TESTS],
    ] {
        // `check rules` reads a PrometheusRule only through its groups: give it those.
        let output = if args[2] == PROMETHEUS_RULE {
            let dir = tempfile::tempdir().unwrap();
            let groups = serde_yaml_ng::to_string(&serde_yaml_ng::Mapping::from_iter([(
                "groups".into(),
                yaml(PROMETHEUS_RULE)["spec"]["groups"].clone(),
            )]))
            .unwrap();
            let path = dir.path().join("rules.yaml");
            std::fs::write(&path, groups).unwrap();
            std::process::Command::new(promtool)
                .args(&args[..2])
                .arg(&path)
                .output()
                .unwrap()
        } else {
            std::process::Command::new(promtool)
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap()
        };
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// A real server's metrics.

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server with the admin port on 127.0.0.1:0, ready.
async fn spawn_with_admin(mut config: produto::config::Settings, database: TestDb) -> TestApp {
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// A few calls of each kind, failures by the caller included.
async fn traffic(app: &TestApp) {
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    let again = app.add_user("maria", "senha-forte-1", 3).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = app
        .produto
        .clone()
        .adicionar_usuario(admin(AdicionarUsuarioRequest {
            usuario: String::new(),
            senha: "senha-forte-1".into(),
            nivel: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
    assert_eq!(
        app.login("maria", "senha-errada").await.unwrap(),
        (false, 0)
    );
    for _ in 0..3 {
        assert_eq!(app.nivel("maria").await.unwrap(), 3);
    }
    assert_eq!(
        app.nivel("ninguem").await.unwrap_err().code(),
        Code::NotFound
    );
    app.pool_status().await;
}

/// The names of the samples a real `/metrics` exposes.
async fn exported_names(app: &TestApp) -> BTreeSet<String> {
    let (status, body) = http_get(app.admin_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The PromQL expressions of the dashboard's panels, with the panel titles.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), target["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_name_only_metrics_produto_exports() {
    let database = TestDb::create(Backend::Postgres).await;
    let app = spawn_with_admin(test_config(&database.url), database).await;
    traffic(&app).await;
    let mut exported = exported_names(&app).await;
    // Prometheus's own series for every target.
    exported.insert("up".into());
    for name in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "produto_db_query_duration_seconds_bucket",
        "produto_db_up",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }

    let text = std::fs::read_to_string(repo_file(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap().to_owned();
        exprs.push((name, rule["expr"].as_str().unwrap().to_owned()));
    }
    for (title, expr) in &exprs {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{title}: no metric in {expr}");
        for selector in found {
            assert!(
                exported.contains(&selector.name),
                "{title}: {} is not a metric produto exports",
                selector.name
            );
        }
    }
    // What the dashboard must show.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for name in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "produto_db_pool_connections_in_use",
        "produto_db_pool_connections_idle",
        "produto_db_pool_requests_waiting",
        "produto_db_pool_acquire_wait_seconds_bucket",
        "produto_db_query_duration_seconds_bucket",
        "produto_logins_throttled_total",
    ] {
        assert!(all.contains(name), "the dashboard does not show {name}");
    }
}

// A real Prometheus.

/// A Prometheus of the test's own, killed when dropped.
struct Prometheus {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` as job `produto` every second, with the rules
    /// evaluated every second, and waits until it is ready.
    async fn start(program: &str, target: SocketAddr) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("produto-prometheus-")
            .tempdir()
            .unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: produto\n    static_configs:\n      - targets: ['{target}']\n",
            rules = repo_file(RULES).display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = tokio::process::Command::new(program)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if TcpStream::connect(addr).await.is_ok() && http_get(addr, "/-/ready").await.0 == 200 {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The `data` of an API answer.
    async fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{path}: {body}");
        answer["data"].clone()
    }

    /// The label sets of the series that match `selector`.
    async fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        let data = self
            .api(&format!("/api/v1/series?match[]={}", encode(selector)))
            .await;
        serde_json::from_value(data).unwrap()
    }

    /// The alerts named `name`, with their states.
    async fn alerts(&self, name: &str) -> Vec<serde_json::Value> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}

/// Why the series of `selector`'s metric (job `produto`) do not yet carry what the rule
/// expects: every label it matches on, and each value it asks for with `=`.
fn missing_labels(selector: &Selector, series: &[BTreeMap<String, String>]) -> Option<String> {
    if series.is_empty() {
        return Some(format!("no series {}{{job=\"produto\"}}", selector.name));
    }
    for m in &selector.matchers {
        let ok = series.iter().any(|s| match m.op.as_str() {
            "=" => s.get(&m.label) == Some(&m.value),
            _ => s.contains_key(&m.label),
        });
        if !ok {
            return Some(format!("{}: no series with {m:?}", selector.name));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_the_metrics_the_rules_use_and_the_database_going_down() {
    let Some(program) = installed("prometheus") else {
        return;
    };
    let started = Instant::now();
    let cluster = PgCluster::start();
    // A standby, so that the replicas' series (labelled role="replica") exist.
    let standby = PgCluster::standby_of(&cluster);
    let mut config = test_config(&cluster.url());
    config.db.replica_urls = vec![standby.url()];
    config.db.acquire_timeout = Duration::from_secs(1);
    config.db.query_timeout = Duration::from_secs(1);
    // The placeholder TestDb only owns a temp dir: the database is the cluster's.
    let app = spawn_with_admin(config, TestDb::create(Backend::Sqlite).await).await;
    let target = app.admin_addr.unwrap();
    let prometheus = Prometheus::start(program, target).await;
    traffic(&app).await;

    // Every metric the rules use, with the labels they match on.
    let mut wanted: Vec<Selector> = rules()
        .iter()
        .flat_map(|r| selectors(r["expr"].as_str().unwrap()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for selector in &wanted {
            let series = prometheus
                .series(&format!("{}{{job=\"produto\"}}", selector.name))
                .await;
            missing.extend(missing_labels(selector, &series));
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {missing:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let names: BTreeSet<&String> = wanted.iter().map(|s| &s.name).collect();
    for name in names {
        let series = prometheus
            .series(&format!("{name}{{job=\"produto\"}}"))
            .await;
        let labels: BTreeSet<&String> = series.iter().flat_map(|s| s.keys()).collect();
        eprintln!("seen: {name} ({} series) {labels:?}", series.len());
    }
    let up = prometheus.series("up{job=\"produto\"}").await;
    assert_eq!(up[0]["instance"], target.to_string());
    eprintln!(
        "Prometheus saw every metric the rules use after {:?}",
        started.elapsed()
    );
    assert!(
        prometheus
            .alerts("ProdutoDatabaseUnreachable")
            .await
            .is_empty()
    );

    // The standby stops replaying what it receives: its lag grows past the bound, it leaves
    // the rotation, and the alert (matching three series on job, instance and pool) goes
    // pending with the lag as its value.
    cluster::wait_for_replay(&cluster.url(), &standby.url()).await;
    assert!(prometheus.alerts("ProdutoReplicaLagging").await.is_empty());
    cluster::pause_replay(&standby.url()).await;
    app.add_user("unreplayed", "senha-forte-1", 1)
        .await
        .unwrap();
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(30);
    let lagging = loop {
        let alerts = prometheus.alerts("ProdutoReplicaLagging").await;
        if let Some(alert) = alerts.into_iter().find(|a| a["state"] == "pending") {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "ProdutoReplicaLagging never went pending\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(lagging["labels"]["role"], "replica");
    assert_eq!(lagging["labels"]["severity"], "warning");
    let lag: f64 = lagging["value"].as_str().unwrap().parse().unwrap();
    assert!(
        lag >= 1.0,
        "the alert's value is the lag, past the 1 s bound: {lag}"
    );
    eprintln!(
        "ProdutoReplicaLagging went pending {:?} after replay paused (lag {lag:.1} s)",
        paused.elapsed()
    );
    cluster::resume_replay(&standby.url()).await;

    // The primary goes away: writes fail UNAVAILABLE (reads go on from the standby) and
    // the alert goes pending.
    cluster.kill();
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(30);
    let alert = loop {
        let code = app
            .add_user("joana", "senha-forte-1", 1)
            .await
            .unwrap_err()
            .code();
        assert_eq!(code, Code::Unavailable);
        let alerts = prometheus.alerts("ProdutoDatabaseUnreachable").await;
        if let Some(alert) = alerts
            .into_iter()
            .find(|a| a["state"] == "pending" || a["state"] == "firing")
        {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "the alert never went pending\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(alert["labels"]["instance"], target.to_string());
    assert_eq!(alert["labels"]["severity"], "critical");
    eprintln!(
        "ProdutoDatabaseUnreachable went {} {:?} after the database stopped",
        alert["state"],
        stopped.elapsed()
    );

    // Now the failures exist too: every selector of the rules, as written, matches a series.
    let deadline = Instant::now() + Duration::from_secs(20);
    for selector in &wanted {
        loop {
            if !prometheus.series(&selector.promql()).await.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "no series {}", selector.promql());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let data = prometheus.api("/api/v1/alerts").await;
    for alert in data["alerts"].as_array().unwrap() {
        eprintln!("alert: {} {}", alert["labels"]["alertname"], alert["state"]);
    }
    eprintln!("the whole test took {:?}", started.elapsed());
}
