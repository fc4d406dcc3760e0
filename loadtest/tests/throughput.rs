//! A throughput smoke test: many pipelined submits through several binds all complete and all
//! their receipts come back. It asserts counts, not timings (the rate is printed).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

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
        assert!(
            Instant::now() < deadline,
            "receipts missing: {:?}",
            sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received: usize = esmes.iter().map(|e| e.inbox.len()).sum();
    assert_eq!(received, total);
    let stats = sim.stats();
    assert_eq!(stats.receipts_pending, 0);
    assert_eq!(stats.submits_error + stats.submits_throttled, 0);
}

/// A bare pipelined ESME on rusmpp's codec: keeps `window` submits outstanding, acks every
/// receipt it gets, and flushes only when nothing more is readable. Receipts go to any session
/// of the system_id, so it stops once `receipts` (shared by all ESMEs) reaches `total`.
/// Returns how many of its submits were accepted.
async fn raw_esme(
    addr: std::net::SocketAddr,
    n: usize,
    window: usize,
    receipts: Arc<AtomicUsize>,
    total: usize,
) -> usize {
    use futures::{FutureExt, SinkExt};
    use rusmpp::{
        Command, CommandId, CommandStatus,
        pdus::{BindTransceiver, DeliverSmResp},
        tokio_codec::CommandCodec,
        values::InterfaceVersion,
    };
    use tokio_util::codec::Framed;

    let socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut framed = Framed::new(socket, CommandCodec::new());
    let bind = BindTransceiver::builder()
        .system_id(SYSTEM_ID.parse().expect("system_id"))
        .password(PASSWORD.parse().expect("password"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    framed
        .send(Command::new(CommandStatus::EsmeRok, 1, bind))
        .await
        .expect("bind");
    let bound = framed.next().await.expect("bind_resp").expect("decodes");
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let (mut sink, mut stream) = framed.split::<Command>();
    let submit = |seq: usize| {
        let seq = u32::try_from(seq + 1).expect("small");
        Command::new(CommandStatus::EsmeRok, seq, sms("4915112345678", "load"))
    };

    let (mut sent, mut accepted) = (0usize, 0usize);
    while sent < window.min(n) {
        sent += 1;
        sink.feed(submit(sent)).await.expect("feed");
    }
    while accepted < n || receipts.load(Ordering::Relaxed) < total {
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => {
                sink.flush().await.expect("flush");
                // Wake up now and then: the last receipts may go to another session.
                match tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            }
        };
        let command = next.expect("open").expect("decodes");
        match command.id() {
            CommandId::SubmitSmResp => {
                assert_eq!(command.status(), CommandStatus::EsmeRok);
                accepted += 1;
                if sent < n {
                    sent += 1;
                    sink.feed(submit(sent)).await.expect("feed");
                }
            }
            CommandId::DeliverSm => {
                receipts.fetch_add(1, Ordering::Relaxed);
                let ack = Command::new(
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    DeliverSmResp::default(),
                );
                sink.feed(ack).await.expect("feed");
            }
            _ => {}
        }
    }
    sink.flush().await.expect("flush");
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pipelined_esmes_get_every_resp_and_receipt() {
    const RAW_PER_BIND: usize = 25_000;
    let sim = start(SimConfig {
        receipt_delay: DelayDist::Fixed(Duration::from_millis(10)),
        max_records: 0,
        ..SimConfig::default()
    })
    .await;
    let total = BINDS * RAW_PER_BIND;
    let receipts = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let runs = (0..BINDS).map(|_| {
        raw_esme(
            sim.smpp_addr(),
            RAW_PER_BIND,
            512,
            Arc::clone(&receipts),
            total,
        )
    });
    let accepted: usize = futures::future::join_all(runs).await.into_iter().sum();
    let elapsed = started.elapsed();
    eprintln!(
        "{total} submits + {total} receipts over {BINDS} bare binds (window 512) in {elapsed:?}: \
         {:.0} submit_sm/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(accepted, total);
    assert_eq!(receipts.load(Ordering::Relaxed), total);
    let stats = sim.stats();
    assert_eq!(stats.submits_ok, total as u64);
    eventually("the last acks", || {
        sim.stats().receipts_sent == total as u64
    })
    .await;
}
