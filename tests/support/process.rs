//! The real `produto-server` binary as a child process, for the tests that signal it or
//! measure it from outside (SIGTERM under load, the soak).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub channel: Channel,
}

impl ServerProcess {
    /// Starts the binary on a free loopback port with only `env` set (the admin HTTP port
    /// off, so that such servers never collide on its default port), and connects to it.
    pub async fn spawn(env: &[(&str, &str)]) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_produto-server"))
            .env_clear()
            .env("PRODUTO_ADDR", format!("127.0.0.1:{port}"))
            .env("PRODUTO_ADMIN_ADDR", "")
            // Stop at once on SIGTERM: these tests time the drain, not the delay before it.
            .env("PRODUTO_SHUTDOWN_DELAY", "0s")
            .envs(env.iter().copied())
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
        ServerProcess { child, channel }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn sigterm(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
    }
}
