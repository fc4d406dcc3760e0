//! End to end over real sockets: HTTP in, SMPP to the simulator, receipts back.

mod common;

use std::time::Duration;

use common::{Harness, metric_sum, otp};
use futures::StreamExt;
use serde_json::json;
use smsgate_loadtest::sim::{DelayDist, Outcome, SimConfig};

const WAIT: Duration = Duration::from_secs(15);

fn fast_receipts() -> SimConfig {
    SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(20)),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_sent_over_http_reaches_the_smsc_intact_and_ends_delivered() {
    let h = Harness::start(fast_receipts()).await;
    let (status, accepted) = h
        .send(otp("+447400123456", "Your code is 123456 {€}"))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["segments"], 1);
    assert_eq!(accepted["encoding"], "gsm7");
    assert_eq!(accepted["country"], "GB");
    let id = accepted["id"].as_str().unwrap();

    let m = h.wait_status(id, "delivered", WAIT).await;
    assert_eq!(m["carrier"], "sim");
    assert_eq!(m["segments_delivered"], 1);
    assert!(
        m["submitted_at"].is_string() && m["done_at"].is_string(),
        "{m}"
    );

    let submits = h.sim.submits();
    assert_eq!(submits.len(), 1);
    let s = &submits[0];
    assert_eq!(s.destination_addr, "447400123456");
    assert_eq!((s.dest_ton, s.dest_npi), (1, 1));
    assert_eq!(s.source_addr, "ACME");
    assert_eq!((s.source_ton, s.source_npi), (5, 0));
    assert_eq!(s.data_coding, 0);
    assert_eq!(s.esm_class, 0, "default mode, no UDHI");
    assert_eq!(s.text, "Your code is 123456 {€}");
    assert_eq!(s.registered_delivery & 0x01, 0x01);
    assert!(
        s.validity_period.ends_with('R'),
        "relative validity: {}",
        s.validity_period
    );
    assert_eq!(m["smsc_message_ids"], json!([s.message_id]));
    // The receipt was acknowledged with deliver_sm_resp.
    h.wait_until(WAIT, || async { h.sim.stats().receipts_pending == 0 })
        .await;
    assert_eq!(h.sim.stats().receipts_sent, 1);

    let metrics = h.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "smsgate_messages_accepted_total", &["otp"]),
        1.0
    );
    assert_eq!(
        metric_sum(&metrics, "smsgate_messages_delivered_total", &["otp"]),
        1.0
    );
    assert_eq!(metric_sum(&metrics, "smsgate_bind_up", &[]), 2.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_210_char_cyrillic_text_goes_as_four_ucs2_segments_under_one_reference() {
    let h = Harness::start(SimConfig {
        receipt_delay: DelayDist::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(400),
        },
        ..SimConfig::default()
    })
    .await;
    let text: String = "Привет мир! ".chars().cycle().take(210).collect();
    let (status, accepted) = h.send(otp("+447400123457", &text)).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["segments"], 4);
    assert_eq!(accepted["encoding"], "ucs2");
    let id = accepted["id"].as_str().unwrap().to_owned();

    // Whenever the message shows `delivered`, every segment must be.
    let deadline = tokio::time::Instant::now() + WAIT;
    let final_view = loop {
        let m = h.message(&id).await;
        if m["status"] == "delivered" {
            break m;
        }
        assert!(
            m["status"] == "queued" || m["status"] == "submitted",
            "unexpected status {m}"
        );
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {m}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(final_view["segments_delivered"], 4);
    assert_eq!(final_view["smsc_message_ids"].as_array().unwrap().len(), 4);

    let mut parts = h.sim.submits();
    assert_eq!(parts.len(), 4);
    parts.sort_by_key(|s| s.concat.as_ref().map(|c| c.seq));
    let reference = parts[0].concat.as_ref().unwrap().reference;
    let mut reassembled = String::new();
    for (i, p) in parts.iter().enumerate() {
        let c = p
            .concat
            .as_ref()
            .expect("every part has a concatenation UDH");
        assert_eq!(
            (c.reference, c.total, c.seq as usize),
            (reference, 4, i + 1)
        );
        assert_eq!(p.data_coding, 8);
        assert_eq!(p.esm_class, 0x40, "UDHI set, nothing else");
        let expected = if i < 3 { 67 } else { 9 };
        assert_eq!(p.text.chars().count(), expected);
        reassembled.push_str(&p.text);
    }
    assert_eq!(reassembled, text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undeliverable_segment_makes_a_multipart_message_undeliverable() {
    let h = Harness::start(fast_receipts()).await;
    h.sim.script_outcomes(
        "447400123458",
        vec![
            Outcome::Delivered,
            Outcome::Undeliverable,
            Outcome::Delivered,
            Outcome::Delivered,
        ],
    );
    let text: String = "Ж".repeat(210);
    let id = h.send_ok(otp("+447400123458", &text)).await;
    let m = h.wait_status(&id, "undeliverable", WAIT).await;
    assert_eq!(m["error"]["code"], "undeliverable", "{m}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_only_receipts_are_matched_too() {
    let h = Harness::start(SimConfig {
        receipt_tlvs: false,
        ..fast_receipts()
    })
    .await;
    let id = h.send_ok(otp("+33612345678", "Bonjour")).await;
    h.wait_status(&id, "delivered", WAIT).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rebinds_after_the_smsc_drops_the_link_and_delivers_every_message() {
    let h = std::sync::Arc::new(
        Harness::start_with(
            SimConfig {
                resp_delay: Duration::from_millis(
                    std::env::var("RD")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(20),
                ),
                ..fast_receipts()
            },
            2,
            8,
            |_| {},
        )
        .await,
    );
    let total = 400usize;
    // Clients send concurrently while the SMSC drops the link twice.
    let sender = {
        let h = h.clone();
        tokio::spawn(async move {
            let sends = (0..total).map(|i| {
                let h = h.clone();
                async move {
                    h.send_ok(otp(&format!("+4474001{i:05}"), &format!("message {i}")))
                        .await
                }
            });
            futures::stream::iter(sends)
                .buffer_unordered(16)
                .collect::<Vec<String>>()
                .await
        })
    };
    for threshold in [total / 4, total / 2] {
        h.wait_until(WAIT, || async {
            h.sim.submit_count() >= threshold && h.sim.stats().binds_active > 0
        })
        .await;
        let dropped = h.sim.drop_connections();
        assert!(dropped > 0, "there were sessions to drop");
    }
    let ids = sender.await.expect("sender task");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = h.metrics().await;
        if metric_sum(&m, "smsgate_messages_delivered_total", &[]) >= total as f64 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let stuck: Vec<String> = futures::stream::iter(ids.iter())
                .then(|id| async { h.message(id).await })
                .filter(|m| std::future::ready(m["status"] != "delivered"))
                .map(|m| m.to_string())
                .collect()
                .await;
            panic!(
                "not all delivered; simulator {:?}\nstuck: {stuck:?}\n{}",
                h.sim.stats(),
                m.lines()
                    .filter(|l| l.starts_with("smsgate_"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        assert_eq!(h.message(id).await["status"], "delivered", "{id}");
    }
    // Every destination reached the SMSC at least once.
    let submits = h.sim.submits();
    for i in 0..total {
        let dest = format!("4474001{i:05}");
        assert!(
            submits.iter().any(|s| s.destination_addr == dest),
            "{dest} never submitted"
        );
    }
    let metrics = h.metrics().await;
    assert!(
        metric_sum(&metrics, "smsgate_binds_total", &[]) >= 4.0,
        "rebinds happened"
    );
    let retried = metric_sum(&metrics, "smsgate_retries_total", &[]);
    println!(
        "messages requeued after disconnects: {retried}; submits seen by the SMSC: {}",
        submits.len()
    );
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_validity_runs_out_while_no_bind_is_up_is_expired_and_never_sent() {
    let h = Harness::start(fast_receipts()).await;
    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 0 })
        .await;
    let id = h
        .send_ok(json!({ "to": "+447400123459", "from": "ACME", "text": "code 1", "kind": "otp", "validity_s": 1 }))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.sim.set_accepting(true);
    let m = h.wait_status(&id, "expired", WAIT).await;
    assert_eq!(m["error"]["code"], "validity_expired");
    // A fresh message still goes through, proving binds are back.
    let fresh = h.send_ok(otp("+447400123460", "code 2")).await;
    h.wait_status(&fresh, "delivered", WAIT).await;
    assert!(
        h.sim
            .submits()
            .iter()
            .all(|s| s.destination_addr != "447400123459")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_is_not_sent_before_its_time() {
    let h = Harness::start(fast_receipts()).await;
    let send_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (status, accepted) = h
        .send(json!({ "to": "+447400123461", "from": "ACME", "text": "later", "send_at": send_at.to_rfc3339() }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "scheduled");
    let id = accepted["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.message(id).await["status"], "scheduled");
    assert!(h.sim.submits().is_empty());
    h.wait_status(id, "delivered", WAIT).await;
    let submitted_at = h.sim.submits()[0].at;
    assert!(
        submitted_at >= send_at,
        "submitted {submitted_at} before {send_at}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_submits_then_unbinds_every_session() {
    let h = Harness::start(SimConfig {
        resp_delay: Duration::from_millis(300),
        ..fast_receipts()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(h.send_ok(otp(&format!("+44740020{i:04}"), "bye")).await);
    }
    h.wait_until(WAIT, || async {
        metric_sum(&h.metrics().await, "smsgate_bind_inflight", &[]) >= 10.0
    })
    .await;
    let queue = h.gateway.queue().clone();
    h.gateway.shutdown().await;

    let stats = h.sim.stats();
    assert_eq!(stats.unbinds, 2, "both binds unbound: {stats:?}");
    assert_eq!(
        stats.disconnects, 0,
        "no session was just dropped: {stats:?}"
    );
    for id in ids {
        let m = queue.get(id.parse().unwrap()).await.unwrap().unwrap();
        assert!(
            matches!(m.status.as_str(), "submitted" | "delivered"),
            "in-flight message {id} finished before unbind: {:?}",
            m.status
        );
    }
    h.sim.shutdown().await;
}
