//! The workspace's binaries as child processes: the real `produto-server`, for the tests that
//! signal it or measure it from outside (SIGTERM under load, the soak), and the `produto-bot`
//! binary for the tests that drive it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use tonic::transport::{Channel, Endpoint};

pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub channel: Channel,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on a free loopback port with only `env` set (the admin HTTP port
    /// off, so that such servers never collide on its default port), and connects to it.
    pub async fn spawn(env: &[(&str, &str)]) -> ServerProcess {
        Self::spawn_logging_to(env, None).await
    }

    /// As [`ServerProcess::spawn`], with the server's output (its log) written to `log`.
    pub async fn spawn_logging_to(env: &[(&str, &str)], log: Option<&Path>) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::spawn_at(port, env, log).await
    }

    /// As [`ServerProcess::spawn_logging_to`], on `127.0.0.1:port` (an instance started
    /// again where it was).
    pub async fn spawn_at(port: u16, env: &[(&str, &str)], log: Option<&Path>) -> ServerProcess {
        let output = || match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::inherit(),
        };
        let child = tokio::process::Command::new(server_binary())
            .env_clear()
            .env("PRODUTO_ADDR", format!("127.0.0.1:{port}"))
            .env("PRODUTO_ADMIN_ADDR", "")
            // Stop at once on SIGTERM: these tests time the drain, not the delay before it.
            .env("PRODUTO_SHUTDOWN_DELAY", "0s")
            .envs(env.iter().copied())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let channel = loop {
            match Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => break channel,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        ServerProcess {
            child,
            channel,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL: the process dies mid-call, as a crashed or evicted pod does.
    pub fn sigkill(&self) {
        self.signal("-KILL");
    }

    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} failed");
    }
}

/// The `produto-server` binary of the build the calling test belongs to. Cargo builds a
/// package's binaries before its integration tests and benches, beside their `deps/`
/// directory; `CARGO_BIN_EXE_*` would name it too, but only to code compiled as the test
/// itself, not to this library.
pub fn server_binary() -> PathBuf {
    let server = profile_dir().join(format!("produto-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        server.is_file(),
        "{} is missing: run the test through cargo, which builds it",
        server.display()
    );
    server
}

/// The `produto-bot` binary, built (once per test binary) if it is missing or stale. It
/// belongs to the bot's crate, and cargo hands a test only its own package's binaries
/// (`CARGO_BIN_EXE_*`): so the test asks cargo for the bot crate's own test (`--test cli`,
/// which needs the binary), in the profile this test was built in. A plain `cargo test` has
/// built it already (the same features: nothing to rebuild).
pub fn bot_binary() -> &'static Path {
    static BOT: OnceLock<PathBuf> = OnceLock::new();
    BOT.get_or_init(|| {
        let profile_dir = profile_dir();
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args(["test", "--quiet", "--no-run", "--test", "cli"])
            .current_dir(workspace_root());
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo for produto-bot");
        assert!(
            status.success(),
            "cargo test --no-run --test cli (produto-bot) failed"
        );
        let bot = profile_dir.join(format!("produto-bot{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bot.is_file(),
            "{} is missing after the build",
            bot.display()
        );
        bot
    })
}

/// `target/<profile>`, from the running test or bench binary's `target/<profile>/deps/<name>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The workspace's root directory, where cargo is run for the bot's binary.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
