//! Priority, fairness, validity, failover, throttling and error handling,
//! asserted on the order and counts the simulator records over real SMPP
//! (never on wall-clock timings).

mod common;

use std::time::Duration;

use common::{Harness, KEY};
use futures::StreamExt;
use serde_json::{Value, json};
use smsgate::config::{CarrierConfig, Config, RouteConfig};
use smsgate_loadtest::sim::{SimConfig, Simulator, SubmitRecord};

const WAIT: Duration = Duration::from_secs(60);

/// Rules without consent, quiet hours or wording requirements, so marketing
/// floods are admitted whatever the wall clock says.
fn permissive_rules(config: &mut Config, dir: &std::path::Path) {
    let path = dir.join("countries.toml");
    let default_only = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/countries.toml"
    ))
    .expect("countries file")
    .split("\n[countries.")
    .next()
    .expect("default section")
    .to_owned();
    std::fs::write(&path, default_only).expect("write countries");
    config.compliance.countries = path;
}

fn marketing(to: &str, text: &str) -> Value {
    json!({ "to": to, "from": "ACME", "text": text, "kind": "marketing" })
}

/// Sends `bodies` with `key`, 32 at a time; asserts every one is accepted.
async fn send_all(h: &Harness, key: &str, bodies: Vec<Value>) {
    let results: Vec<(u16, Value)> = futures::stream::iter(bodies)
        .map(|b| h.post_as(key, "/v1/messages", b.to_string()))
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, body) in results {
        assert_eq!(status, 202, "{body}");
    }
}

fn number(i: usize) -> String {
    format!("+447400{:06}", i % 1_000_000)
}

async fn wait_records(h: &Harness, what: &str, ok: impl Fn(&[SubmitRecord]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok(&h.sim.submits()) {
        if tokio::time::Instant::now() > deadline {
            let metrics = h.metrics().await;
            let interesting: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("queue_depth")
                            || l.contains("errors")
                            || l.contains("retries")
                            || l.contains("rate_limit")
                            || l.contains("inflight"))
                })
                .collect();
            panic!(
                "timed out waiting for {what}: {} records, sim {:?}\n{}",
                h.sim.submits().len(),
                h.sim.stats(),
                interesting.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otps_overtake_a_marketing_backlog_at_a_throttled_carrier() {
    let rules = tempfile::tempdir().expect("dir");
    let h = Harness::start_with(
        SimConfig {
            throttle_tps: Some(100),
            ..SimConfig::default()
        },
        2,
        16,
        |c| permissive_rules(c, rules.path()),
    )
    .await;
    let flood = (0..5000)
        .map(|i| marketing(&number(i), &format!("promo {i}")))
        .collect();
    send_all(&h, KEY, flood).await;
    let before = h.sim.submits().len();
    assert!(before < 4000, "the backlog is still there ({before} sent)");
    let otps = (0..20)
        .map(|i| json!({ "to": number(900_000 + i), "from": "ACME", "text": format!("code {i}"), "kind": "otp" }))
        .collect();
    send_all(&h, KEY, otps).await;
    wait_records(&h, "20 OTPs", |r| {
        r.iter().filter(|s| s.text.starts_with("code ")).count() == 20
    })
    .await;
    let records = h.sim.submits();
    let last_otp = records
        .iter()
        .rposition(|s| s.text.starts_with("code "))
        .expect("OTPs recorded");
    let marketing_meanwhile = records[before..last_otp]
        .iter()
        .filter(|s| s.text.starts_with("promo "))
        .count();
    assert!(
        marketing_meanwhile <= 200,
        "{marketing_meanwhile} marketing messages reached the SMSC while the OTPs waited"
    );
    eprintln!(
        "OTP wait behind a {} message backlog: {marketing_meanwhile} marketing submits",
        5000 - before
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_account_is_not_stuck_behind_a_big_ones_blast() {
    let rules = tempfile::tempdir().expect("dir");
    let h = Harness::start_with(SimConfig::default(), 2, 16, |c| {
        permissive_rules(c, rules.path());
        c.carriers[0].tps = 200.0;
    })
    .await;
    let blast = (0..5000)
        .map(|i| marketing(&number(i), &format!("A {i}")))
        .collect();
    send_all(&h, KEY, blast).await;
    // What A sent while its blast was being accepted does not count: the
    // question is how long B waits once it is queued.
    let b_queued_at = h.sim.submits().len();
    let small = (0..50)
        .map(|i| {
            // B sends from a sender of its own ("ACME" is A's).
            let mut m = marketing(&number(500_000 + i), &format!("B {i}"));
            m["from"] = json!("OTHER");
            m
        })
        .collect();
    send_all(&h, "other-key", small).await;
    wait_records(&h, "B's 50", |r| {
        r.iter().filter(|s| s.text.starts_with("B ")).count() == 50
    })
    .await;
    let records = h.sim.submits();
    let last_b = records
        .iter()
        .rposition(|s| s.text.starts_with("B "))
        .expect("B recorded");
    let a_meanwhile = records[b_queued_at.min(last_b)..last_b]
        .iter()
        .filter(|s| s.text.starts_with("A "))
        .count();
    assert!(
        a_meanwhile < 1000,
        "B finished after {a_meanwhile} more of A's messages"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_past_its_validity_is_never_sent() {
    let h = Harness::start(SimConfig::default()).await;
    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 0 })
        .await;
    let id = h
        .send_ok(json!({ "to": "+447400123123", "from": "ACME", "text": "code 1", "kind": "otp", "validity_s": 2 }))
        .await;
    let m = h.wait_status(&id, "expired", WAIT).await;
    assert_eq!(m["error"]["code"], "validity_expired");
    h.sim.set_accepting(true);
    h.wait_until(WAIT, || async { h.gateway.binds_up() > 0 })
        .await;
    // A message sent after it goes through; the expired one never does.
    let after = h.send_ok(common::otp("+447400123124", "code 2")).await;
    h.wait_status(&after, "delivered", WAIT).await;
    assert!(
        h.sim
            .submits()
            .iter()
            .all(|s| s.destination_addr != "447400123123"),
        "the expired OTP was submitted"
    );
    h.stop().await;
}

/// A second carrier at `sim`, preferred after the harness's own ("sim").
fn with_secondary(c: &mut Config, secondary: &Simulator) {
    let mut second: CarrierConfig = c.carriers[0].clone();
    second.name = "secondary".into();
    second.url = format!("smpp://{}", secondary.smpp_addr());
    c.carriers.push(second);
    c.routes.push(RouteConfig {
        country: Some("GB".into()),
        prefix: None,
        kind: None,
        account: None,
        carriers: vec!["sim".into(), "secondary".into()],
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_fails_over_to_the_secondary_and_returns_to_the_primary() {
    let secondary = Simulator::start(SimConfig::default()).await.expect("sim");
    let h = Harness::start_with(SimConfig::default(), 1, 16, |c| {
        with_secondary(c, &secondary)
    })
    .await;
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 2 })
        .await;
    let batch = |tag: &str| {
        (0..20)
            .map(|i| common::otp(&number(700_000 + i), &format!("{tag} {i}")))
            .collect::<Vec<_>>()
    };
    let count = |sim: &Simulator, tag: &str| {
        sim.submits()
            .iter()
            .filter(|s| s.text.starts_with(tag))
            .count()
    };
    send_all(&h, KEY, batch("first")).await;
    h.wait_until(WAIT, || async { count(&h.sim, "first") == 20 })
        .await;
    assert_eq!(
        count(&secondary, "first"),
        0,
        "the primary takes it while up"
    );

    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 1 })
        .await;
    send_all(&h, KEY, batch("second")).await;
    h.wait_until(WAIT, || async { count(&secondary, "second") == 20 })
        .await;

    h.sim.set_accepting(true);
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 2 })
        .await;
    send_all(&h, KEY, batch("third")).await;
    h.wait_until(WAIT, || async { count(&h.sim, "third") == 20 })
        .await;
    assert_eq!(count(&secondary, "third"), 0, "back on the primary");
    let m: Value = h
        .message(&h.send_ok(common::otp(&number(1), "which")).await)
        .await;
    let m = h
        .wait_status(m["id"].as_str().expect("id"), "delivered", WAIT)
        .await;
    assert_eq!(
        m["carrier"], "sim",
        "the status names the carrier that took it"
    );
    h.stop().await;
    secondary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_smsc_gets_everything_exactly_once() {
    let rules = tempfile::tempdir().expect("dir");
    let h = Harness::start_with(
        SimConfig {
            throttle_tps: Some(200),
            receipt_delay: smsgate_loadtest::sim::DelayDist::Fixed(Duration::from_millis(5)),
            ..SimConfig::default()
        },
        2,
        16,
        |c| permissive_rules(c, rules.path()),
    )
    .await;
    let all = (0..3000)
        .map(|i| json!({ "to": number(i), "from": "ACME", "text": format!("t {i}"), "kind": "transactional" }))
        .collect();
    send_all(&h, KEY, all).await;
    wait_records(&h, "3000 submits", |r| r.len() >= 3000).await;
    let records = h.sim.submits();
    let mut texts: Vec<&str> = records.iter().map(|s| s.text.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), 3000, "every message reached the SMSC");
    assert_eq!(
        records.len(),
        3000,
        "none twice (no crash, so no duplicates)"
    );
    let stats = h.sim.stats();
    assert!(stats.submits_throttled > 0, "the SMSC did throttle");
    let metrics = h.metrics().await;
    assert!(
        common::metric_sum(&metrics, "smsgate_throttle_events_total", &["throttled"]) > 0.0,
        "throttling was seen"
    );
    h.wait_until(WAIT, || async {
        common::metric_sum(&h.metrics().await, "smsgate_messages_delivered_total", &[]) >= 3000.0
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_at_once_and_a_transient_one_gives_up_after_the_limit() {
    let h = Harness::start(SimConfig {
        error_injection: vec![(1.0, 0x0B)],
        ..SimConfig::default()
    })
    .await;
    let id = h.send_ok(common::otp("+447400222333", "code")).await;
    let m = h.wait_status(&id, "failed", WAIT).await;
    assert_eq!(m["error"]["code"], "smpp_0x0000000b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.sim.stats().submits_error, 1, "no retry");
    h.stop().await;

    let h = Harness::start_with(
        SimConfig {
            error_injection: vec![(1.0, 0x08)],
            ..SimConfig::default()
        },
        1,
        16,
        |c| {
            c.scheduler.retry_base_ms = 20;
            c.scheduler.max_attempts = 3;
        },
    )
    .await;
    let id = h.send_ok(common::otp("+447400222334", "code")).await;
    let m = h.wait_status(&id, "failed", WAIT).await;
    assert_eq!(m["error"]["code"], "smpp_0x00000008");
    assert_eq!(
        h.sim.stats().submits_error,
        3,
        "three attempts, then no more"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_backlog_waits_in_the_store_and_pages_in_oldest_first() {
    let rules = tempfile::tempdir().expect("dir");
    let h = Harness::start_with(SimConfig::default(), 1, 16, |c| {
        permissive_rules(c, rules.path());
        c.scheduler.window_per_queue = 100;
        c.scheduler.page_size = 50;
    })
    .await;
    h.sim.set_accepting(false);
    h.sim.drop_connections();
    h.wait_until(WAIT, || async { h.gateway.binds_up() == 0 })
        .await;
    // Sent one at a time so the acceptance order is the id order.
    for i in 0..3000 {
        let (status, body) = h
            .post_as(
                KEY,
                "/v1/messages",
                marketing(&number(i), &format!("p {i}")).to_string(),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let metrics = h.metrics().await;
    assert_eq!(
        common::metric_sum(&metrics, "smsgate_queue_depth{", &["marketing"]),
        3000.0
    );
    let in_memory = common::metric_sum(&metrics, "smsgate_queue_in_memory", &["marketing"]);
    assert!(
        in_memory <= 100.0,
        "{in_memory} held in memory with a window of 100"
    );

    h.sim.set_accepting(true);
    wait_records(&h, "3000 submits", |r| r.len() >= 3000).await;
    let order: Vec<usize> = h
        .sim
        .submits()
        .iter()
        .filter_map(|s| s.text.strip_prefix("p ")?.parse().ok())
        .collect();
    assert_eq!(order.len(), 3000, "every message once");
    // One bind with a window of 16: submits may overtake each other only
    // within the window.
    let out_of_order = order.windows(2).filter(|w| w[1] < w[0]).count();
    let max_jump = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| pos.abs_diff(i))
        .max()
        .unwrap_or(0);
    assert!(
        max_jump <= 16,
        "paged in oldest first (max displacement {max_jump}, {out_of_order} inversions)"
    );
    h.stop().await;
}

/// The carrier's rate limit as the gateway reports it (-1: unlimited).
fn rate_limit(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("smsgate_carrier_rate_limit{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smsc_that_turns_to_throttling_after_a_quiet_spell_gets_its_rate_cut() {
    // Ordinary traffic for a while, then silence, then an SMSC that lets 20
    // submits a second through and answers 0x58 to the rest.
    const LIMIT: u64 = 20;
    let throttle_after = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let h = Harness::start(SimConfig {
        throttle_tps: Some(LIMIT as u32),
        throttle_after,
        ..SimConfig::default()
    })
    .await;
    let ordinary = (0..200)
        .map(|i| json!({ "to": number(i), "from": "ACME", "text": format!("hello {i}") }))
        .collect();
    send_all(&h, KEY, ordinary).await;
    wait_records(&h, "the ordinary traffic", |r| r.len() >= 200).await;
    let quiet = started + throttle_after + Duration::from_millis(500);
    assert!(
        tokio::time::Instant::now() < quiet,
        "the ordinary traffic took longer than the spell before throttling"
    );
    tokio::time::sleep_until(quiet).await;

    let backlog = (0..400)
        .map(|i| json!({ "to": number(1000 + i), "from": "ACME", "text": format!("later {i}") }))
        .collect();
    send_all(&h, KEY, backlog).await;
    // Within a second the gateway has a limit in force.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let limit = rate_limit(&h.metrics().await);
    assert!(
        limit.is_some_and(|r| r >= 0.0),
        "a rate limit is in force after a second of 0x58: {limit:?}"
    );
    // Over the next four seconds it sends about what the SMSC accepts.
    let before = h.sim.stats();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = h.sim.stats();
    let throttled = after.submits_throttled - before.submits_throttled;
    let accepted = after.submits_ok - before.submits_ok;
    eprintln!("in 4 s: {accepted} accepted, {throttled} answered 0x58 (limit {limit:?})");
    assert!(
        throttled <= 4 * LIMIT,
        "{throttled} submits answered 0x58 in 4 s at an SMSC limit of {LIMIT}/s"
    );
    assert!(
        accepted >= 2 * LIMIT,
        "{accepted} accepted in 4 s at an SMSC limit of {LIMIT}/s"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_nack_is_retried_and_the_message_delivered_when_the_smsc_recovers() {
    let h = Harness::start_with(SimConfig::default(), 1, 16, |c| {
        c.scheduler.max_attempts = 3;
        c.scheduler.retry_base_ms = 200;
    })
    .await;
    h.sim.set_nack_submits(true);
    let recovers = h
        .send_ok(json!({ "to": number(1), "from": "ACME", "text": "recovers" }))
        .await;
    h.wait_until(WAIT, || async { h.sim.stats().generic_nacks >= 2 })
        .await;
    let m = h.message(&recovers).await;
    assert_eq!(m["status"], "queued", "not failed by a generic_nack: {m}");
    h.sim.set_nack_submits(false);
    h.wait_status(&recovers, "delivered", WAIT).await;

    // An SMSC that never reads it: failed after max_attempts, with the reason.
    h.sim.set_nack_submits(true);
    let gives_up = h
        .send_ok(json!({ "to": number(2), "from": "ACME", "text": "gives up" }))
        .await;
    let m = h.wait_status(&gives_up, "failed", WAIT).await;
    assert_eq!(m["error"]["code"], "smpp_generic_nack", "{m}");
    let metrics = h.metrics().await;
    assert!(
        common::metric_sum(&metrics, "smsgate_submit_errors_total", &["generic_nack"]) >= 4.0,
        "generic_nack answers counted"
    );
    h.stop().await;
}
