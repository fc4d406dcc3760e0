//! A throughput smoke test: many pipelined submits through several binds all complete and all
//! their receipts come back. It asserts counts, not timings (the rate is printed).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{StreamExt, stream};
use smsgate_loadtest::sim::{DelayDist, SimConfig};

const BINDS: usize = 4;
const PER_BIND: usize = 5_000;
const WINDOW: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_pipelined_submits_over_four_binds_all_complete_with_receipts() {
    let sim = start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(10)),
        ..SimConfig::default()
    })
    .await;
    let mut esmes = Vec::new();
    for _ in 0..BINDS {
        esmes.push(bind(sim.smpp_addr(), Mode::Transceiver).await);
    }

    let started = Instant::now();
    let runs = esmes.iter().enumerate().map(|(b, esme)| {
        let client = esme.client.clone();
        async move {
            stream::iter(0..PER_BIND)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        let to = format!("49151{b}{i:07}");
                        client.submit_sm(sms(&to, "load test message")).await
                    }
                })
                .buffer_unordered(WINDOW)
                .filter(|r| std::future::ready(r.is_ok()))
                .count()
                .await
        }
    });
    let accepted: usize = futures::future::join_all(runs).await.into_iter().sum();
    let elapsed = started.elapsed();
    let total = BINDS * PER_BIND;
    eprintln!(
        "{total} submits over {BINDS} binds (window {WINDOW}) in {elapsed:?}: {:.0} submit_sm/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(accepted, total);
    assert_eq!(sim.submit_count(), total);

    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().receipts_sent < total as u64 {
        assert!(Instant::now() < deadline, "receipts missing: {:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received: usize = esmes.iter().map(|e| e.inbox.len()).sum();
    assert_eq!(received, total);
    let stats = sim.stats();
    assert_eq!(stats.receipts_pending, 0);
    assert_eq!(stats.submits_error + stats.submits_throttled, 0);
}
