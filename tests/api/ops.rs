//! Operations: the admin HTTP port (metrics, health pages), JSON logs with request ids from
//! the real binary, migrations as a separate step, and the Kubernetes manifests.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use produto::{
    Config,
    pb::{ObterNivelRequest, ObterNivelResponse},
    rpc::health::{LIVENESS, READINESS_SERVICES},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestApp, TestDb, http::http_get, proxy, spawn_with, test_config};

/// A server with the admin port on 127.0.0.1:0, ready.
pub(crate) async fn spawn_with_admin(url: &str, database: TestDb) -> TestApp {
    let mut config = test_config(url);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// Every sample of a scrape, keyed by `name{labels}` as exposed.
pub(crate) async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let (status, body) = http_get(app.admin_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The value of the one series named `name` that has every label in `labels` (0 if none).
pub(crate) fn sample(scrape: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = scrape
        .iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {matching:?}");
    matching.first().copied().unwrap_or(0.0)
}

const PRODUTO: (&str, &str) = ("grpc_service", "produto.v1.ProdutoService");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_queries_and_pool_use() {
    let database = TestDb::create(Backend::Postgres).await;
    let url = database.url.clone();
    let app = spawn_with_admin(&url, database).await;
    let before = scrape(&app).await;

    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
    assert_eq!(
        app.login("maria", "senha-errada").await.unwrap(),
        (false, 0)
    );
    assert_eq!(app.nivel("maria").await.unwrap(), 3);
    assert_eq!(app.nivel("maria").await.unwrap(), 3);
    assert_eq!(
        app.nivel("ninguem").await.unwrap_err().code(),
        Code::NotFound
    );
    // A method the server does not have is counted, under `unknown`.
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let unknown = grpc
        .unary::<_, ObterNivelResponse, _>(
            Request::new(ObterNivelRequest::default()),
            "/produto.v1.ProdutoService/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);

    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let handled = "grpc_server_handled_total";
    for (method, code, n) in [
        ("AdicionarUsuario", "OK", 1.0),
        ("VerificarLogin", "OK", 2.0),
        ("ObterNivel", "OK", 2.0),
        ("ObterNivel", "NotFound", 1.0),
    ] {
        let labels = [PRODUTO, ("grpc_method", method), ("grpc_code", code)];
        assert_eq!(moved(handled, &labels), n, "{method} {code}");
    }
    let unknown = [("grpc_service", "unknown"), ("grpc_method", "unknown")];
    assert_eq!(moved(handled, &unknown), 1.0);
    assert_eq!(
        moved(
            "grpc_server_handling_seconds_count",
            &[PRODUTO, ("grpc_method", "ObterNivel")]
        ),
        3.0
    );

    // Statements: an insert and its audit entry; per login, right or wrong, two throttle
    // slots claimed (the caller's and the username's), a credential lookup and one
    // resolution of both slots; three level lookups. Thirteen in all, one acquire each.
    let queries = "produto_db_query_duration_seconds_count";
    assert_eq!(moved(queries, &[("query", "insert_user")]), 1.0);
    assert_eq!(moved(queries, &[("query", "audit_insert")]), 1.0);
    assert_eq!(moved(queries, &[("query", "claim_login_attempt")]), 4.0);
    assert_eq!(moved(queries, &[("query", "credentials")]), 2.0);
    assert_eq!(moved(queries, &[("query", "resolve_login_attempt")]), 2.0);
    assert_eq!(moved(queries, &[("query", "nivel")]), 3.0);
    assert_eq!(moved(queries, &[("query", "unnamed")]), 0.0);
    // The background tasks' statements may land in between: one acquire each.
    let background: f64 = produto_testkit::BACKGROUND_STATEMENTS
        .iter()
        .map(|q| moved(queries, &[("query", q)]))
        .sum();
    assert_eq!(
        moved("produto_db_pool_acquires_total", &[]),
        13.0 + background
    );
    assert_eq!(
        moved("produto_db_pool_acquire_wait_seconds_count", &[]),
        13.0 + background
    );
    assert_eq!(moved("produto_db_pool_acquire_timeouts_total", &[]), 0.0);

    // Gauges, read from the pool at scrape time.
    assert_eq!(
        sample(&after, "produto_db_pool_connections_in_use", &[]),
        0.0
    );
    assert_eq!(sample(&after, "produto_db_pool_connections_max", &[]), 20.0);
    assert_eq!(sample(&after, "produto_db_pool_connections_min", &[]), 1.0);
    assert!(sample(&after, "produto_db_pool_connections_open", &[]) >= 1.0);
    assert!(sample(&after, "produto_db_pool_connections_opened_total", &[]) >= 1.0);
    assert_eq!(sample(&after, "produto_db_up", &[]), 1.0);
    assert_eq!(sample(&after, "produto_ready", &[]), 1.0);
    assert!(sample(&after, "produto_db_probe_duration_seconds", &[]) > 0.0);
    let version = ("version", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&after, "produto_build_info", &[version]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_returned_to_the_caller() {
    let database = TestDb::create(Backend::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_with(test_config(&url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;

    let mut request = Request::new(ObterNivelRequest {
        usuario: "ninguem".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "chamada-42".parse().unwrap());
    let err = app.produto.clone().obter_nivel(request).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "chamada-42");

    let response = app
        .produto
        .clone()
        .verificar_login(produto::pb::VerificarLoginRequest {
            usuario: "ninguem".into(),
            senha: "qualquer".into(),
        })
        .await
        .unwrap();
    let generated = response.metadata().get("x-request-id").unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_page_answers_503_while_the_database_is_down() {
    let database = TestDb::create(Backend::Postgres).await;
    let proxy = proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let mut app = spawn_with_admin(&url, database).await;
    let admin = app.admin_addr.unwrap();

    // Idle: a connection goes back a moment after its use, so wait for that first.
    app.wait_for_idle_pool().await;
    let (status, body) = http_get(admin, "/health").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"]["healthy"], true);
    let pool = &health["database"]["pool"];
    assert_eq!(pool["status"], "active");
    assert_eq!(pool["min_connections"], 1);
    assert_eq!(pool["max_connections"], 20);
    assert!(pool["pool_size"].as_u64().unwrap() >= 1);
    assert_eq!(pool["used_connections"], 0);
    assert_eq!(http_get(admin, "/readyz").await.0, 200);

    proxy.down();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    let (status, body) = http_get(admin, "/health").await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["database"]["healthy"], false);
    assert_eq!(http_get(admin, "/readyz").await.0, 503);
    assert_eq!(http_get(admin, "/livez").await.0, 200);
    assert_eq!(sample(&scrape(&app).await, "produto_db_up", &[]), 0.0);

    proxy.up();
    app.wait_for_readiness(ServingStatus::Serving).await;
    let (status, body) = http_get(admin, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    assert_eq!(http_get(admin, "/nothing-here").await.0, 404);

    // The admin port stops with the server.
    app.stop().await;
    assert!(TcpStream::connect(admin).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrating_the_server_waits_for_the_schema() {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.no_migrate = true;
    let app = spawn_with(config, database).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.health_of("").await.unwrap(), ServingStatus::NotServing);
    assert!(!app.db.is_migrated());

    produto::app::migrate(test_config(&app.database.url))
        .await
        .unwrap();
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 2).await.unwrap();
    assert_eq!(app.nivel("maria").await.unwrap(), 2);
}

/// The real binary, from an empty directory with nothing but its environment.
fn server_command(dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_produto-server"));
    command
        .env_clear()
        .current_dir(dir)
        .env(
            "DATABASE_URL",
            format!("sqlite:{}", dir.join("produto.db").display()),
        )
        .env("PRODUTO_SHUTDOWN_DELAY", "0s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = server_command(dir.path())
        .arg("migrate")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let db = produto::db::Db::new(&produto::db::DbSettings::new(format!(
        "sqlite:{}",
        dir.path().join("produto.db").display()
    )))
    .unwrap();
    db.check_migrated().await.unwrap();
    assert!(db.is_migrated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "token-from-a-file-0123\n").unwrap();
    let mut child = server_command(dir.path())
        .env("PRODUTO_ADDR", "127.0.0.1:0")
        .env("PRODUTO_ADMIN_ADDR", "")
        .env("PRODUTO_LOG_FORMAT", "json")
        .env("PRODUTO_ADMIN_TOKEN_FILE", &token)
        .env("PRODUTO_ARGON2_M_KIB", "1024")
        .env("PRODUTO_ARGON2_T", "1")
        // Every statement is "slow": the slow-query line must name it, not its parameters.
        .env("PRODUTO_SLOW_QUERY_THRESHOLD", "0ms")
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines: Vec<serde_json::Value> = Vec::new();

    // The first line says where it listens.
    let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
        .await
        .expect("the server logs within 10 s")
        .unwrap()
        .expect("a first log line");
    let listening: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(listening["message"], "listening");
    assert_eq!(listening["admin_addr"], serde_json::Value::Null);
    let addr = listening["addr"].as_str().unwrap().to_owned();
    lines.push(listening);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().ok() == Some(&(ServingStatus::Serving as i32)) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut request = Request::new(produto::pb::AdicionarUsuarioRequest {
        usuario: "maria".into(),
        senha: "senha-forte-1".into(),
        nivel: 5,
    });
    request.metadata_mut().insert(
        "authorization",
        "Bearer token-from-a-file-0123".parse().unwrap(),
    );
    request
        .metadata_mut()
        .insert("x-request-id", "pedido-json-7".parse().unwrap());
    produto::pb::produto_service_client::ProdutoServiceClient::new(channel)
        .adicionar_usuario(request)
        .await
        .expect("the token read from the file is accepted");

    // SIGTERM: the server drains and exits; then its whole log is read.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    while let Some(line) = stderr.next_line().await.unwrap() {
        let value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines.push(value);
    }

    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
    }
    let of_the_call: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "pedido-json-7")
        .collect();
    let messages: Vec<&str> = of_the_call
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"user added"), "{lines:#?}");
    let slow = of_the_call
        .iter()
        .find(|l| l["message"] == "slow query")
        .unwrap_or_else(|| panic!("no slow-query line: {lines:#?}"));
    assert_eq!(slow["query"], "insert_user");
    assert!(slow["duration_ms"].as_f64().is_some());
    let rpc = of_the_call
        .iter()
        .find(|l| l["message"] == "rpc")
        .unwrap_or_else(|| panic!("no rpc line: {lines:#?}"));
    assert_eq!(
        rpc["span"]["method"],
        "/produto.v1.ProdutoService/AdicionarUsuario"
    );
    assert_eq!(rpc["code"], "Ok");
    // Caller authentication is off and the call named no caller.
    assert_eq!(rpc["span"]["caller"], "anonymous");
    assert!(rpc["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(
        rpc["span"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        !lines.iter().any(|l| {
            let l = l.to_string();
            l.contains("senha-forte-1") || l.contains("argon2id") || l.contains("token-from")
        }),
        "a password, hash or token reached the log"
    );
}

// The Kubernetes manifests, checked against the server's own defaults.

fn manifests() -> Vec<serde_yaml_ng::Value> {
    manifests_in("deploy/kubernetes")
}

/// The manifests of one directory (not its subdirectories), one document per file.
fn manifests_in(dir: &str) -> Vec<serde_yaml_ng::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // One document per file.
            let text = std::fs::read_to_string(&path).unwrap();
            let doc = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.push(doc);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> &'a serde_yaml_ng::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} manifest"))
}

#[test]
fn the_kubernetes_manifests_match_the_server() {
    use clap::{CommandFactory, Parser};
    let docs = manifests();
    let defaults = Config::parse_from(["produto-server"]);
    let grpc_port = u64::from(defaults.addr.port());
    let admin_port = u64::from(defaults.admin_addr.unwrap().port());
    let known_env: Vec<String> = Config::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .chain(["RUST_LOG".to_owned()])
        .collect();

    // kustomization lists files that exist.
    let kustomization = of_kind(&docs, "Kustomization");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        assert!(
            dir.join(resource.as_str().unwrap()).exists(),
            "{resource:?}"
        );
    }

    let deployment = of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let probe = |name: &str| &container[name]["grpc"];
    assert_eq!(probe("livenessProbe")["port"].as_u64(), Some(grpc_port));
    assert_eq!(probe("livenessProbe")["service"], LIVENESS);
    assert_eq!(probe("startupProbe")["port"].as_u64(), Some(grpc_port));
    assert_eq!(probe("readinessProbe")["port"].as_u64(), Some(grpc_port));
    let readiness = probe("readinessProbe")["service"].as_str().unwrap();
    assert!(READINESS_SERVICES.contains(&readiness));
    assert_eq!(readiness, "");

    let ports = container["ports"].as_sequence().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    assert_eq!(port("grpc"), Some(grpc_port));
    assert_eq!(port("http-metrics"), Some(admin_port));
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );

    // The kubelet waits for the preStop pause, the drain and the pool's close.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let env_value = |name: &str| {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["value"].as_str())
            .unwrap_or_else(|| panic!("{name} not set"))
            .to_owned()
    };
    let delay = humantime::parse_duration(&env_value("PRODUTO_SHUTDOWN_DELAY")).unwrap();
    let drain = humantime::parse_duration(&env_value("PRODUTO_DRAIN_TIMEOUT")).unwrap();
    assert!(
        grace > pause + delay.as_secs() + drain.as_secs() + 5,
        "grace {grace}s"
    );
    // Callers must name themselves in the cluster.
    assert_eq!(env_value("PRODUTO_CALLER_AUTH"), "true");
    for what in ["requests", "limits"] {
        assert!(container["resources"][what]["memory"].is_string(), "{what}");
    }

    // Every variable set is one the server reads; secrets come as files.
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"][0], "migrate");
    assert_eq!(container["args"][0], "--no-migrate");
    for c in [container, init] {
        for var in c["env"].as_sequence().unwrap() {
            let name = var["name"].as_str().unwrap();
            assert!(
                known_env.iter().any(|k| k == name),
                "unknown variable {name}"
            );
        }
    }
    // The non-root user reads the mounted Secret through its group.
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert!(security["fsGroup"].is_u64());
    assert_eq!(security["fsGroup"], security["runAsGroup"]);
    let secret = of_kind(&docs, "Secret");
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    for var in [
        "DATABASE_URL_FILE",
        "PRODUTO_ADMIN_TOKEN_FILE",
        "PRODUTO_CALLER_TOKENS_FILE",
    ] {
        let path = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == var)
            .and_then(|v| v["value"].as_str())
            .unwrap_or_else(|| panic!("{var} not set"));
        let key = path.strip_prefix(&format!("{mount}/")).unwrap();
        assert!(
            secret["stringData"][key].is_string(),
            "{key} not in the Secret"
        );
    }

    let service = named(&docs, "Service", "produto");
    let service_ports = service["spec"]["ports"].as_sequence().unwrap();
    for (name, number) in [("grpc", grpc_port), ("http-metrics", admin_port)] {
        let p = service_ports.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(p["port"].as_u64(), Some(number), "{name}");
        assert_eq!(p["targetPort"], name);
    }
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(&service["spec"]["selector"], selector);
    assert_eq!(
        &of_kind(&docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        selector
    );
    assert_eq!(
        of_kind(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "http-metrics"
    );

    // The headless Service: every ready pod's address, for balancing clients.
    let headless = named(&docs, "Service", "produto-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], false);
    assert_eq!(&headless["spec"]["selector"], selector);
    let grpc = &headless["spec"]["ports"][0];
    assert_eq!(grpc["port"].as_u64(), Some(grpc_port));
    assert_eq!(grpc["targetPort"], "grpc");

    // Pods spread over nodes.
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&anti["labelSelector"]["matchLabels"], selector);

    // The autoscaler owns the replica count, within the connection budget: every pod at
    // once (surge included) with a full pool and its probe fits in PostgreSQL's default
    // max_connections (100) less the superuser-reserved 3 and 10 kept for other clients.
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns replicas"
    );
    let min = hpa["spec"]["minReplicas"].as_u64().unwrap();
    let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
    assert!(min >= 2 && max >= min, "{min}..{max}");
    let surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        .as_u64()
        .unwrap();
    let pool: u64 = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "PRODUTO_MAX_CONNECTIONS")
        .and_then(|v| v["value"].as_str())
        .expect("PRODUTO_MAX_CONNECTIONS set in the Deployment")
        .parse()
        .unwrap();
    assert!(
        (max + surge) * (pool + 1) <= 100 - 3 - 10,
        "({max} + {surge}) × ({pool} + 1) over the budget"
    );
}

fn named<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str, name: &str) -> &'a serde_yaml_ng::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

#[test]
fn the_bot_manifests_match_the_bot() {
    use clap::{CommandFactory, Parser};
    use produto_bot::BotConfig;
    let docs = manifests_in("deploy/kubernetes/bot");
    let defaults = BotConfig::parse_from(["produto-bot"]);
    let admin_port = u64::from(
        defaults
            .admin_addr
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .port(),
    );
    let known_env: Vec<String> = BotConfig::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .chain(["RUST_LOG".to_owned()])
        .collect();

    let kustomization = of_kind(&docs, "Kustomization");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/bot");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        assert!(
            dir.join(resource.as_str().unwrap()).exists(),
            "{resource:?}"
        );
    }

    let deployment = of_kind(&docs, "Deployment");
    // One poller per token: never two pods at once.
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let http = &container[probe]["httpGet"];
        assert_eq!(http["port"].as_u64(), Some(admin_port), "{probe}");
        assert_eq!(http["path"], path, "{probe}");
    }
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(admin_port)
    );
    let env = container["env"].as_sequence().unwrap();
    for var in env {
        let name = var["name"].as_str().unwrap();
        assert!(
            known_env.iter().any(|k| k == name),
            "unknown variable {name}"
        );
    }
    // The token comes from the Secret, as a file.
    assert!(
        env.iter()
            .all(|v| v["name"] != "PRODUTO_BOT_TELEGRAM_TOKEN")
    );
    let secret = of_kind(&docs, "Secret");
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let path = env
        .iter()
        .find(|v| v["name"] == "PRODUTO_BOT_TELEGRAM_TOKEN_FILE")
        .and_then(|v| v["value"].as_str())
        .expect("PRODUTO_BOT_TELEGRAM_TOKEN_FILE set");
    let key = path.strip_prefix(&format!("{mount}/")).unwrap();
    assert!(
        secret["stringData"][key].is_string(),
        "{key} not in the Secret"
    );
    // The bot names itself with a caller token from its Secret, and holds no admin token.
    assert!(env.iter().all(|v| v["name"] != "PRODUTO_ADMIN_TOKEN"));
    let token_path = env
        .iter()
        .find(|v| v["name"] == "PRODUTO_TOKEN_FILE")
        .and_then(|v| v["value"].as_str())
        .expect("PRODUTO_TOKEN_FILE set");
    let key = token_path.strip_prefix(&format!("{mount}/")).unwrap();
    let caller_token = secret["stringData"][key]
        .as_str()
        .expect("the caller token");
    // ... and the server's caller tokens name it with the same token.
    let server_docs = manifests();
    let server_secret = of_kind(&server_docs, "Secret");
    let callers = server_secret["stringData"]["caller-tokens"]
        .as_str()
        .unwrap();
    assert!(
        callers
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(caller_token)),
        "the server's caller-tokens lack the bot's token"
    );
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["fsGroup"], security["runAsGroup"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_logins_are_counted_in_the_metrics() {
    let database = TestDb::create(Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.throttle.max_failures = 2;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-forte-1", 1).await.unwrap();
    let before = scrape(&app).await;
    for _ in 0..5 {
        assert_eq!(app.login("maria", "errada").await.unwrap(), (false, 0));
    }
    let after = scrape(&app).await;
    let delta = |name| sample(&after, name, &[]) - sample(&before, name, &[]);
    // Two attempts are allowed (and verified); the next three are refused unchecked.
    assert_eq!(delta("produto_logins_throttled_total"), 3.0);
    assert_eq!(delta("produto_password_verifications_total"), 2.0);
}

/// One call of `path` (any path: the server may not serve it) with an ObterNivel request;
/// its gRPC code.
pub(crate) async fn call_path(
    channel: tonic::transport::Channel,
    path: &str,
    metadata: &[(&'static str, &str)],
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Code::Unavailable;
    }
    let mut request = Request::new(ObterNivelRequest {
        usuario: "maria".into(),
    });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    let answer = grpc
        .unary::<_, ObterNivelResponse, _>(
            request,
            path.parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    answer.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// The `grpc_method` label values of a scrape's RPC series.
pub(crate) fn rpc_method_labels(
    scrape: &HashMap<String, f64>,
) -> std::collections::BTreeSet<String> {
    scrape
        .keys()
        .filter(|s| s.starts_with("grpc_server_") || s.starts_with("produto_rpc_caller"))
        .filter_map(|s| s.split("grpc_method=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paths_cannot_grow_the_metrics_whatever_their_code() {
    let database = TestDb::create(Backend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    // One call at a time, and logins slow enough to hold that slot while the paths are
    // tried: some random calls are shed (RESOURCE_EXHAUSTED) before any routing.
    config.limits.max_concurrent_calls = 1;
    config.hashing = config.hashing.clone().with_costs(32 * 1024, 4, 1).unwrap();
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;

    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for round in 0..20 {
        let login = {
            let app_client = app.produto.clone();
            tokio::spawn(async move {
                let mut client = app_client;
                client
                    .verificar_login(produto::pb::VerificarLoginRequest {
                        usuario: "ninguem".into(),
                        senha: "x".into(),
                    })
                    .await
            })
        };
        for i in 0..20 {
            let path = format!("/r{round}.S{i}/M{}", round * 20 + i);
            let code = call_path(app.channel.clone(), &path, &[]).await;
            *codes.entry(format!("{code:?}")).or_default() += 1;
        }
        let _ = login.await;
        if codes.contains_key("ResourceExhausted") && round >= 4 {
            break;
        }
    }
    assert!(
        codes.contains_key("ResourceExhausted"),
        "no call was shed: {codes:?}"
    );
    let scrape = scrape(&app).await;
    let methods = rpc_method_labels(&scrape);
    let allowed: Vec<&str> = produto::ops::rpc_metrics::KNOWN_METHODS
        .iter()
        .map(|(_, m)| *m)
        .chain(["unknown"])
        .collect();
    assert!(
        methods.iter().all(|m| allowed.contains(&m.as_str())),
        "{methods:?} (codes {codes:?})"
    );
    let series = scrape
        .keys()
        .filter(|s| s.starts_with("grpc_server_handled_total"))
        .count();
    assert!(series <= 8, "{series} series after {codes:?}");
}

/// A client whose connection breaks while its request is being read is CANCELLED in the
/// metrics and logs (tonic says UNKNOWN, an error worth paging for: it is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_a_broken_connection_counts_as_cancelled() {
    let database = TestDb::create(Backend::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_with_admin(&url, database).await;
    let labels = |code| [PRODUTO, ("grpc_method", "ObterNivel"), ("grpc_code", code)];

    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/produto.v1.ProdutoService/ObterNivel",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (_response, mut body) = client.send_request(request, false).unwrap();
    // A gRPC frame that announces 100 bytes and sends 3 of them.
    body.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 10, 1, b'a']),
        false,
    )
    .unwrap();
    // The server answers a ping after the frames sent before it: the call has begun.
    ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    driver.abort();
    drop((client, body));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = scrape(&app).await;
        if sample(&now, "grpc_server_handled_total", &labels("Canceled")) == 1.0 {
            assert_eq!(
                sample(&now, "grpc_server_handled_total", &labels("Unknown")),
                0.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CANCELLED call counted within 30 s: {:?}",
            now.iter()
                .filter(|(k, _)| k.contains("ObterNivel") && k.starts_with("grpc_server_handled"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
