//! A short `loadgen` run against an in-process gateway and simulator: every message is
//! accepted, every one is found again at the simulator by its token, and the report files are
//! written. Counts only, never timings.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Harness, KEY};
use smsgate_loadtest::{
    loadgen::{self, Config, Kind, Mode, Report},
    sim::{DelayDist, SimConfig},
};

const MESSAGES: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_closed_loop_run_is_fully_accepted_and_correlated_at_the_simulator() {
    let h = Harness::start(SimConfig {
        http_addr: Some(([127, 0, 0, 1], 0).into()),
        receipt_delay: DelayDist::Fixed(Duration::from_millis(20)),
        ..SimConfig::default()
    })
    .await;
    let sim_http = h.sim.http_addr().expect("simulator HTTP side door");
    let out = tempfile::tempdir().expect("temp dir");

    let config = Config {
        description: "cargo test smoke run".into(),
        url: h.base.clone(),
        keys: vec![KEY.into()],
        mode: Mode::Closed,
        concurrency: 16,
        count: Some(MESSAGES),
        duration_s: Some(20.0),
        // Marketing would be refused (consent, quiet hours) by the test rules' countries.
        mix: "otp=30,transactional=70".parse().expect("mix"),
        // Long texts too, so multipart correlation (token in part 1 only) is exercised.
        texts: "gsm=70,gsm_long=15,ucs2=10,ucs2_long=5"
            .parse()
            .expect("texts"),
        sim_url: Some(format!("http://{sim_http}")),
        webhook: false,
        poll_status: 0.1,
        poll_interval_ms: 20,
        drain_s: 15.0,
        out: Some(out.path().to_path_buf()),
        progress: false,
        ..Config::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(60), loadgen::run(config))
        .await
        .expect("loadgen stops by itself")
        .expect("loadgen run");

    assert_eq!(report.total.sent, MESSAGES, "{}", report.table());
    assert_eq!(report.total.accepted, MESSAGES, "{}", report.table());
    assert_eq!(report.total.refused, 0, "{}", report.table());
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let kinds: BTreeSet<Kind> = report.kinds.iter().filter_map(|k| k.kind).collect();
    assert!(kinds.is_subset(&[Kind::Otp, Kind::Transactional].into()));
    assert_eq!(report.kinds.iter().map(|k| k.sent).sum::<u64>(), MESSAGES);
    assert!(report.kinds.iter().all(|k| k.http.count == k.sent));

    let sim = report.sim.as_ref().expect("simulator correlation");
    assert_eq!(sim.reached, MESSAGES, "{}", report.table());
    assert_eq!(sim.missing, 0);
    assert_eq!(sim.incomplete, 0);
    let reached: u64 = report.kinds.iter().filter_map(|k| k.reached_sim).sum();
    assert_eq!(reached, MESSAGES);
    let submit_samples: u64 = report
        .kinds
        .iter()
        .filter_map(|k| k.accept_to_submit.as_ref())
        .map(|l| l.count)
        .sum();
    assert_eq!(submit_samples, MESSAGES);
    // The gateway's segment counts add up to what the simulator received.
    let segments: u64 = report.kinds.iter().map(|k| k.segments).sum();
    assert!(
        segments > MESSAGES,
        "long texts make more segments than messages"
    );
    assert!(h.sim.submit_count() as u64 >= segments);

    // The sampled status polls saw messages end delivered.
    let finals: u64 = report.kinds.iter().map(|k| k.finals).sum();
    assert!(finals > 0, "{}", report.table());
    for k in &report.kinds {
        assert!(k.final_statuses.keys().all(|s| s == "delivered"), "{k:?}");
    }

    // The files exist and parse.
    let json = std::fs::read_to_string(out.path().join("report.json")).expect("report.json");
    let parsed: Report = serde_json::from_str(&json).expect("report.json parses");
    assert_eq!(parsed.run_id, report.run_id);
    assert_eq!(parsed.total.accepted, MESSAGES);
    assert!(!parsed.timeline.is_empty());
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg");
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("<polyline") || svg.contains("<path"),
        "no lines drawn"
    );

    h.stop().await;
}
