//! Accept throughput of the durable store: concurrent `append`s of single
//! messages (what concurrent `POST /v1/messages` do), each returning only when
//! durable, sharing group commits. Compares `durability = "fsync"` with
//! `"os"` and prints disk bytes per stored message.
//!
//! Run: `cargo bench --bench store_accept`
//!
//! Measured on 2026-11-23 (2 cores, shared machine; see the issue note for the
//! numbers of the run that closed the durable-store issue).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smsgate::config::{Durability, StoreConfig};
use smsgate::encoding::Encoding;
use smsgate::message::{Kind, Message, NewMessage};
use smsgate::metrics::Metrics;
use smsgate::queue::{DurableStore, GroupCommit, Store};

fn message(n: usize) -> Message {
    let now = Utc::now();
    Message::new(
        NewMessage {
            account: "bench".into(),
            to: format!("+4474{n:08}"),
            country: "GB".into(),
            from: "ACME".into(),
            text: format!("Your code is {n:06}. It expires in 5 minutes. Do not share it."),
            kind: Kind::Otp,
            encoding: Encoding::Gsm7,
            segments: 1,
            client_ref: Some(format!("order-{n}")),
            callback_url: None,
            send_at: None,
            expires_at: now + chrono::Duration::minutes(5),
            opt_out_exempt: false,
        },
        now,
        (n % 256) as u8,
    )
}

/// Appends `count` messages from `clients` concurrent tasks; returns the elapsed time.
async fn accept(store: Arc<DurableStore>, clients: usize, count: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in (c..count).step_by(clients) {
                    store.append(vec![message(n)], None).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    started.elapsed()
}

fn store_accept(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("store_accept");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    const PER_ITER: usize = 2_000;
    group.throughput(Throughput::Elements(PER_ITER as u64));
    for durability in [Durability::Fsync, Durability::Os] {
        for clients in [1usize, 16, 128] {
            let name = format!("{durability:?}/clients={clients}").to_lowercase();
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = Arc::new(
                        DurableStore::open_at(
                            dir.path(),
                            durability,
                            GroupCommit::from_config(&StoreConfig::default()),
                            Arc::new(Metrics::new()),
                        )
                        .expect("open"),
                    );
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += rt.block_on(accept(store.clone(), clients, PER_ITER));
                    }
                    total
                })
            });
        }
    }
    group.finish();

    // Disk use per stored (accepted, not yet finished) message.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        DurableStore::open_at(
            dir.path(),
            Durability::Os,
            GroupCommit::from_config(&StoreConfig::default()),
            Arc::new(Metrics::new()),
        )
        .expect("open"),
    );
    let n = 100_000;
    rt.block_on(accept(store.clone(), 64, n));
    rt.block_on(store.close()).expect("close");
    let bytes: u64 = walk(dir.path());
    eprintln!(
        "disk use: {bytes} bytes for {n} messages = {} bytes/message",
        bytes / n as u64
    );
}

fn walk(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

criterion_group!(benches, store_accept);
criterion_main!(benches);
