//! The real `produto-server` binary as a child process, for the tests that signal it or
//! measure it from outside (SIGTERM under load, the soak).

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use tonic::transport::{Channel, Endpoint};

pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub channel: Channel,
    #[allow(
        dead_code,
        reason = "not every test binary addresses its servers by address"
    )]
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
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_produto-server"))
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
    #[allow(dead_code, reason = "not every test binary kills its servers")]
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
