//! Test harness: a real gateway (HTTP on 127.0.0.1) bound over real SMPP to a
//! real simulator, both in this process.

#![allow(dead_code)]

pub mod process;

use std::time::Duration;

use serde_json::{Value, json};
use smsgate::{Config, Gateway};
use smsgate_loadtest::sim::{SimConfig, Simulator};

/// The API key of the test account.
pub const KEY: &str = "test-key";

/// A gateway wired to a simulator.
pub struct Harness {
    pub data: tempfile::TempDir,
    pub sim: Simulator,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    pub base: String,
}

/// Gateway config for tests: one account, one carrier at `smpp`, fast
/// reconnects, the durable store in `data`.
pub fn test_config(
    smpp: std::net::SocketAddr,
    binds: u32,
    window: u32,
    data: &std::path::Path,
) -> Config {
    Config::parse(&config_text(smpp, binds, window, data)).expect("test config is valid")
}

/// The TOML of [`test_config`] (the crash tests write it to a file).
pub fn config_text(
    smpp: std::net::SocketAddr,
    binds: u32,
    window: u32,
    data: &std::path::Path,
) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:0"
max_body_bytes = 65536

{store}

[compliance]
countries = "{countries}"

[shutdown]
grace_s = 2

[[accounts]]
id = "test"
api_key = "{KEY}"
admin = true
senders = ["ACME"]

[[accounts]]
id = "other"
api_key = "other-key"

[[carriers]]
name = "sim"
url = "smpp://{smpp}"
system_id = "smsgate"
password = "secret"
binds = {binds}
window = {window}
enquire_link_s = 5
response_timeout_s = 5
reconnect_min_ms = 50
reconnect_max_ms = 500
"#,
        store = store_section(data),
        countries = concat!(env!("CARGO_MANIFEST_DIR"), "/config/countries.toml"),
    )
}

/// Environment variable naming a Redis server (`redis://127.0.0.1:6390/`):
/// when set, every test gateway keeps its store there instead of in `data`
/// (`.ci/run` runs the shared suites once on each backend).
pub const REDIS_ENV: &str = "SMSGATE_TEST_REDIS";

/// The `[store]` section: the embedded store in `data`, or Redis under a key
/// prefix of its own for each data directory (so tests sharing one server
/// never see each other's keys, and a restart with the same `data` finds its
/// records again).
fn store_section(data: &std::path::Path) -> String {
    match std::env::var(REDIS_ENV) {
        Ok(url) if !url.is_empty() => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            format!(
                "[store]\npath = \"{data}\"\nbackend = \"redis\"\n\n[store.redis]\nurl = \"{url}\"\nprefix = \"test-{:016x}\"\nnode = \"test\"\n",
                h.finish(),
                data = data.display(),
            )
        }
        _ => format!("[store]\npath = \"{}\"\n", data.display()),
    }
}

impl Harness {
    /// Starts a simulator with `sim` settings and a gateway bound to it.
    pub async fn start(sim: SimConfig) -> Self {
        Self::start_with(sim, 2, 16, |_| {}).await
    }

    /// Like [`Harness::start`], with bind count, window and a config tweak.
    pub async fn start_with(
        sim: SimConfig,
        binds: u32,
        window: u32,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let sim = Simulator::start(sim).await.expect("simulator starts");
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(sim.smpp_addr(), binds, window, data.path());
        tweak(&mut config);
        let gateway = Gateway::start(config).await.expect("gateway starts");
        let base = format!("http://{}", gateway.http_addr());
        let http = reqwest::Client::new();
        let h = Self {
            data,
            sim,
            gateway,
            http,
            base,
        };
        h.wait_until(Duration::from_secs(10), || async {
            h.gateway.binds_up() > 0
        })
        .await;
        h
    }

    /// POST /v1/messages with the test key; returns (status, body).
    pub async fn send(&self, body: Value) -> (u16, Value) {
        self.post_as(KEY, "/v1/messages", body.to_string()).await
    }

    /// POST a raw body to `path` with `key`.
    pub async fn post_as(&self, key: &str, path: &str, body: String) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// GET /v1/messages/{id} with `key`.
    pub async fn get_as(&self, key: &str, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/messages/{id}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The message as the test account sees it.
    pub async fn message(&self, id: &str) -> Value {
        let (status, body) = self.get_as(KEY, id).await;
        assert_eq!(status, 200, "GET {id}: {body}");
        body
    }

    /// Sends one message and returns its id, asserting a 202.
    pub async fn send_ok(&self, body: Value) -> String {
        let (status, resp) = self.send(body.clone()).await;
        assert_eq!(status, 202, "send {body} → {resp}");
        resp["id"].as_str().expect("id in 202").to_owned()
    }

    /// Polls until the message reaches `status` (panics after `timeout`).
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = self.message(id).await;
            if m["status"] == status {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("message {id} did not reach {status} within {timeout:?}: {m}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `cond` every 20 ms until true (panics after `timeout`).
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while !cond().await {
            if tokio::time::Instant::now() > deadline {
                panic!("condition not met within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET /metrics as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Stops the gateway and the simulator.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// A minimal valid message body.
pub fn otp(to: &str, text: &str) -> Value {
    json!({ "to": to, "from": "ACME", "text": text, "kind": "otp" })
}

/// Sum of a Prometheus counter's samples whose line contains every `needle`.
pub fn metric_sum(metrics: &str, name: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
