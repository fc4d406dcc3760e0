//! Batch send, per-account rate limits and quotas, accounts kept apart, and
//! what the logs may say — end to end over real sockets (HTTP in, SMPP out to
//! the simulator).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Harness, KEY, metric_sum, otp};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smsgate::config::AccountConfig;
use smsgate_loadtest::sim::SimConfig;

const WAIT: Duration = Duration::from_secs(30);

/// A request with `key`; returns (status, Retry-After, Idempotent-Replayed, body).
async fn call(
    h: &Harness,
    method: Method,
    key: &str,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Option<u64>, bool, Value) {
    let mut req = h
        .http
        .request(method, format!("{}{path}", h.base))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.expect("HTTP");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let replayed = header("idempotent-replayed").is_some_and(|v| v == "true");
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry_after, replayed, body)
}

async fn batch(h: &Harness, key: &str, messages: Vec<Value>) -> (u16, Option<u64>, Value) {
    let (status, retry, _, body) = call(
        h,
        Method::POST,
        key,
        "/v1/messages/batch",
        Some(json!({ "messages": messages })),
        None,
    )
    .await;
    (status, retry, body)
}

async fn send(h: &Harness, key: &str, body: Value) -> (u16, Option<u64>, Value) {
    let (status, retry, _, body) =
        call(h, Method::POST, key, "/v1/messages", Some(body), None).await;
    (status, retry, body)
}

/// A valid GB mobile number, distinct per `i`.
fn number(i: usize) -> String {
    format!("+4474001{i:05}")
}

/// An account from its TOML (the way operators write them).
fn account(toml_text: &str) -> AccountConfig {
    toml::from_str(toml_text).expect("account TOML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_with_10_invalid_messages_accepts_990_and_submits_them() {
    let h = Harness::start_with(SimConfig::default(), 2, 64, |_| {}).await;
    // Ten bad ones spread through the batch, each with the code a single send would get.
    let bad: Vec<(usize, Value, &str)> = vec![
        (
            0,
            json!({"to": "+4474001", "from": "ACME", "text": "x"}),
            "invalid_number",
        ),
        (
            97,
            json!({"to": "07400100097", "from": "ACME", "text": "x"}),
            "invalid_number",
        ),
        (
            150,
            json!({"to": number(150), "from": "ACME", "text": ""}),
            "malformed_request",
        ),
        (
            311,
            json!({"to": number(311), "from": "ACME", "text": "x", "kind": "urgent"}),
            "malformed_request",
        ),
        (
            402,
            json!({"to": number(402), "text": "no sender"}),
            "malformed_request",
        ),
        (555, json!("not an object"), "malformed_request"),
        (
            640,
            json!({"to": number(640), "from": "ACME", "text": "x", "validity_s": 0}),
            "validity_invalid",
        ),
        (
            777,
            json!({"to": number(777), "from": "ACME!", "text": "x"}),
            "sender_not_allowed",
        ),
        (
            901,
            json!({"to": number(901), "from": "ACME", "text": "x".repeat(2000)}),
            "text_too_long",
        ),
        (
            999,
            json!({"to": number(999), "from": "ACME", "text": "x", "callback_url": "ftp://x"}),
            "malformed_request",
        ),
    ];
    let mut messages: Vec<Value> = (0..1000)
        .map(|i| json!({"to": number(i), "from": "ACME", "text": format!("batch item {i}")}))
        .collect();
    for (i, body, _) in &bad {
        messages[*i] = body.clone();
    }
    let (status, _, body) = batch(&h, KEY, messages).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 990);
    assert_eq!(body["refused"], 10);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    let mut ids = HashSet::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "results are in request order");
        match bad.iter().find(|(b, _, _)| *b == i) {
            Some((_, _, code)) => {
                assert_eq!(r["error"]["code"], *code, "item {i}: {r}");
                assert!(r["error"]["message"].is_string());
                assert!(r.get("id").is_none(), "item {i}: {r}");
            }
            None => {
                assert_eq!(r["status"], "queued", "item {i}: {r}");
                assert_eq!(r["segments"], 1);
                assert_eq!(r["country"], "GB");
                assert!(r.get("error").is_none());
                ids.insert(r["id"].as_str().expect("id").to_owned());
            }
        }
    }
    assert_eq!(ids.len(), 990, "distinct ids");

    // Every accepted message reaches the SMSC, once; the refused ones never do.
    h.wait_until(WAIT, || async { h.sim.submit_count() >= 990 })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let submits = h.sim.submits();
    assert_eq!(submits.len(), 990);
    let destinations: HashSet<String> =
        submits.iter().map(|s| s.destination_addr.clone()).collect();
    assert_eq!(destinations.len(), 990);
    for (i, _, _) in &bad {
        assert!(!destinations.contains(number(*i).trim_start_matches('+')));
    }
    // Each is the account's own message, and they go on to be delivered.
    let first = ids.iter().next().unwrap();
    h.wait_status(first, "delivered", WAIT).await;
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "smsgate_messages_accepted_total", &[]),
        990.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "smsgate_messages_rejected_total",
            &["malformed_request"]
        ),
        5.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_nothing_acceptable_is_422_with_every_result() {
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        c.http.max_batch_body_bytes = 100 * 1024;
    })
    .await;
    let (status, _, body) = batch(
        &h,
        KEY,
        vec![
            json!({"to": "+4474001", "from": "ACME", "text": "x"}),
            json!({"to": number(1), "from": "ACME", "text": ""}),
        ],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "batch_refused");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["refused"], 2);
    assert_eq!(body["results"][0]["error"]["code"], "invalid_number");
    assert_eq!(body["results"][1]["error"]["code"], "malformed_request");

    // Empty, oversized and shapeless batches are malformed requests.
    let (status, _, body) = batch(&h, KEY, vec![]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("malformed_request"))
    );
    let (status, _, body) = batch(&h, KEY, vec![otp(&number(1), "x"); 1001]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("malformed_request"))
    );
    let (status, _, _, body) = call(
        &h,
        Method::POST,
        KEY,
        "/v1/messages/batch",
        Some(json!({"to": number(1)})),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("malformed_request"))
    );
    // Over http.max_batch_body_bytes.
    let (status, _, body) = batch(&h, KEY, vec![otp(&number(1), &"x".repeat(1100)); 100]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("payload_too_large"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.sim.submit_count(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_batch_with_its_idempotency_key_sends_nothing_new() {
    let h = Harness::start(SimConfig::default()).await;
    let messages =
        json!({ "messages": (0..5).map(|i| otp(&number(i), "code 1")).collect::<Vec<_>>() });
    let (status, _, replayed, first) = call(
        &h,
        Method::POST,
        KEY,
        "/v1/messages/batch",
        Some(messages.clone()),
        Some("batch-1"),
    )
    .await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, _, replayed, again) = call(
        &h,
        Method::POST,
        KEY,
        "/v1/messages/batch",
        Some(messages),
        Some("batch-1"),
    )
    .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    h.wait_until(WAIT, || async { h.sim.submit_count() >= 5 })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.sim.submit_count(), 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_with_another_body_is_refused_and_a_key_is_scoped_to_its_route() {
    let h = Harness::start(SimConfig::default()).await;
    let post = |path: &'static str, body: Value| {
        let h = &h;
        async move { call(h, Method::POST, KEY, path, Some(body), Some("key-1")).await }
    };
    let first = otp(&number(0), "code 1");
    let (status, _, replayed, sent) = post("/v1/messages", first.clone()).await;
    assert_eq!((status, replayed), (202, false), "{sent}");
    // The same body again: the first answer, nothing new.
    let (status, _, replayed, again) = post("/v1/messages", first).await;
    assert_eq!((status, replayed, &again["id"]), (202, true, &sent["id"]));
    // Another body under the same key: refused, not the first answer.
    let (status, _, replayed, other) = post("/v1/messages", otp(&number(0), "code 2")).await;
    assert_eq!(
        (status, replayed, &other["error"]["code"]),
        (422, false, &json!("idempotency_mismatch")),
        "{other}"
    );
    let (status, _, _, other) = post("/v1/messages", otp(&number(1), "code 1")).await;
    assert_eq!(
        (status, &other["error"]["code"]),
        (422, &json!("idempotency_mismatch"))
    );
    // The key on the batch route is another key: a batch answer, sent.
    let messages = json!({ "messages": [otp(&number(2), "code 3"), otp(&number(3), "code 3")] });
    let (status, _, replayed, batch) = post("/v1/messages/batch", messages).await;
    assert_eq!(
        (status, replayed, &batch["accepted"]),
        (200, false, &json!(2)),
        "{batch}"
    );
    let messages = json!({ "messages": [otp(&number(2), "code 4")] });
    let (status, _, _, other) = post("/v1/messages/batch", messages).await;
    assert_eq!(
        (status, &other["error"]["code"]),
        (422, &json!("idempotency_mismatch"))
    );
    h.wait_until(WAIT, || async { h.sim.submit_count() >= 3 })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<String> = h.sim.submits().into_iter().map(|s| s.text).collect();
    assert_eq!(
        sent.len(),
        3,
        "one single send and the first batch only: {sent:?}"
    );
    assert!(
        sent.iter()
            .all(|t| !t.contains("code 2") && !t.contains("code 4")),
        "{sent:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after_and_the_next_window_accepts() {
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        // One message a second, three at once.
        c.accounts[0].limits.messages_per_s = 1.0;
        c.accounts[0].limits.burst = 3;
    })
    .await;
    for i in 0..3 {
        let (status, _, body) = send(&h, KEY, otp(&number(i), "code")).await;
        assert_eq!(status, 202, "message {i} is within the burst: {body}");
    }
    let (status, retry_after, body) = send(&h, KEY, otp(&number(3), "code")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after = retry_after.expect("Retry-After on a 429");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // A batch counts one per message and is refused whole.
    let (status, retry, body) = batch(&h, KEY, vec![otp(&number(4), "code"); 2]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    assert!(retry.is_some());
    // The limit is the account's own: another account still sends (from a
    // sender of its own: "ACME" is the test account's).
    let mut theirs = otp(&number(5), "code");
    theirs["from"] = json!("OTHER");
    let (status, _, body) = send(&h, "other-key", theirs).await;
    assert_eq!(status, 202, "{body}");

    // The next window accepts.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, body) = send(&h, KEY, otp(&number(6), "code")).await;
    assert_eq!(status, 202, "after Retry-After: {body}");

    h.wait_until(WAIT, || async { h.sim.submit_count() >= 5 })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.sim.submit_count(), 5, "nothing refused was sent");
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "smsgate_messages_rejected_total",
            &["reason=\"rate_limited\""]
        ),
        2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_counts_accepted_messages_only() {
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        c.accounts[0].limits.daily_quota = 3;
    })
    .await;
    // A batch of 3 with one refused uses 2 of the 3.
    let (status, _, body) = batch(
        &h,
        KEY,
        vec![
            otp(&number(0), "a"),
            otp("+4474001", "b"),
            otp(&number(2), "c"),
        ],
    )
    .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(2)), "{body}");
    // Two more do not fit: refused whole.
    let (status, retry_after, body) =
        batch(&h, KEY, vec![otp(&number(3), "d"), otp(&number(4), "e")]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let retry_after = retry_after.expect("Retry-After");
    assert!(
        (1..=86_400).contains(&retry_after),
        "until midnight UTC: {retry_after}"
    );
    // One does.
    let (status, _, body) = send(&h, KEY, otp(&number(5), "f")).await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = send(&h, KEY, otp(&number(6), "g")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("quota_exceeded"))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_kept_apart_messages_404_and_opt_outs_untouched() {
    // A third account configured the production way: only the key's SHA-256 in
    // the config, a default sender.
    let key = "shop-9f2c1e7a";
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        c.accounts.push(account(&format!(
            "id = \"shop\"\napi_key_sha256 = \"{hash}\"\ndefault_from = \"SHOP\"\n"
        )));
    })
    .await;

    // Each account sees its own messages; another's id is 404, for batches too.
    let mine = h.send_ok(otp(&number(1), "for test")).await;
    let (status, _, body) =
        batch(&h, key, vec![json!({"to": number(2), "text": "from shop"})]).await;
    assert_eq!(status, 200, "{body}");
    let theirs = body["results"][0]["id"].as_str().unwrap().to_owned();
    for (who, id, code) in [
        (KEY, &mine, 200),
        ("other-key", &mine, 404),
        (key, &mine, 404),
        (key, &theirs, 200),
        (KEY, &theirs, 404),
        ("other-key", &theirs, 404),
    ] {
        let (status, body) = h.get_as(who, id).await;
        assert_eq!(status, code, "{who} GET {id}: {body}");
        if code == 404 {
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
    // The default sender was used.
    let (_, view) = h.get_as(key, &theirs).await;
    assert_eq!(view["from"], "SHOP");
    h.wait_until(WAIT, || async {
        h.sim.submits().iter().any(|s| s.source_addr == "SHOP")
    })
    .await;
    // The test account has no default sender.
    let (status, _, body) = send(&h, KEY, json!({"to": number(3), "text": "no sender"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("malformed_request"))
    );

    // An opt-out recorded by one account does not touch another's list.
    let victim = number(7);
    let path = format!("/v1/opt-outs/{victim}");
    let (status, _, _, _) = call(&h, Method::PUT, key, &path, None, None).await;
    assert_eq!(status, 204);
    for (who, opted_out) in [(key, true), (KEY, false), ("other-key", false)] {
        let (_, _, _, body) = call(&h, Method::GET, who, &path, None, None).await;
        assert_eq!(body["opted_out"], opted_out, "{who}: {body}");
    }
    let (status, _, body) = batch(&h, key, vec![json!({"to": victim, "text": "promo"})]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["results"][0]["error"]["code"], "opted_out");
    let (status, _, body) = send(&h, KEY, otp(&victim, "still mine to send")).await;
    assert_eq!(status, 202, "{body}");
    // Another account cannot undo it either: its DELETE is on its own list.
    let (status, _, _, _) = call(&h, Method::DELETE, KEY, &path, None, None).await;
    assert_eq!(status, 204);
    let (_, _, _, body) = call(&h, Method::GET, key, &path, None, None).await;
    assert_eq!(body["opted_out"], true);
    h.stop().await;
}

/// Log lines of this test binary, captured as JSON (the `format = "json"` output).
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("smsgate=debug"))
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_message_by_id_without_its_number_or_text() {
    let logs = captured_logs();
    let h = Harness::start(SimConfig::default()).await;
    let to = "+447400987654";
    let text = "Secret code 918273";
    let id = h.send_ok(otp(to, text)).await;
    h.wait_status(&id, "delivered", WAIT).await;
    let (status, _, _) = batch(&h, KEY, vec![otp(to, text), otp("+4474009", text)]).await;
    assert_eq!(status, 200);
    h.stop().await;

    let text_out = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // Even at debug, and whatever other tests of this binary logged.
    assert!(
        !text_out.contains("447400987654"),
        "a full number was logged"
    );
    assert!(!text_out.contains("918273"), "message text was logged");
    let lines: Vec<Value> = text_out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The API handler and the carrier's submit task both log inside the message's span.
    let about = |event: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == event && l["span"]["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no {event:?} line in the span of {id}:\n{text_out}"))
    };
    for event in ["message accepted", "submit answered"] {
        let line = about(event);
        assert_eq!(line["span"]["name"], "message");
        assert_eq!(line["span"]["to"], "+4474****7654");
        assert_eq!(line["span"]["account"], "test");
    }
    assert_eq!(about("submit answered")["span"]["carrier"], "sim");
}
