//! Opt-outs over the API and by STOP replies: an opted-out recipient gets
//! nothing, not even what was queued before the STOP.

mod common;

use std::time::Duration;

use common::{Harness, KEY, otp};
use serde_json::{Value, json};
use smsgate_loadtest::sim::{DelayDist, SimConfig, SubmitRecord};

const WAIT: Duration = Duration::from_secs(15);

async fn call(h: &Harness, method: reqwest::Method, key: &str, path: &str) -> (u16, Value) {
    let resp = h
        .http
        .request(method, format!("{}{path}", h.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("HTTP");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the simulator got a submit to `destination` whose text contains `needle`.
async fn wait_submit_to(h: &Harness, destination: &str, needle: &str) -> SubmitRecord {
    let found = || {
        h.sim
            .submits()
            .into_iter()
            .find(|s| s.destination_addr == destination && s.text.contains(needle))
    };
    h.wait_until(WAIT, || async { found().is_some() }).await;
    found().expect("found")
}

/// A notification (GB marketing would also need consent; opt-outs stop every kind).
fn notification(to: &str) -> Value {
    json!({ "to": to, "from": "ACME", "text": "Your parcel is on its way. Reply STOP to opt out", "kind": "transactional" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_recipient_is_refused_until_opted_back_in() {
    let h = Harness::start(SimConfig::default()).await;
    let path = "/v1/opt-outs/+447400111222";
    assert_eq!(
        call(&h, reqwest::Method::GET, KEY, path).await.1["opted_out"],
        false
    );
    assert_eq!(call(&h, reqwest::Method::PUT, KEY, path).await.0, 204);
    let (status, body) = call(&h, reqwest::Method::GET, KEY, path).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["opted_out"].clone(), body["source"].clone()),
        (json!(true), json!("api"))
    );

    for kind in ["marketing", "transactional", "otp"] {
        let (status, resp) = h
            .send(json!({ "to": "+447400111222", "from": "ACME", "text": "hi", "kind": kind }))
            .await;
        assert_eq!(status, 422, "{kind}: {resp}");
        assert_eq!(resp["error"]["code"], "opted_out");
    }
    // Another account's list is its own.
    let (status, _) = h
        .post_as(
            "other-key",
            "/v1/messages",
            json!({ "to": "+447400111222", "from": "OTHER", "text": "Your parcel is on its way", "kind": "transactional" }).to_string(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        call(&h, reqwest::Method::GET, "other-key", path).await.1["opted_out"],
        false
    );

    assert_eq!(call(&h, reqwest::Method::DELETE, KEY, path).await.0, 204);
    let (status, _) = h.send(notification("+447400111222")).await;
    assert_eq!(status, 202);
    // A national-format number is not a valid key.
    let (status, body) = call(&h, reqwest::Method::PUT, KEY, "/v1/opt-outs/07400111222").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_number"))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reply_opts_out_stops_queued_messages_and_start_opts_back_in() {
    let h = Harness::start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(20)),
        ..SimConfig::default()
    })
    .await;
    let path = "/v1/opt-outs/+447400333444";
    // Accepted before the STOP, due after it.
    let send_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let mut queued = notification("+447400333444");
    queued["send_at"] = json!(send_at.to_rfc3339());
    let queued_id = h.send_ok(queued).await;

    h.sim
        .inject_mo("smsgate", "447400333444", "ACME", "  Stop ")
        .await
        .expect("MO delivered and acknowledged");
    let (_, body) = call(&h, reqwest::Method::GET, KEY, path).await;
    assert_eq!(
        (body["opted_out"].clone(), body["source"].clone()),
        (json!(true), json!("mo_keyword")),
        "the STOP is in force once the SMSC got its deliver_sm_resp"
    );
    let (status, resp) = h.send(notification("+447400333444")).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (422, json!("opted_out"))
    );

    let m = h.wait_status(&queued_id, "failed", WAIT).await;
    assert_eq!(m["error"]["code"], "opted_out");
    // The one message that does reach it: the confirmation of the STOP, from
    // the sender the STOP was written to.
    let confirmation = wait_submit_to(&h, "447400333444", "unsubscribed").await;
    assert_eq!(confirmation.source_addr, "ACME");
    let to_number: Vec<_> = h
        .sim
        .submits()
        .into_iter()
        .filter(|s| s.destination_addr == "447400333444")
        .collect();
    assert_eq!(
        to_number.len(),
        1,
        "nothing but the confirmation reached the opted-out number: {to_number:?}"
    );

    h.sim
        .inject_mo("smsgate", "447400333444", "ACME", "START")
        .await
        .expect("MO delivered");
    assert_eq!(
        call(&h, reqwest::Method::GET, KEY, path).await.1["opted_out"],
        false
    );
    wait_submit_to(&h, "447400333444", "subscribed again").await;
    let id = h.send_ok(otp("+447400333444", "welcome back")).await;
    h.wait_status(&id, "delivered", WAIT).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countrys_own_stop_word_opts_out_too() {
    let h = Harness::start(SimConfig::default()).await;
    h.sim
        .inject_mo("smsgate", "33612345678", "ACME", "Arret")
        .await
        .expect("MO delivered");
    let (_, body) = call(&h, reqwest::Method::GET, KEY, "/v1/opt-outs/+33612345678").await;
    assert_eq!(
        body["opted_out"], true,
        "FR's ARRET is an opt-out word: {body}"
    );
    // The same word from a GB number is just a message.
    h.sim
        .inject_mo("smsgate", "447400555666", "ACME", "Arret")
        .await
        .expect("MO delivered");
    let (_, body) = call(&h, reqwest::Method::GET, KEY, "/v1/opt-outs/+447400555666").await;
    assert_eq!(body["opted_out"], false);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_is_answered_and_inbound_messages_are_listed_for_the_owning_account() {
    let h = Harness::start(SimConfig::default()).await;
    for text in ["HELP", "Is my order late?", "stop"] {
        h.sim
            .inject_mo("smsgate", "447400777888", "ACME", text)
            .await
            .expect("MO delivered");
    }
    let help = wait_submit_to(&h, "447400777888", "Reply STOP").await;
    assert_eq!(help.source_addr, "ACME");
    wait_submit_to(&h, "447400777888", "unsubscribed").await;

    // The account owning "ACME" sees all three, oldest first, keywords marked.
    let (status, page) = call(&h, reqwest::Method::GET, KEY, "/v1/inbound").await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<(Value, Value, Value)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["from"].clone(), m["text"].clone(), m["keyword"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (json!("+447400777888"), json!("HELP"), json!("help")),
            (
                json!("+447400777888"),
                json!("Is my order late?"),
                Value::Null
            ),
            (json!("+447400777888"), json!("stop"), json!("stop")),
        ]
    );
    // Paging: one at a time with the cursor.
    let (_, first) = call(&h, reqwest::Method::GET, KEY, "/v1/inbound?limit=1").await;
    assert_eq!(first["messages"][0]["text"], "HELP");
    let next = first["next"].as_str().expect("cursor");
    let (_, second) = call(
        &h,
        reqwest::Method::GET,
        KEY,
        &format!("/v1/inbound?limit=2&after={next}"),
    )
    .await;
    let texts: Vec<&str> = second["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["Is my order late?", "stop"]);
    // Another account does not see them, nor is its list touched.
    let (_, other) = call(&h, reqwest::Method::GET, "other-key", "/v1/inbound").await;
    assert_eq!(other["messages"], json!([]));
    assert_eq!(
        call(
            &h,
            reqwest::Method::GET,
            "other-key",
            "/v1/opt-outs/+447400777888"
        )
        .await
        .1["opted_out"],
        false
    );
    // Bad cursors and limits are 400s with the envelope.
    for bad in [
        "/v1/inbound?after=nope",
        "/v1/inbound?limit=0",
        "/v1/inbound?limit=x",
    ] {
        let (status, body) = call(&h, reqwest::Method::GET, KEY, bad).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, json!("malformed_request")),
            "{bad}"
        );
    }
    let metrics = h.metrics().await;
    assert_eq!(
        common::metric_sum(&metrics, "smsgate_mo_keywords_total", &["keyword=\"help\""]),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_cannot_send_from_a_sender_it_does_not_own() {
    // "test" owns ACME; "other" lists no senders.
    let h = Harness::start(SimConfig::default()).await;
    let to = "+447400555111";
    let body = |from: &str| json!({ "to": to, "from": from, "text": "hello", "kind": "otp" });
    for from in ["ACME", "acme", " ACME"] {
        let (status, resp) = h
            .post_as("other-key", "/v1/messages", body(from).to_string())
            .await;
        assert_eq!(
            (status, &resp["error"]["code"]),
            (422, &json!("sender_not_owned")),
            "other from {from:?}: {resp}"
        );
    }
    // The batch route holds the same rule.
    let batch = json!({ "messages": [body("ACME")] }).to_string();
    let (status, resp) = h.post_as("other-key", "/v1/messages/batch", batch).await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["results"][0]["error"]["code"], "sender_not_owned");
    // The owner sends from it; an account that lists senders sends only from those.
    let (status, resp) = h
        .post_as(KEY, "/v1/messages", body("ACME").to_string())
        .await;
    assert_eq!(status, 202, "{resp}");
    let (status, resp) = h
        .post_as(KEY, "/v1/messages", body("NOTMINE").to_string())
        .await;
    assert_eq!(
        (status, &resp["error"]["code"]),
        (422, &json!("sender_not_owned"))
    );
    // A sender nobody owns is open to an account that lists none.
    let (status, resp) = h
        .post_as("other-key", "/v1/messages", body("OTHER").to_string())
        .await;
    assert_eq!(status, 202, "{resp}");

    // A STOP to ACME opts the recipient out of ACME's owner; no other
    // account can reach them as ACME, since none may send from it.
    h.sim
        .inject_mo("smsgate", "447400555111", "ACME", "STOP")
        .await
        .expect("MO delivered");
    h.wait_until(Duration::from_secs(10), || async {
        call(&h, reqwest::Method::GET, KEY, &format!("/v1/opt-outs/{to}"))
            .await
            .1["opted_out"]
            == true
    })
    .await;
    let (status, resp) = h
        .post_as(
            KEY,
            "/v1/messages",
            json!({ "to": to, "from": "ACME", "text": "promo" }).to_string(),
        )
        .await;
    assert_eq!((status, &resp["error"]["code"]), (422, &json!("opted_out")));
    let (status, resp) = h
        .post_as(
            "other-key",
            "/v1/messages",
            json!({ "to": to, "from": "ACME", "text": "promo" }).to_string(),
        )
        .await;
    assert_eq!(
        (status, &resp["error"]["code"]),
        (422, &json!("sender_not_owned"))
    );
    h.stop().await;
}
