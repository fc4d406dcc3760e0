//! The scheduler's cost per message with a deep backlog: one `take` (the
//! next message for a carrier: strict kinds, account turns, route filter)
//! plus one `enqueue` to keep the depth constant, with 1,000,000 marketing
//! messages of 10 accounts queued. In-memory store, so the numbers are the
//! scheduler's and not the disk's (the durable store's append cost is
//! `store_accept`'s).
//!
//! Run: `cargo bench --bench scheduler`

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use smsgate::carrier::route::Routing;
use smsgate::config::{Config, SchedulerConfig};
use smsgate::encoding::Encoding;
use smsgate::message::{Kind, Message, NewMessage};
use smsgate::metrics::Metrics;
use smsgate::queue::{MemoryStore, Queue};
use tokio_util::sync::CancellationToken;

const DEPTH: usize = 1_000_000;
const ACCOUNTS: usize = 10;

fn message(n: usize, kind: Kind) -> Message {
    let now = Utc::now();
    Message::new(
        NewMessage {
            account: format!("account-{}", n % ACCOUNTS),
            to: format!("+4474{:08}", n % 100_000_000),
            country: "GB".into(),
            from: "ACME".into(),
            text: "Spring sale: 20% off everything until Sunday. Reply STOP to opt out".into(),
            kind,
            encoding: Encoding::Gsm7,
            segments: 1,
            client_ref: None,
            callback_url: None,
            send_at: None,
            expires_at: now + chrono::Duration::hours(24),
            opt_out_exempt: false,
        },
        now,
        (n % 256) as u8,
    )
}

fn scheduler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::parse(
        r#"
[[accounts]]
id = "bench"
api_key = "k"

[[carriers]]
name = "a"
url = "smpp://127.0.0.1:1"
system_id = "x"
password = "y"

[[routes]]
country = "FR"
carriers = ["a"]
"#,
    )
    .expect("config");
    let routing = Arc::new(Routing::new(&config.carriers, &config.routes));
    routing.health(0).bind_changed(true);
    let queue = Queue::new(
        Arc::new(MemoryStore::new()),
        routing,
        Arc::new(Metrics::new()),
        SchedulerConfig::default(),
        HashMap::new(),
        usize::MAX,
    );
    rt.block_on(async {
        for chunk in (0..DEPTH).collect::<Vec<_>>().chunks(10_000) {
            let batch = chunk.iter().map(|n| message(*n, Kind::Marketing)).collect();
            queue.enqueue(batch, None).await.expect("enqueue");
        }
    });
    let cancel = CancellationToken::new();
    let mut n = DEPTH;
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(1));
    group.bench_function("take+enqueue at 1M queued (per message)", |b| {
        b.iter_batched(
            || {
                n += 1;
                message(n, Kind::Marketing)
            },
            |m| {
                rt.block_on(async {
                    let taken = queue.take(0, &cancel).await.expect("a message");
                    queue.enqueue(vec![m], None).await.expect("enqueue");
                    taken
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("otp take with 1M marketing queued (per message)", |b| {
        b.iter_batched(
            || {
                n += 1;
                message(n, Kind::Otp)
            },
            |m| {
                rt.block_on(async {
                    queue.enqueue(vec![m], None).await.expect("enqueue");
                    let taken = queue.take(0, &cancel).await.expect("a message");
                    assert_eq!(taken.kind, Kind::Otp);
                    taken
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, scheduler);
criterion_main!(benches);
