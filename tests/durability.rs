//! A 202 is a promise: the gateway runs as a child process on its durable
//! store, is killed with SIGKILL or restarted, and nothing accepted is lost.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::process::{GatewayProcess, free_port};
use common::{KEY, config_text};
use futures::StreamExt;
use serde_json::{Value, json};
use smsgate_loadtest::sim::{DelayDist, SimConfig, Simulator};
use tokio::sync::Mutex;

const BINDS: u32 = 2;
const WINDOW: u32 = 16;
/// The default `unstored`: submits per bind answered but not yet stored.
const UNSTORED: u32 = 4 * WINDOW;

/// POSTs a message; `None` when the gateway is unreachable or not accepting.
async fn post(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Option<(u16, Value)> {
    let mut req = client
        .post(format!("{base}/v1/messages"))
        .bearer_auth(KEY)
        .json(body);
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json().await.ok()?;
    Some((status, body))
}

async fn get_message(client: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    let resp = client
        .get(format!("{base}/v1/messages/{id}"))
        .timeout(Duration::from_secs(2))
        .bearer_auth(KEY)
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// Polls until every id has `status` (panics with the stragglers after `timeout`).
async fn wait_all(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    status: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<String> = ids.to_vec();
    loop {
        let mut still = Vec::new();
        for chunk in pending.chunks(256) {
            let checked: Vec<(String, bool)> = futures::stream::iter(chunk.to_vec())
                .map(|id| async move {
                    let done = get_message(client, base, &id)
                        .await
                        .is_some_and(|m| m["status"] == status);
                    (id, done)
                })
                .buffer_unordered(32)
                .collect()
                .await;
            still.extend(checked.into_iter().filter(|(_, d)| !d).map(|(id, _)| id));
            assert!(
                tokio::time::Instant::now() < deadline,
                "messages still not {status} at the deadline (e.g. {:?})",
                still.first()
            );
        }
        pending = still;
        if pending.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let sample = get_message(client, base, &pending[0]).await;
            panic!(
                "{} messages never reached {status}; e.g. {sample:?}",
                pending.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn message(n: usize, tag: &str) -> Value {
    json!({ "to": format!("+4474{:08}", n), "from": "ACME", "text": format!("{tag} {n}"), "kind": "transactional" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_no_accepted_message() {
    const TOTAL: usize = 20_000;
    const CLIENTS: usize = 32;
    const KILL_AFTER: usize = 6_000;

    let sim = Simulator::start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(sim.smpp_addr(), BINDS, WINDOW, &dir.path().join("store"));
    let gateway = Arc::new(Mutex::new(
        GatewayProcess::start(&text, dir.path(), free_port()).await,
    ));
    let base = gateway.lock().await.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Clients send TOTAL messages; each retries its message (same
    // Idempotency-Key) until it gets a 202, across the crash.
    let next = Arc::new(AtomicUsize::new(0));
    let accepted: Arc<std::sync::Mutex<HashMap<usize, String>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, accepted, client, base) =
                (next.clone(), accepted.clone(), client.clone(), base.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= TOTAL {
                        return;
                    }
                    let body = message(n, "crash-test");
                    let key = format!("crash-{n}");
                    loop {
                        match post(&client, &base, &body, Some(&key)).await {
                            Some((202, resp)) => {
                                let id = resp["id"].as_str().expect("id").to_owned();
                                accepted.lock().unwrap().insert(n, id);
                                break;
                            }
                            Some((status, resp)) if status < 500 => {
                                panic!("message {n} refused: {status} {resp}")
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            })
        })
        .collect();

    while accepted.lock().unwrap().len() < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before_kill = accepted.lock().unwrap().len();
    gateway.lock().await.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.lock().await.restart().await;
    for w in workers {
        w.await.expect("client task");
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), TOTAL);
    let ids: Vec<String> = accepted.values().cloned().collect();
    wait_all(&client, &base, &ids, "delivered", Duration::from_secs(180)).await;

    // Every accepted message reached the SMSC at least once; duplicates are
    // bounded by what can be in flight when the process dies.
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for s in sim.submits() {
        if let Some(n) = s
            .text
            .strip_prefix("crash-test ")
            .and_then(|n| n.parse().ok())
        {
            *seen.entry(n).or_default() += 1;
        }
    }
    for n in accepted.keys() {
        assert!(
            seen.contains_key(n),
            "accepted message {n} never reached the SMSC"
        );
    }
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "crash test: {TOTAL} accepted ({before_kill} before kill -9), {} submits, {duplicates} duplicates",
        sim.submit_count()
    );
    assert!(
        duplicates <= (UNSTORED * BINDS) as usize,
        "{duplicates} duplicates > unstored × binds"
    );
    gateway.lock().await.terminate();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_that_arrive_after_a_restart_still_match() {
    let sim = Simulator::start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_secs(3)),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(sim.smpp_addr(), BINDS, WINDOW, &dir.path().join("store"));
    let mut gw = GatewayProcess::start(&text, dir.path(), free_port()).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, resp) = post(&client, &gw.base, &message(n, "restart"), None)
            .await
            .expect("gateway up");
        assert_eq!(status, 202);
        ids.push(resp["id"].as_str().expect("id").to_owned());
    }
    wait_all(
        &client,
        &gw.base,
        &ids,
        "submitted",
        Duration::from_secs(20),
    )
    .await;
    gw.terminate();
    // The receipts fall due while the gateway is down; they wait for a bind.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sim.stats().receipts_pending >= 20);
    gw.restart().await;
    wait_all(
        &client,
        &gw.base,
        &ids,
        "delivered",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sim.submit_count(), 20, "nothing was sent twice");
    gw.terminate();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_sends_once_and_answers_the_same_also_after_a_restart() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(sim.smpp_addr(), BINDS, WINDOW, &dir.path().join("store"));
    let mut gw = GatewayProcess::start(&text, dir.path(), free_port()).await;
    let client = reqwest::Client::new();
    let body = message(1, "once");
    let first = post(&client, &gw.base, &body, Some("order-42"))
        .await
        .expect("up");
    assert_eq!(first.0, 202);
    // Concurrent repeats while the first may still be in flight.
    let repeats: Vec<_> =
        futures::future::join_all((0..8).map(|_| post(&client, &gw.base, &body, Some("order-42"))))
            .await;
    for r in repeats {
        assert_eq!(r.expect("up"), first, "a repeat returns the first answer");
    }
    gw.terminate();
    gw.restart().await;
    let after = post(&client, &gw.base, &body, Some("order-42"))
        .await
        .expect("up");
    assert_eq!(after, first, "remembered across a restart");
    // Another key is another message; the same key on another account too.
    let other = post(&client, &gw.base, &body, Some("order-43"))
        .await
        .expect("up");
    assert_ne!(other.1["id"], first.1["id"]);
    // Both messages (order-42's and order-43's) delivered before counting.
    let ids: Vec<String> = [&first.1["id"], &other.1["id"]]
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    wait_all(
        &client,
        &gw.base,
        &ids,
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    let sent_once = sim.submits().iter().filter(|s| s.text == "once 1").count();
    assert_eq!(sent_once, 2, "one submit per key (order-42 and order-43)");
    gw.terminate();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_survives_a_restart_and_is_sent_when_due() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(sim.smpp_addr(), BINDS, WINDOW, &dir.path().join("store"));
    let mut gw = GatewayProcess::start(&text, dir.path(), free_port()).await;
    let client = reqwest::Client::new();
    let send_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let body = json!({ "to": "+447400000001", "from": "ACME", "text": "scheduled", "send_at": send_at.to_rfc3339() });
    let (status, resp) = post(&client, &gw.base, &body, None).await.expect("up");
    assert_eq!((status, resp["status"].as_str()), (202, Some("scheduled")));
    let id = resp["id"].as_str().expect("id").to_owned();
    gw.kill9();
    assert_eq!(sim.submit_count(), 0);
    gw.restart().await;
    assert_eq!(
        get_message(&client, &gw.base, &id).await.expect("up")["status"],
        "scheduled"
    );
    wait_all(
        &client,
        &gw.base,
        &[id],
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    let submits = sim.submits();
    assert_eq!(submits.len(), 1);
    assert!(
        submits[0].at >= send_at,
        "sent at {} before {send_at}",
        submits[0].at
    );
    gw.terminate();
    sim.shutdown().await;
}
