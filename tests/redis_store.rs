//! The `redis` store backend against a real `redis-server` this test starts:
//! records live in Redis, and a key prefix is leased to one node at a time.
//! (`.ci/run` also runs the shared end-to-end suites on Redis.)

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{otp, test_config};
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

/// Points a config at `redis` under `prefix` as node `node`.
fn on_redis(c: &mut smsgate::config::Config, redis: &RedisServer, prefix: &str, node: &str) {
    c.store.backend = StoreBackend::Redis;
    c.store.redis.url = redis.url.clone();
    c.store.redis.prefix = prefix.into();
    c.store.redis.node = node.into();
}

/// A transactional message body.
fn notice(to: &str, text: &str) -> serde_json::Value {
    serde_json::json!({ "to": to, "from": "ACME", "text": text, "kind": "transactional" })
}

/// POST `body` to `base` + `path` with the test key: (status, body); status
/// 0 when the node did not answer.
async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http
        .post(format!("{base}{path}"))
        .bearer_auth(common::KEY)
        .json(body);
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    // A node killed mid-request: no answer (status 0), the client retries elsewhere.
    let Ok(resp) = req.send().await else {
        return (0, serde_json::Value::Null);
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// GET a message from `base`: its JSON (Null when not found).
async fn get_message(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    match http
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(common::KEY)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_messages_idempotency_keys_and_opt_outs() {
    let redis = RedisServer::start().await;
    let sim = smsgate_loadtest::sim::Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for node in ["a", "b"] {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(sim.smpp_addr(), 1, 16, data.path());
        on_redis(&mut config, &redis, "shared", node);
        // "other" may send 3 at once, then one every 10 s: across both nodes.
        config.accounts[1].limits.messages_per_s = 0.1;
        config.accounts[1].limits.burst = 3;
        nodes.push(Gateway::start(config).await.expect("node starts"));
        dirs.push(data);
    }
    let http = reqwest::Client::new();
    let a = format!("http://{}", nodes[0].http_addr());
    let b = format!("http://{}", nodes[1].http_addr());

    // A message accepted by a is visible at b (and its receipt, which the
    // SMSC may hand to either node's bind, settles it).
    let (status, body) = post(
        &http,
        &a,
        "/v1/messages",
        &notice("+447400100001", "one"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    while get_message(&http, &b, &id).await["status"] != "delivered" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered as seen from b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An idempotency key used at a and then at b sends once.
    let body = notice("+447400100002", "two");
    let (s1, first) = post(&http, &a, "/v1/messages", &body, Some("key-1")).await;
    let (s2, second) = post(&http, &b, "/v1/messages", &body, Some("key-1")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], second["id"], "the same answer from both nodes");

    // The same key at both nodes at the same moment: still one message.
    let body = notice("+447400100004", "four");
    let (r1, r2) = tokio::join!(
        post(&http, &a, "/v1/messages", &body, Some("key-2")),
        post(&http, &b, "/v1/messages", &body, Some("key-2")),
    );
    assert_eq!((r1.0, r2.0), (202, 202), "{r1:?} {r2:?}");
    assert_eq!(r1.1["id"], r2.1["id"], "one message for one key");

    // An opt-out taken at a holds at b at once.
    let resp = http
        .put(format!("{a}/v1/opt-outs/+447400100003"))
        .bearer_auth(common::KEY)
        .send()
        .await
        .expect("PUT opt-out");
    assert!(resp.status().is_success(), "{}", resp.status());
    let (status, refused) = post(
        &http,
        &b,
        "/v1/messages",
        &notice("+447400100003", "three"),
        None,
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "opted_out", "{refused}");

    // An account's rate holds across the nodes: 3 at a use up the burst b
    // would otherwise allow on its own.
    let mut answers = Vec::new();
    for (i, base) in [&a, &a, &a, &b].into_iter().enumerate() {
        let resp = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth("other-key")
            // "ACME" is the test account's own sender; "other" lists none.
            .json(&serde_json::json!({
                "to": format!("+44740010010{i}"),
                "from": "OTHER",
                "text": "limited",
                "kind": "transactional"
            }))
            .send()
            .await
            .expect("POST");
        answers.push(resp.status().as_u16());
    }
    assert_eq!(answers, [202, 202, 202, 429]);

    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.submits().iter().filter(|s| s.text == "two").count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the keyed message was not sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts: Vec<String> = sim.submits().into_iter().map(|s| s.text).collect();
    assert_eq!(texts.iter().filter(|t| *t == "two").count(), 1, "{texts:?}");
    assert!(
        texts.iter().filter(|t| *t == "four").count() <= 1,
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t == "three"));
    for gw in nodes {
        gw.shutdown().await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_node_loses_nothing_the_other_node_finishes_its_work() {
    use common::process::{GatewayProcess, free_port};
    use futures::StreamExt;

    const TOTAL: usize = 10_000;
    const KILL_AFTER: usize = 4_000;
    let redis = RedisServer::start().await;
    let sim = smsgate_loadtest::sim::Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for node in ["a", "b"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("store");
        let embedded = format!("[store]\npath = \"{}\"\n", data.display());
        let text = common::config_text(sim.smpp_addr(), 2, 16, &data);
        assert!(
            text.contains(&embedded),
            "run without {}",
            common::REDIS_ENV
        );
        let text = text.replace(
            &embedded,
            &format!(
                "[store]\nbackend = \"redis\"\n\n[store.redis]\nurl = \"{}\"\nprefix = \"crash\"\nnode = \"{node}\"\nlease_ms = 3000\n",
                redis.url
            ),
        );
        nodes.push(GatewayProcess::start(&text, dir.path(), free_port()).await);
        dirs.push(dir);
    }
    let (a, b) = (nodes[0].base.clone(), nodes[1].base.clone());
    let http = reqwest::Client::new();

    // Every other message goes to a; once a is gone, the client retries at b.
    let mut accepted: Vec<(String, String)> = Vec::with_capacity(TOTAL);
    let mut sends = futures::stream::iter(0..TOTAL)
        .map(|i| {
            let (http, a, b) = (http.clone(), a.clone(), b.clone());
            async move {
                let text = format!("m{i}");
                let body = notice(&format!("+4474{:08}", i), &text);
                let first = if i % 2 == 0 { &a } else { &b };
                for base in [first, &b] {
                    let (status, answer) = post(&http, base, "/v1/messages", &body, None).await;
                    if status == 202 {
                        return Some((answer["id"].as_str().unwrap_or_default().to_owned(), text));
                    }
                }
                None
            }
        })
        .buffer_unordered(64);
    let mut killed = false;
    while let Some(done) = sends.next().await {
        accepted.extend(done);
        if !killed && accepted.len() >= KILL_AFTER {
            nodes[0].kill9();
            killed = true;
        }
    }
    drop(sends);
    assert!(killed);
    assert_eq!(accepted.len(), TOTAL, "b takes what a cannot");

    // b adopts a's work once a's lease runs out; every accepted message ends
    // in a final status, as b reports it.
    let mut pending: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let statuses: Vec<serde_json::Value> = futures::stream::iter(&pending)
            .map(|id| get_message(&http, &b, id))
            .buffered(32)
            .collect()
            .await;
        let before = pending.len();
        pending = pending
            .into_iter()
            .zip(statuses)
            .filter(|(_, m)| {
                !matches!(
                    m["status"].as_str(),
                    Some("delivered" | "undeliverable" | "expired" | "failed")
                )
            })
            .map(|(id, _)| id)
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {TOTAL} not final (was {before})",
            pending.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let sent: std::collections::HashSet<String> =
        sim.submits().into_iter().map(|s| s.text).collect();
    let missing: Vec<&String> = accepted
        .iter()
        .map(|(_, text)| text)
        .filter(|t| !sent.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted messages never reached the SMSC",
        missing.len()
    );
    // The SMSC handed receipts to either node's binds: b passed a's on to a.
    let metrics = http
        .get(format!("{b}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let forwarded = common::metric_sum(&metrics, "smsgate_dlr_forwarded_total", &[]);
    assert!(forwarded > 0.0, "no receipt crossed nodes");
    let log = std::fs::read_to_string(dirs[1].path().join("smsgate.log")).unwrap_or_default();
    assert!(log.contains("adopted the partition"), "b's log:\n{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("adopted"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    sim.shutdown().await;
}
