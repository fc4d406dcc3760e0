//! The gateway as a child process (`smsgate serve`), for crash and restart tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `smsgate serve` child process.
pub struct GatewayProcess {
    child: Child,
    config: PathBuf,
    pub http: SocketAddr,
    pub base: String,
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

impl GatewayProcess {
    /// Writes `config_text` next to the data and starts the gateway on `http`;
    /// returns once `/healthz` answers.
    pub async fn start(config_text: &str, dir: &Path, http: SocketAddr) -> Self {
        let config = dir.join("smsgate.toml");
        std::fs::write(&config, config_text).expect("write config");
        Self::spawn(config, http).await
    }

    async fn spawn(config: PathBuf, http: SocketAddr) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--http", &http.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(
                log.try_clone()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .stderr(log)
            .spawn()
            .expect("start smsgate");
        let p = Self {
            child,
            config,
            http,
            base: format!("http://{http}"),
        };
        p.wait_healthy().await;
        p
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "smsgate did not become healthy; see {}",
            self.config.with_extension("log").display()
        );
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Starts the same config again on the same port (after a kill or stop).
    pub async fn restart(&mut self) {
        let next = Self::spawn(self.config.clone(), self.http).await;
        *self = next;
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
