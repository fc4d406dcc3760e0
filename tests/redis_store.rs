//! The `redis` store backend against a real `redis-server` this test starts:
//! records live in Redis, and a key prefix is leased to one node at a time.
//! (`.ci/run` also runs the shared end-to-end suites on Redis.)

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Harness, otp, test_config};
use smsgate::config::StoreBackend;
use smsgate::gateway::Gateway;
use smsgate_loadtest::sim::SimConfig;

const WAIT: Duration = Duration::from_secs(10);

/// A redis-server process on a free port, killed on drop.
struct RedisServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> Self {
        let port = common::process::free_port().port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian: apt-get install redis-server; .ci/run does it)");
        let url = format!("redis://127.0.0.1:{port}/");
        let server = Self {
            child,
            url,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An error with its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Points a config at `redis` under `prefix` as node `node`.
fn on_redis(c: &mut smsgate::config::Config, redis: &RedisServer, prefix: &str, node: &str) {
    c.store.backend = StoreBackend::Redis;
    c.store.redis.url = redis.url.clone();
    c.store.redis.prefix = prefix.into();
    c.store.redis.node = node.into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_leased_to_one_node_and_its_records_outlive_the_node() {
    let redis = RedisServer::start().await;
    let h = Harness::start_with(SimConfig::default(), 1, 16, |c| {
        on_redis(c, &redis, "lease", "a");
    })
    .await;
    let id = h.send_ok(otp("+447400100001", "Your code is 123456")).await;
    h.wait_status(&id, "delivered", WAIT).await;

    // Another node may not write under the prefix while "a" holds it.
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(h.sim.smpp_addr(), 1, 16, data.path());
    on_redis(&mut config, &redis, "lease", "b");
    let refused = Gateway::start(config.clone()).await;
    let error = refused.err().map(|e| chain(&e)).unwrap_or_default();
    assert!(error.contains("in use by node a"), "{error}");

    // Once "a" stops (and gives the lease up), "b" takes over and serves
    // what "a" stored: the records are in Redis, not in the node.
    let common::Harness { sim, gateway, .. } = h;
    gateway.shutdown().await;
    let b = Gateway::start(config)
        .await
        .expect("b starts after a stopped");
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/messages/{id}", b.http_addr()))
        .bearer_auth(common::KEY)
        .send()
        .await
        .expect("GET message");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["status"], "delivered", "{body}");
    b.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_wait_in_redis_through_a_restart_and_go_out_once() {
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let sim = smsgate_loadtest::sim::Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    sim.set_accepting(false);
    let mut config = test_config(sim.smpp_addr(), 1, 16, data.path());
    on_redis(&mut config, &redis, "restart", "a");
    // Nothing may be in a carrier's hands: every message waits in the store.
    let first = Gateway::start(config.clone())
        .await
        .expect("gateway starts");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let resp = http
            .post(format!("http://{}/v1/messages", first.http_addr()))
            .bearer_auth(common::KEY)
            .json(&otp(&format!("+4474001{i:05}"), &format!("code {i}")))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 202);
        let body: serde_json::Value = resp.json().await.expect("JSON");
        ids.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    first.shutdown().await;

    sim.set_accepting(true);
    let second = Gateway::start(config).await.expect("gateway restarts");
    let base = format!("http://{}", second.http_addr());
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    for id in &ids {
        loop {
            let body: serde_json::Value = http
                .get(format!("{base}/v1/messages/{id}"))
                .bearer_auth(common::KEY)
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("JSON");
            if body["status"] == "delivered" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut texts: Vec<String> = sim.submits().into_iter().map(|s| s.text).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(sim.submits().len(), 50, "each message submitted once");
    assert_eq!(texts.len(), 50);
    second.shutdown().await;
    sim.shutdown().await;
}

/// Most submits the simulator saw within any one second.
fn busiest_second(mut at: Vec<chrono::DateTime<chrono::Utc>>) -> usize {
    at.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= chrono::Duration::seconds(1) {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_tps_limit_holds_in_total_across_two_nodes() {
    const TPS: f64 = 100.0;
    const PER_NODE: usize = 250;
    let redis = RedisServer::start().await;
    let sim = smsgate_loadtest::sim::Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let http = reqwest::Client::new();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for node in ["n1", "n2"] {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(sim.smpp_addr(), 2, 16, data.path());
        on_redis(&mut config, &redis, node, node);
        config.carriers[0].tps = TPS;
        nodes.push(Gateway::start(config).await.expect("node starts"));
        dirs.push(data);
    }
    // Both nodes get their share of the traffic at once.
    let sends = nodes.iter().enumerate().flat_map(|(n, gw)| {
        let base = format!("http://{}", gw.http_addr());
        let http = http.clone();
        (0..PER_NODE).map(move |i| {
            let (base, http) = (base.clone(), http.clone());
            async move {
                let to = format!("+4474{n}{i:07}");
                let resp = http
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(common::KEY)
                    .json(&otp(&to, "Your code is 123456"))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(resp.status(), 202);
            }
        })
    });
    futures::future::join_all(sends).await;
    let total = 2 * PER_NODE;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sim.submits().len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {total} submitted",
            sim.submits().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busiest = busiest_second(sim.submits().iter().map(|s| s.at).collect());
    // Each node alone may send 100/s, so without the shared bucket the two
    // together reach ~200 in a second; with it, 100 plus the bucket's burst
    // and the tokens each node holds (a few), with slack for a noisy machine.
    assert!(
        busiest <= (TPS * 1.25) as usize,
        "{busiest} submits in one second against a shared limit of {TPS}/s"
    );
    assert!(
        busiest >= (TPS * 0.5) as usize,
        "{busiest}: the limit is used"
    );
    for gw in nodes {
        gw.shutdown().await;
    }
    sim.shutdown().await;
}
