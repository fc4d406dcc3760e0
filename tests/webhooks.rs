//! Status webhooks over real HTTP: signed, in status order per message,
//! retried through a failing receiver, and delivered across a restart.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Harness, test_config};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use smsgate::config::Config;
use smsgate::gateway::Gateway;
use smsgate_loadtest::sim::SimConfig;

const SECRET: &str = "webhook-secret";
const WAIT: Duration = Duration::from_secs(30);

/// One accepted POST: its signature header and raw body.
type Received = (Option<String>, Bytes);

/// A webhook receiver: records every accepted POST; answers 500 to the
/// first `fail_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    /// Milliseconds each answer takes.
    delay_ms: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let r = Receiver::default();
        r.fail_first.store(fail_first, Ordering::SeqCst);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    /// Accepted events as (signature, parsed body).
    fn events(&self) -> Vec<(Option<String>, Value)> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .map(|(sig, body)| {
                (
                    sig.clone(),
                    serde_json::from_slice(body).expect("JSON body"),
                )
            })
            .collect()
    }

    /// The statuses received for one message, in arrival order.
    fn statuses(&self, id: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|(_, b)| b["id"] == id)
            .filter_map(|(_, b)| b["status"].as_str().map(str::to_owned))
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let delay = r.delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let sig = headers
        .get("x-smsgate-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    r.received.lock().expect("lock").push((sig, body));
    StatusCode::NO_CONTENT
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_settings(c: &mut Config) {
    c.accounts[0].webhook_secret = Some(SECRET.into());
    c.webhooks.retry_base_ms = 50;
    c.webhooks.retry_max_ms = 200;
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_then_delivered_arrive_signed() {
    let (receiver, url) = Receiver::start(0).await;
    let h = Harness::start_with(SimConfig::default(), 2, 16, webhook_settings).await;
    let id = h
        .send_ok(
            json!({ "to": "+447400100200", "from": "ACME", "text": "code 1", "kind": "otp",
                         "client_ref": "order-7", "callback_url": url }),
        )
        .await;
    wait_for("two events", || receiver.statuses(&id).len() == 2).await;
    assert_eq!(receiver.statuses(&id), ["submitted", "delivered"]);
    let raw = receiver.received.lock().expect("lock").clone();
    for (sig, body) in &raw {
        assert_eq!(sig.as_deref(), Some(expected_signature(body).as_str()));
    }
    let (_, delivered) = receiver.events().pop().expect("event");
    assert_eq!(delivered["client_ref"], "order-7");
    assert_eq!(
        (
            delivered["segments"].clone(),
            delivered["segments_delivered"].clone()
        ),
        (json!(1), json!(1))
    );
    assert!(delivered["timestamp"].is_string());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_at_first_still_gets_every_event_in_order() {
    let (receiver, url) = Receiver::start(3).await;
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        webhook_settings(c);
        c.accounts[0].callback_url = Some(url.clone());
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        // No callback_url: the account's default applies.
        ids.push(
            h.send_ok(common::otp(&format!("+44740010030{i}"), "code"))
                .await,
        );
    }
    wait_for("ten events", || receiver.events().len() == 10).await;
    for id in &ids {
        assert_eq!(receiver.statuses(id), ["submitted", "delivered"], "{id}");
    }
    assert!(
        receiver.requests.load(Ordering::SeqCst) >= 13,
        "the failures were retried"
    );
    let metrics = h.metrics().await;
    assert!(common::metric_sum(&metrics, "smsgate_webhooks_total", &["retried"]) >= 3.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_webhooks_survive_a_restart() {
    // Fails everything until the gateway has restarted.
    let (receiver, url) = Receiver::start(usize::MAX).await;
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        webhook_settings(c);
        c.accounts[0].callback_url = Some(url.clone());
    })
    .await;
    let id = h.send_ok(common::otp("+447400100400", "code")).await;
    h.wait_status(&id, "delivered", WAIT).await;
    wait_for("a failed attempt", || {
        receiver.requests.load(Ordering::SeqCst) > 0
    })
    .await;
    let Harness {
        data, sim, gateway, ..
    } = h;
    gateway.shutdown().await;
    assert!(receiver.events().is_empty());

    receiver.fail_first.store(0, Ordering::SeqCst);
    let mut config = test_config(sim.smpp_addr(), 2, 16, data.path());
    webhook_settings(&mut config);
    config.accounts[0].callback_url = Some(url);
    let gateway = Gateway::start(config).await.expect("restarts");
    wait_for("both events after the restart", || {
        receiver.statuses(&id).len() == 2
    })
    .await;
    assert_eq!(receiver.statuses(&id), ["submitted", "delivered"]);
    gateway.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_what_the_dispatcher_holds_reaches_a_slow_receiver_once_each_in_order() {
    let (receiver, url) = Receiver::start(0).await;
    receiver.delay_ms.store(2, Ordering::SeqCst);
    // Two POSTs at a time: the dispatcher holds 2 × 2 + 256 events, fewer
    // than the 800 this burst puts in the outbox.
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        webhook_settings(c);
        c.webhooks.per_host = 2;
        c.webhooks.concurrency = 2;
    })
    .await;
    let messages: Vec<Value> = (0..400)
        .map(|i| {
            json!({ "to": format!("+4474005{i:05}"), "from": "ACME", "text": "hello",
                    "kind": "transactional", "callback_url": url })
        })
        .collect();
    let body = json!({ "messages": messages }).to_string();
    let (status, answer) = h.post_as(common::KEY, "/v1/messages/batch", body).await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(400)));
    let ids: Vec<String> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 400);
    wait_for("800 events", || receiver.events().len() >= 800).await;
    // Anything posted twice would arrive within this pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        800,
        "each event once"
    );
    for id in &ids {
        assert_eq!(receiver.statuses(id), ["submitted", "delivered"], "{id}");
    }
    h.stop().await;
}
