//! Carrier profiles end to end: a real gateway over real SMPP to a simulator
//! that has each quirk real SMSCs have, and every receipt still finds its
//! message (issue 9).

mod common;

use std::time::Duration;

use common::{Harness, KEY, metric_sum};
use futures::StreamExt;
use serde_json::{Value, json};
use smsgate::carrier::profile::CarrierProfile;
use smsgate_loadtest::sim::{
    ConcatMo, DelayDist, MessageIdFormat, Outcome, ReceiptParts, SimConfig,
};

/// Messages per id quirk.
const QUIRK_MESSAGES: usize = 500;

/// A simulator answering fast, with `tweak` applied.
fn sim(tweak: impl FnOnce(&mut SimConfig)) -> SimConfig {
    let mut s = SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(5)),
        ..SimConfig::default()
    };
    tweak(&mut s);
    s
}

/// A gateway whose carrier has the profile written in `profile` (TOML).
async fn start(sim: SimConfig, profile: &str) -> Harness {
    let profile: CarrierProfile = toml::from_str(profile).expect("profile TOML");
    Harness::start_with(sim, 2, 64, move |c| c.carriers[0].profile = profile).await
}

/// A distinct valid GB mobile number per index.
fn number(i: usize) -> String {
    format!("+4474001{:05}", i % 100_000)
}

/// GET `path` with `key`: (status, body).
async fn get(h: &Harness, key: &str, path: &str) -> (u16, Value) {
    let resp = h
        .http
        .get(format!("{}{path}", h.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Sends `n` transactional messages (32 at a time) and returns their ids.
async fn send_many(h: &Harness, n: usize, text: &str) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            h.send_ok(
                json!({ "to": number(i), "from": "ACME", "text": text, "kind": "transactional" }),
            )
            .await
        })
        .buffered(32)
        .collect()
        .await
}

/// Waits until `n` messages are delivered (by the metric), then checks each
/// one's status, and that no receipt went unmatched.
async fn all_delivered(h: &Harness, ids: &[String], within: Duration) {
    let n = ids.len() as f64;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let metrics = h.metrics().await;
        let delivered = metric_sum(&metrics, "smsgate_messages_delivered_total", &[]);
        if delivered >= n {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let unmatched = metric_sum(&metrics, "smsgate_dlr_unmatched_total", &[]);
            panic!("only {delivered} of {n} delivered ({unmatched} receipts unmatched)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses: Vec<Value> = futures::stream::iter(ids)
        .map(|id| h.message(id))
        .buffered(32)
        .collect()
        .await;
    for m in &statuses {
        assert_eq!(m["status"], "delivered", "{m}");
    }
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "smsgate_dlr_unmatched_total", &[]),
        0.0,
        "no receipt may go unmatched"
    );
}

/// One id quirk: 500 messages, every one delivered.
async fn quirk(sim: SimConfig, profile: &str) -> Harness {
    let h = start(sim, profile).await;
    let ids = send_many(&h, QUIRK_MESSAGES, "Your code is 123456").await;
    all_delivered(&h, &ids, Duration::from_secs(60)).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_ids_in_receipts_match_hex_ids_in_responses() {
    let sim = sim(|s| {
        s.message_id_format = MessageIdFormat::Hex;
        s.receipt_text_id_format = Some(MessageIdFormat::Decimal);
        s.receipt_tlv_id_format = Some(MessageIdFormat::Decimal);
    });
    let h = quirk(
        sim,
        r#"submit_id = "hex"
           receipt_id = "decimal"
           receipt_tlv_id = "decimal""#,
    )
    .await;
    // The status shows the id as the SMSC answered it (hex, 16 digits).
    let id = h
        .send_ok(json!({ "to": number(0), "from": "ACME", "text": "Hi" }))
        .await;
    let m = h
        .wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    let smsc_id = m["smsc_message_ids"][0].as_str().unwrap_or_default();
    assert_eq!(smsc_id.len(), 16, "{m}");
    assert!(u64::from_str_radix(smsc_id, 16).is_ok(), "{m}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_finds_decimal_receipt_ids_for_hex_responses_too() {
    let sim = sim(|s| {
        s.message_id_format = MessageIdFormat::Hex;
        s.receipt_text_id_format = Some(MessageIdFormat::Decimal);
        s.receipt_tlv_id_format = Some(MessageIdFormat::Decimal);
    });
    let h = quirk(
        sim,
        r#"submit_id = "auto"
           receipt_id = "auto"
           receipt_tlv_id = "auto""#,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_ids_in_another_case_match() {
    let sim = sim(|s| {
        s.message_id_format = MessageIdFormat::HexUpper;
        s.receipt_text_id_format = Some(MessageIdFormat::Hex);
        s.receipt_tlv_id_format = Some(MessageIdFormat::Hex);
    });
    let h = quirk(
        sim,
        r#"submit_id = "hex"
           receipt_id = "hex""#,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_ids_without_the_zero_padding_match() {
    let sim = sim(|s| {
        s.message_id_format = MessageIdFormat::DecimalPadded;
        s.receipt_text_id_format = Some(MessageIdFormat::Decimal);
        s.receipt_tlv_id_format = Some(MessageIdFormat::Decimal);
    });
    let h = quirk(
        sim,
        r#"submit_id = "decimal"
           receipt_id = "decimal""#,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_without_tlvs_match_by_their_text() {
    let sim = sim(|s| s.receipt_tlvs = false);
    // The default profile: ids compared as sent.
    let h = quirk(sim, "").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_sent_before_its_submit_sm_resp_is_still_matched() {
    let sim = sim(|s| {
        s.receipt_before_resp = true;
        s.receipt_delay = DelayDist::Fixed(Duration::ZERO);
        s.resp_delay = Duration::from_millis(300);
    });
    let h = start(sim, "").await;
    let ids = send_many(&h, 50, "Your code is 123456").await;
    all_delivered(&h, &ids, Duration::from_secs(30)).await;
    let early = h.sim.stats().receipts_before_resp;
    assert_eq!(
        early, 50,
        "every receipt left the simulator before its submit_sm_resp"
    );
    h.stop().await;
}

/// 4 GSM parts (153 + 153 + 153 + 41 characters).
fn four_part_text() -> String {
    "Your parcel is on its way. ".repeat(19)
}

/// First or last receipt mode, with a delivered and a failed 4-part message.
async fn one_receipt_per_message(sim_parts: ReceiptParts, profile: &str, failed: Outcome) {
    let h = start(sim(|s| s.multipart_receipts = sim_parts), profile).await;
    let text = four_part_text();
    let ok = h
        .send_ok(json!({ "to": number(1), "from": "ACME", "text": text }))
        .await;
    let m = h
        .wait_status(&ok, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(m["segments"], 4);
    assert_eq!(m["segments_delivered"], 4);
    assert_eq!(m["smsc_message_ids"].as_array().unwrap().len(), 4);
    h.wait_until(Duration::from_secs(5), || async {
        h.sim.stats().receipts_sent >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.sim.stats().receipts_sent, 1, "one receipt for four parts");

    h.sim.script_outcomes(&number(2)[1..], vec![failed; 4]);
    let bad = h
        .send_ok(json!({ "to": number(2), "from": "ACME", "text": text }))
        .await;
    let expected = match failed {
        Outcome::Expired => "expired",
        _ => "undeliverable",
    };
    let m = h.wait_status(&bad, expected, Duration::from_secs(10)).await;
    assert!(m["error"]["message"].is_string(), "{m}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_mode_settles_a_four_part_message_on_its_first_receipt() {
    one_receipt_per_message(
        ReceiptParts::First,
        r#"multipart_receipts = "first""#,
        Outcome::Expired,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_mode_settles_a_four_part_message_on_its_last_receipt() {
    one_receipt_per_message(
        ReceiptParts::Last,
        r#"multipart_receipts = "last""#,
        Outcome::Undeliverable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_payload_mode_sends_a_long_text_in_one_pdu_settled_by_its_one_receipt() {
    let h = start(sim(|_| {}), r#"long_messages = "payload""#).await;
    let gsm = four_part_text();
    let ucs2 = "Ваш заказ в пути, курьер позвонит заранее. 📦 ".repeat(4);
    let ok = h
        .send_ok(json!({ "to": number(1), "from": "ACME", "text": gsm }))
        .await;
    let m = h
        .wait_status(&ok, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(m["segments"], 4, "billed as four parts");
    assert_eq!(m["segments_delivered"], 4, "{m}");
    let wide = h
        .send_ok(json!({ "to": number(2), "from": "ACME", "text": ucs2 }))
        .await;
    let m = h
        .wait_status(&wide, "delivered", Duration::from_secs(10))
        .await;
    assert!(m["segments"].as_u64().unwrap_or(0) > 1, "{m}");

    let submits = h.sim.submits();
    assert_eq!(submits.len(), 2, "one submit_sm per message");
    for (record, text) in submits.iter().zip([&gsm, &ucs2]) {
        assert_eq!(&record.text, text, "the whole text in message_payload");
        assert!(record.concat.is_none() && record.udh.is_none());
        assert_eq!(record.esm_class & 0x40, 0);
    }
    assert_eq!(h.sim.stats().receipts_sent, 2, "one receipt per message");

    // A failure receipt fails every part at once.
    h.sim
        .script_outcomes(&number(3)[1..], vec![Outcome::Undeliverable]);
    let bad = h
        .send_ok(json!({ "to": number(3), "from": "ACME", "text": gsm }))
        .await;
    let m = h
        .wait_status(&bad, "undeliverable", Duration::from_secs(10))
        .await;
    assert_eq!(m["segments_delivered"], 0, "{m}");
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "smsgate_dlr_unmatched_total", &[]),
        0.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enroute_receipt_then_delivrd_passes_through_submitted_to_delivered() {
    let sim = sim(|s| s.enroute_first = Some(Duration::from_millis(1500)));
    let h = start(sim, "").await;
    let id = h
        .send_ok(json!({ "to": number(3), "from": "ACME", "text": "Hello" }))
        .await;
    // The ENROUTE receipt is acknowledged, and the message is still on its way.
    h.wait_until(Duration::from_secs(5), || async {
        h.sim.stats().receipts_sent >= 1
    })
    .await;
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "smsgate_dlr_received_total",
            &["state=\"ENROUTE\""]
        ),
        1.0
    );
    let m = h.message(&id).await;
    assert_eq!(m["status"], "submitted", "{m}");
    assert!(m["done_at"].is_null(), "{m}");
    // Then DELIVRD ends it.
    let m = h
        .wait_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert!(m["error"].is_null(), "{m}");
    h.wait_until(Duration::from_secs(5), || async {
        h.sim.stats().receipts_sent == 2
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_err_code_and_network_error_are_kept_in_the_status_error() {
    let h = start(sim(|_| {}), "").await;
    h.sim
        .script_outcomes(&number(4)[1..], vec![Outcome::Undeliverable]);
    let id = h
        .send_ok(json!({ "to": number(4), "from": "ACME", "text": "Hello" }))
        .await;
    let m = h
        .wait_status(&id, "undeliverable", Duration::from_secs(10))
        .await;
    let message = m["error"]["message"].as_str().unwrap_or_default();
    // err:001 from the text, GSM cause 1 from network_error_code.
    assert!(
        message.contains("001") && message.contains("network 3:1"),
        "{m}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_part_ucs2_mo_delivered_out_of_order_is_reassembled() {
    let h = start(sim(|_| {}), "").await;
    let text = "Здравствуйте! Пожалуйста, перезвоните мне завтра утром, \
                я буду дома после девяти. Спасибо за быструю доставку 😀 \
                и хорошего вам дня, до свидания!";
    h.sim
        .inject_mo_concatenated(
            "smsgate",
            "+447400777888",
            "ACME",
            text,
            &ConcatMo {
                parts: 3,
                reference: 42,
                ucs2: true,
                order: vec![2, 0, 1],
                ..ConcatMo::default()
            },
        )
        .await
        .expect("parts acknowledged");
    // And a GSM one marked with SAR TLVs, parts 2, 3, 1.
    let gsm = "Please call me back tomorrow morning, I will be at home after nine.";
    h.sim
        .inject_mo_concatenated(
            "smsgate",
            "+447400777889",
            "ACME",
            gsm,
            &ConcatMo {
                parts: 3,
                reference: 0x1234,
                sar: true,
                order: vec![1, 2, 0],
                ..ConcatMo::default()
            },
        )
        .await
        .expect("parts acknowledged");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let texts = loop {
        let (_, page) = get(&h, KEY, "/v1/inbound").await;
        let texts: Vec<Value> = page["messages"]
            .as_array()
            .map(|m| m.iter().map(|m| m["text"].clone()).collect())
            .unwrap_or_default();
        if texts.len() >= 2 || tokio::time::Instant::now() > deadline {
            break texts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(texts, [json!(text), json!(gsm)]);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "smsgate_mo_received_total", &[]),
        2.0,
        "two messages, not six parts"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_unknown_ids_go_to_the_dead_letter_record() {
    // Decimal receipts for hex ids, but the profile does not say so.
    let sim = sim(|s| {
        s.receipt_text_id_format = Some(MessageIdFormat::Decimal);
        s.receipt_tlvs = false;
    });
    let h = start(sim, "receipt_wait_s = 1").await;
    let ids = send_many(&h, 3, "Hello").await;
    h.wait_until(Duration::from_secs(10), || async {
        metric_sum(
            &h.metrics().await,
            "smsgate_dlr_unmatched_total",
            &["carrier=\"sim\""],
        ) >= 3.0
    })
    .await;
    for id in &ids {
        assert_eq!(h.message(id).await["status"], "submitted");
    }

    let (status, body) = get(&h, KEY, "/admin/dlr/unmatched").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let receipts = body["receipts"].as_array().expect("receipts");
    assert_eq!(receipts.len(), 3);
    for r in receipts {
        assert_eq!(r["carrier"], "sim");
        assert_eq!(r["reason"], "unknown_id");
        assert_eq!(r["state"], "DELIVRD");
        let id = r["text_id"].as_str().unwrap();
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{r}");
        assert!(
            r["attempts"].as_u64().unwrap() >= 2,
            "retried before given up: {r}"
        );
    }
    let (_, one) = get(&h, KEY, "/admin/dlr/unmatched?limit=1&carrier=sim").await;
    assert_eq!(one["receipts"].as_array().unwrap().len(), 1);
    let (_, none) = get(&h, KEY, "/admin/dlr/unmatched?carrier=other").await;
    assert_eq!(none["receipts"], json!([]));
    let (status, _) = get(&h, KEY, "/admin/dlr/unmatched?limit=0").await;
    assert_eq!(status, 400);
    // Operators only.
    let (status, body) = get(&h, "other-key", "/admin/dlr/unmatched").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_profile_each_id_quirk_loses_its_receipts() {
    // The control for the quirk tests above: the same simulators, the default profile.
    let quirks: [(MessageIdFormat, MessageIdFormat); 3] = [
        (MessageIdFormat::Hex, MessageIdFormat::Decimal),
        (MessageIdFormat::HexUpper, MessageIdFormat::Hex),
        (MessageIdFormat::DecimalPadded, MessageIdFormat::Decimal),
    ];
    for (submit, receipt) in quirks {
        let sim = sim(|s| {
            s.message_id_format = submit;
            s.receipt_text_id_format = Some(receipt);
            s.receipt_tlv_id_format = Some(receipt);
        });
        let h = start(sim, "receipt_wait_s = 1").await;
        send_many(&h, 5, "Hello").await;
        h.wait_until(Duration::from_secs(10), || async {
            metric_sum(&h.metrics().await, "smsgate_dlr_unmatched_total", &[]) >= 5.0
        })
        .await;
        let metrics = h.metrics().await;
        assert_eq!(
            metric_sum(&metrics, "smsgate_messages_delivered_total", &[]),
            0.0,
            "{submit:?} / {receipt:?}"
        );
        h.stop().await;
    }
}
