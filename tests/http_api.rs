//! The HTTP contract: error envelope and codes, auth, account isolation,
//! operations endpoints. Bad input gets a documented 4xx, never a 5xx.

mod common;

use common::{Harness, KEY, otp};
use serde_json::{Value, json};
use smsgate_loadtest::sim::SimConfig;

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "human message: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_the_documented_4xx_code_never_a_5xx() {
    let h = Harness::start(SimConfig::default()).await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"to\": ".into(),
            400,
            "malformed_request",
        ),
        ("not an object", "[1,2]".into(), 400, "malformed_request"),
        (
            "wrong type",
            json!({"to": 447400123456u64, "from": "ACME", "text": "x"}).to_string(),
            400,
            "malformed_request",
        ),
        (
            "missing text",
            json!({"to": "+447400123456", "from": "ACME"}).to_string(),
            400,
            "malformed_request",
        ),
        (
            "empty text",
            json!({"to": "+447400123456", "from": "ACME", "text": ""}).to_string(),
            400,
            "malformed_request",
        ),
        (
            "unknown kind",
            json!({"to": "+447400123456", "from": "ACME", "text": "x", "kind": "spam"}).to_string(),
            400,
            "malformed_request",
        ),
        (
            "national format",
            otp("07400123456", "x").to_string(),
            422,
            "invalid_number",
        ),
        (
            "not a number",
            otp("+44abc", "x").to_string(),
            422,
            "invalid_number",
        ),
        (
            "invalid range",
            otp("+447700900123", "x").to_string(),
            422,
            "invalid_number",
        ),
        (
            "bad sender",
            json!({"to": "+447400123456", "from": "WAY TOO LONG SENDER", "text": "x"}).to_string(),
            422,
            "sender_not_allowed",
        ),
        (
            "too long",
            otp("+447400123456", &"x".repeat(153 * 10 + 1)).to_string(),
            422,
            "text_too_long",
        ),
        (
            "zero validity",
            json!({"to": "+447400123456", "from": "ACME", "text": "x", "validity_s": 0})
                .to_string(),
            422,
            "validity_invalid",
        ),
        (
            "negative validity",
            json!({"to": "+447400123456", "from": "ACME", "text": "x", "validity_s": -5})
                .to_string(),
            400,
            "malformed_request",
        ),
        (
            "bad send_at",
            json!({"to": "+447400123456", "from": "ACME", "text": "x", "send_at": "tomorrow"})
                .to_string(),
            400,
            "malformed_request",
        ),
        (
            "2 MB body",
            format!(
                "{{\"to\":\"+447400123456\",\"from\":\"ACME\",\"text\":\"{}\"}}",
                "x".repeat(2 * 1024 * 1024)
            ),
            413,
            "payload_too_large",
        ),
    ];
    let refused = cases.len() as f64;
    for (what, body, want_status, want_code) in cases {
        let (status, resp) = h.post_as(KEY, "/v1/messages", body).await;
        assert!(status < 500, "{what}: got {status}");
        assert_eq!(status, want_status, "{what}: {resp}");
        assert_eq!(resp["error"]["code"], want_code, "{what}: {resp}");
    }
    // Nothing of that reached the SMSC, and the gateway still works.
    assert!(h.sim.submits().is_empty());
    let (status, _) = h.send(otp("+447400123456", "still alive")).await;
    assert_eq!(status, 202);
    let metrics = h.metrics().await;
    assert!(
        common::metric_sum(
            &metrics,
            "smsgate_messages_rejected_total",
            &["invalid_number"]
        ) >= 3.0
    );
    // Each request's response time is observed by route and status class.
    let answered = |class: &str| {
        common::metric_sum(
            &metrics,
            "smsgate_http_request_seconds_count",
            &["route=\"/v1/messages\"", &format!("status=\"{class}\"")],
        )
    };
    assert_eq!(answered("4xx"), refused);
    assert_eq!(answered("2xx"), 1.0);
    assert_eq!(answered("5xx"), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_unauthorized() {
    let h = Harness::start(SimConfig::default()).await;
    let body = otp("+447400123456", "x").to_string();
    let url = format!("{}/v1/messages", h.base);
    let no_key = h.http.post(&url).body(body.clone()).send().await.unwrap();
    let status = no_key.status().as_u16();
    assert_error(status, &no_key.json().await.unwrap(), 401, "unauthorized");
    let (status, resp) = h.post_as("wrong-key", "/v1/messages", body.clone()).await;
    assert_error(status, &resp, 401, "unauthorized");
    let basic = h
        .http
        .post(&url)
        .header("authorization", "Basic dGVzdDp0ZXN0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = basic.status().as_u16();
    assert_error(status, &basic.json().await.unwrap(), 401, "unauthorized");
    let (status, resp) = h.get_as("wrong-key", "01JD0000000000000000000000").await;
    assert_error(status, &resp, 401, "unauthorized");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_message_is_not_found() {
    let h = Harness::start(SimConfig::default()).await;
    let id = h.send_ok(otp("+447400123456", "mine")).await;
    let (status, resp) = h.get_as("other-key", &id).await;
    assert_error(status, &resp, 404, "not_found");
    let (status, resp) = h.get_as(KEY, "not-an-id").await;
    assert_error(status, &resp, 404, "not_found");
    let (status, resp) = h.get_as(KEY, "01JD0000000000000000000000").await;
    assert_error(status, &resp, 404, "not_found");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    let h = Harness::start(SimConfig::default()).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", h.base);
        let http = h.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    let ready = get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let metrics = get("/metrics").await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    for name in [
        "smsgate_bind_up",
        "smsgate_queue_depth",
        "smsgate_binds_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let missing = get("/nope").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    // Without any bind up, the gateway is not ready.
    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(std::time::Duration::from_secs(10), || async {
        h.gateway.binds_up() == 0
    })
    .await;
    let not_ready = get("/readyz").await;
    assert_eq!(not_ready.status(), 503);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_answers_503_overloaded_with_retry_after() {
    let h =
        common::Harness::start_with(SimConfig::default(), 1, 1, |c| c.store.max_backlog = 3).await;
    // No bind: everything waits in the queue.
    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(std::time::Duration::from_secs(10), || async {
        h.gateway.binds_up() == 0
    })
    .await;
    for n in 0..3 {
        let (status, resp) = h.send(otp(&format!("+44740012345{n}"), "x")).await;
        assert_eq!(status, 202, "{resp}");
    }
    let resp = h
        .http
        .post(format!("{}/v1/messages", h.base))
        .bearer_auth(KEY)
        .body(otp("+447400123459", "x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_error(503, &body, 503, "overloaded");
    // Once a bind drains the queue, messages are accepted again.
    h.sim.set_accepting(true);
    h.wait_until(std::time::Duration::from_secs(10), || async {
        h.gateway.queue().depths().queued.iter().sum::<usize>() == 0
    })
    .await;
    let (status, _) = h.send(otp("+447400123459", "x")).await;
    assert_eq!(status, 202);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_reload_refuses_a_bad_file_and_keeps_the_rules_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("countries.toml");
    std::fs::copy("config/countries.toml", &file).unwrap();
    let path = file.clone();
    let h = common::Harness::start_with(SimConfig::default(), 1, 4, move |c| {
        c.compliance.countries = path
    })
    .await;
    let us_alpha = json!({ "to": "+12025550143", "from": "ACME", "text": "code 1", "kind": "otp" });
    assert_eq!(
        h.send(us_alpha.clone()).await.0,
        422,
        "no alphanumeric senders in the US"
    );

    std::fs::write(&file, "[countries.US\n").unwrap();
    let (status, body) = h.post_as(KEY, "/admin/reload", String::new()).await;
    assert_error(status, &body, 422, "rules_invalid");
    assert_eq!(
        h.send(us_alpha.clone()).await.0,
        422,
        "old rules still in force"
    );

    std::fs::write(
        &file,
        "[default]\n[countries.US]\nsender_types = [\"alphanumeric\", \"numeric\", \"shortcode\"]\n",
    )
    .unwrap();
    let (status, body) = h.post_as("other-key", "/admin/reload", String::new()).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = h.post_as(KEY, "/admin/reload", String::new()).await;
    assert_eq!((status, body["reloaded"].clone()), (200, json!(true)));
    assert_eq!(h.send(us_alpha).await.0, 202, "new rules in force");
    h.stop().await;
}
