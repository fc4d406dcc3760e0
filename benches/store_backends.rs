//! redb 4 vs fjall 3 as smsgate's durable message store, on the gateway's real write pattern.
//!
//! # Workload
//!
//! One writer thread does **group commits**: it takes the pending writes of many concurrent
//! HTTP requests, commits them in one transaction with one sync, then answers them all. The
//! store has three tables (redb tables / fjall keyspaces): `messages[id] = postcard(Message)`,
//! `active[id] = ()` and `finished[done_ms BE ++ id] = ()`, where `id` is the 16 bytes of a
//! ULID (10 ids per ms, random within a ms: mostly ascending). A message's life is three
//! writes, each landing in some group commit:
//!
//! 1. accept: `messages[id] = v`, `active[id] = ()`;
//! 2. submitted: `messages[id] = v` (overwrite);
//! 3. final receipt: `messages[id] = v`, delete `active[id]`, `finished[done_ms ++ id] = ()`.
//!
//! Values are a local mirror of `smsgate::message::Message` serialised with postcard (mean
//! 360 B accepted, 431 B submitted, 456 B final; 1024 distinct values per stage, serialised
//! beforehand so postcard is not timed). A lifecycle group commit ("batch 256") carries 85
//! accepts, the 85 submits of messages accepted 512 messages earlier and the 85 final receipts
//! of messages accepted 8192 earlier: 255 writes. Both engines get a 256 MiB cache.
//!
//! Variants (`key`: what a commit has done when it returns):
//!
//! * `redb-fsync`: `Durability::Immediate`: one `fdatasync` per commit (1-phase commit).
//! * `redb-fsync-qr`: the same plus `set_quick_repair(true)` (each commit also saves the
//!   allocator state, so the open after a crash does not walk the whole file).
//! * `redb-os`: `Durability::Immediate` on [`NoSyncFileBackend`], a `StorageBackend` whose
//!   `sync_data` is a no-op: the commit is written to the OS and never synced. Survives kill
//!   -9, not an OS crash or power loss. redb has no such mode of its own (see `redb-none`).
//! * `redb-none`: `Durability::None`. **Not even process-crash safe**: the commit lives only in
//!   the process (redb updates its in-memory header; the file's header still names the last
//!   durable commit), so kill -9 loses every commit since the last `Immediate` one.
//! * `fjall-fsync`: `db.batch().durability(Some(PersistMode::SyncData))`: journal append plus
//!   `fdatasync`, the same syscall as redb's.
//! * `fjall-syncall`: `PersistMode::SyncAll` (`fsync`).
//! * `fjall-os`: `PersistMode::Buffer` (fjall's default for batches): the journal's user-space
//!   buffer is written to the OS, not synced. Survives kill -9, not an OS crash.
//!
//! Phases: (1) head-to-head: redb and fjall alternate in 300 ms turns on the same load (8
//! rounds, ABBA), so both see the same disk; fjall's background work is waited for, untimed,
//! after each of its turns so it does not slow redb's; a raw fsync probe precedes each pair.
//! (2) A child process (this binary re-run with `STORE_BENCH_CHILD`) builds 100,000 full
//! lifecycles then 100,000 accepted-only messages at batch 256 (timed: the "build" columns) and
//! is killed with SIGKILL; the parent measures the directory (allocated blocks, as `du`), then
//! the first open plus the walk of `active` reading each message, and checks that all 200,000
//! messages and 100,000 active ids survived. A smaller child does 100 commits of 32 accepts and
//! is killed, to see what survives. (3) Criterion: accept at batch 1 / 32 / 512 and lifecycle
//! at batch 256, each on a fresh store. (4) Criterion on the 200k data sets: point reads of
//! random existing ids (each in its own read snapshot) and clean restarts (close, open, walk the
//! 100k `active`).
//!
//! # Running
//!
//! ```text
//! cargo bench --bench store_backends --features bench-backends
//! ```
//!
//! About 2 to 2.5 minutes after the build; needs ~1 GiB in the temp dir. Criterion's output is
//! on stdout; the summary tables (messages/s, disk, recovery) are printed last, on stderr.
//! Read each fsync number against the raw `fdatasync` latency printed beside it.
//!
//! # Results (2026-11-23, 2-core AMD EPYC VM, 24 GiB, ext4 on virtio; shared and noisy)
//!
//! Other test suites ran on the machine throughout, and the disk flipped between two states: a
//! raw 4 KiB append + `fdatasync` of ~0.15-0.25 ms ("fast syncs"), and ~4.0 ms ("slow syncs",
//! where every fsync variant is sync-bound at ~250 commits/s). Nine runs were made; the
//! tables give the run of 13:07 (fast syncs throughout the head-to-head) and, for contrast,
//! the head-to-head of 12:58 (slow syncs throughout).
//!
//! Head-to-head, messages/s, redb / fjall (ratio):
//!
//! | load                 | fast syncs (13:07)        | slow syncs (12:58)     |
//! |----------------------|---------------------------|------------------------|
//! | fsync accept b=1     | 3,552 / 7,760 (0.46)      | 250 / 270 (0.93)       |
//! | fsync accept b=512   | 290,446 / 345,455 (0.84)  | 122,966 / 128,096 (0.96) |
//! | fsync lifecycle 256  | 67,692 / 99,469 (0.68)    | 21,554 / 21,262 (1.01) |
//! | os accept b=1        | 17,718 / 306,476 (0.06)   | 15,587 / 323,070 (0.05) |
//! | os lifecycle 256     | 134,577 / 138,063 (0.97)  | 122,874 / 107,453 (1.14) |
//!
//! Criterion, 13:07 run (messages/s, median of 10 samples; latency = commit at batch 1), and
//! the children's 100k-lifecycle / 100k-accept builds (wall clock, background work included):
//!
//! | variant       | accept b=1 (latency) | b=32    | b=512   | lifecycle 256 | build lifecycle | build accept |
//! |---------------|----------------------|--------:|--------:|--------------:|----------------:|-------------:|
//! | redb-fsync    |   3,938 (254 us)     |  77,555 | 289,308 |        68,466 |          64,009 |      221,049 |
//! | redb-fsync-qr |          -           |       - |       - |        61,704 |          51,818 |      180,177 |
//! | redb-os       |  19,854 (50 us)      | 270,606 | 479,139 |       137,700 |         142,813 |      429,177 |
//! | redb-none     |  45,289 (22 us)      | 332,074 | 468,710 |       152,475 |               - |            - |
//! | fjall-fsync   |   7,235 (138 us)     | 140,125 | 253,908 |        72,710 |          90,187 |      415,396 |
//! | fjall-syncall |   7,539 (133 us)     | 143,607 | 149,061 |             - |               - |            - |
//! | fjall-os      | 219,336 (5 us)       | 307,160 | 319,545 |       103,347 |         109,477 |      609,118 |
//!
//! Across the nine runs (the harness grew during them: the head-to-head came in the fourth,
//! the untimed wait for fjall's background work in the seventh): with fast syncs fjall's fsync
//! lifecycle throughput is 1.06-1.5x redb's (criterion 1.06-1.1x, paired 1.47x, builds
//! 1.3-1.4x; only the first run had redb ahead, 1.2x), accept b=512 is within ~20% either way,
//! batch 1 and 32 favour fjall ~2x; with slow syncs both are equal (sync bound). redb's quick-repair costs 10-50% of the fsync lifecycle throughput (half when syncs
//! are slow, because it syncs twice per commit).
//!
//! Disk, recovery and reads (stable across runs; ranges over the nine runs):
//!
//! | variant       | disk at kill (B/msg) | after compaction | written/lifecycle | first open + walk after kill -9 | clean restart + walk | point read |
//! |---------------|---------------------:|-----------------:|------------------:|--------------------------------:|---------------------:|-----------:|
//! | redb-fsync    |   127.0 MiB (665)    |   127.0 MiB (665) |           3,038 B | 120-506 ms (repair walk)        | 48-77 ms             | 0.9-1.4 us |
//! | redb-fsync-qr |   127.0 MiB (666)    |   127.0 MiB (665) |           3,298 B | 48-89 ms (no repair) [1]        | -                    | -          |
//! | redb-os       |   127.0 MiB (665)    |   127.0 MiB (665) |                 - | 117-350 ms (repair walk)        | -                    | -          |
//! | fjall-fsync   |   229.4 MiB (1,202)  |    97.0 MiB (508) |           2,023 B | 1.29-2.48 s (journal replay)    | 447-512 ms           | 1.2-2.1 us |
//! | fjall-os      |   229.4 MiB (1,202)  |    97.1 MiB (508) |                 - | 1.43-2.09 s (journal replay)    | -                    | -          |
//!
//! 200,000 messages (100k finished + 100k active). "After compaction" is redb `compact()` (it
//! reclaimed nothing) / fjall memtable flush + major compaction (lz4 blocks, no page slack);
//! fjall's extra bytes at kill are journals, bounded by `max_journaling_size` (512 MiB by
//! default). "Written" is block-layer bytes per lifecycle during the build (/proc/self/io).
//! [1] once 626 ms, in the first run, before the repair callback was counted.
//!
//! Crash probe, 3,200 acknowledged accepts then SIGKILL: `redb-none` 0 survived, `redb-os`
//! 3,200, `fjall-os` 3,200. In the builds, no variant lost anything acknowledged.
//!
//! # Verdict: fjall, by a modest margin on the write path
//!
//! * Fsync group commits at 256-512: fjall is equal or faster: ~1.1-1.5x at lifecycle batch 256
//!   with fast syncs, equal when the sync dominates. A redb commit rewrites whole 4 KiB
//!   copy-on-write pages at random offsets (3.0 KB reach the disk per lifecycle vs 2.0 KB for
//!   fjall, compaction included); a fjall commit is one sequential journal append.
//! * Batch 1 (an idle gateway): fjall ~2x lower commit latency with fsync (120-140 us vs
//!   250-280 us), 11-17x in os mode (3-5 us vs 50-60 us of copy-on-write CPU).
//! * "os" mode: fjall's `PersistMode::Buffer` is built in and survives kill -9. redb's
//!   `Durability::None` does **not** (0 of 3,200 acknowledged writes survived), so it must never
//!   back a reply; redb needs the custom no-sync backend used here, which then pays the repair
//!   walk on the next open. In os mode the lifecycle throughput is a tie.
//! * What fjall costs: restart is ~10x slower (1.3-2.5 s after kill -9, ~0.5 s after a clean
//!   shutdown, since fjall replays its journal on every open: it does not flush memtables on
//!   close; bound it with a smaller `max_journaling_size` / `max_memtable_size`), disk use is up
//!   to ~2x redb's until journals are flushed (then 0.75x), two background worker threads share
//!   the 2 cores, and point reads are 0.2-1 us slower (irrelevant next to HTTP).
//! * redb is the runner-up: a single file, no background threads, 50-80 ms restarts. But
//!   without quick-repair its open after a crash walks the whole file (grows with the retained
//!   history), and quick-repair costs 10-50% of the fsync write throughput.
//!
//! # API notes (redb 4.6, fjall 3.1)
//!
//! * redb: `Builder::new().set_cache_size(n).create(path)`; `begin_write()`;
//!   `txn.set_durability(Durability::Immediate | Durability::None)` returns a `Result` (only
//!   those two levels exist); `txn.set_quick_repair(true)`; `open_table` in each transaction.
//!   Reads need traits in scope: `ReadableDatabase` for `begin_read()`, `ReadableTable` for
//!   `iter()`, `ReadableTableMetadata` for `len()`. `iter()` yields
//!   `(AccessGuard<K>, AccessGuard<V>)` even for `V = ()`. A custom backend goes through
//!   `create_with_backend(impl StorageBackend)` with `backends::FileBackend::new(file)?`; its I/O
//!   methods return `std::io::Result`, the lock methods `Result<_, BackendError>`, and the lock
//!   methods must be delegated too. `set_repair_callback` reveals whether an open repaired.
//! * fjall: `Database::builder(path).cache_size(bytes).open()`,
//!   `db.keyspace(name, KeyspaceCreateOptions::default)` (a closure, not a value),
//!   `db.batch().durability(Some(PersistMode::SyncData))`, `batch.insert(&ks, k, v)`,
//!   `batch.remove(&ks, k)`, `batch.commit()`. Without `.durability(..)` a batch persists with
//!   `Buffer` (unless `manual_journal_persist(true)`). `ks.iter()` yields `Guard`s whose
//!   `key()` / `value()` return `Result`; `ks.len()` is a full scan. Journals are pre-sized to
//!   64 MiB with `set_len` (sparse): measure allocated blocks, not file lengths.
//!   `rotate_memtable_and_wait`, `major_compact`, `outstanding_flushes` and
//!   `active_compactions` are `#[doc(hidden)]`.

use std::fs;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde::Serialize;
use ulid::Ulid;

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

/// A message id as stored: the 16 big-endian bytes of a ULID (sorts by creation time).
type Id = [u8; 16];
/// A `finished` key: `done_ms` (u64 BE) followed by the id, so a scan goes oldest first.
type FinishedKey = [u8; 24];

/// Messages that complete their whole life in the disk/recovery data set.
const FULL_LIFECYCLES: u64 = 100_000;
/// Messages that are only accepted (still `active`) in the disk/recovery data set.
const ACCEPTED_ONLY: u64 = 100_000;
/// A submit lands this many messages after the accept (a few ms of traffic).
const SUBMIT_LAG: u64 = 512;
/// A final receipt lands this many messages after the accept (about a second of traffic), so
/// it rewrites pages that are no longer the hot tail of the tree.
const FINAL_LAG: u64 = 8_192;
/// Group commit size of the lifecycle runs: ~85 messages at each of the three stages.
const LIFECYCLE_BATCH: u64 = 256;
/// Cache given to both engines, so neither wins by simply holding more of the data set.
const CACHE_BYTES: usize = 256 << 20;
/// Distinct serialised values per stage; message `i` uses value `i % VALUE_POOL`.
const VALUE_POOL: usize = 1024;
/// Simulated clock of the ids: 10 ids per millisecond (10k msg/s), random within a millisecond.
const IDS_PER_MS: u64 = 10;
const BASE_MS: u64 = 1_750_000_000_000;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn id_ms(i: u64) -> u64 {
    BASE_MS + i / IDS_PER_MS
}

/// The id of message number `i`: deterministic, so the parent can find what a child wrote.
fn message_id(i: u64) -> Id {
    let random = (u128::from(splitmix64(i)) << 64 | u128::from(splitmix64(!i))) & ((1 << 80) - 1);
    Ulid::from_parts(id_ms(i), random).to_bytes()
}

fn finished_key(i: u64) -> FinishedKey {
    let mut key = [0; 24];
    key[..8].copy_from_slice(&(id_ms(i) + 2_500).to_be_bytes());
    key[8..].copy_from_slice(&message_id(i));
    key
}

/// Local mirror of `smsgate::message::Message` (same fields and serde shapes, so the same
/// postcard size), kept here so this bench does not break whenever the domain type changes.
#[derive(Serialize)]
struct StoredMessage {
    id: Ulid,
    account: String,
    to: String,
    country: String,
    from: String,
    text: String,
    kind: u8,
    encoding: u8,
    concat_ref: u8,
    segments: Vec<StoredSegment>,
    client_ref: Option<String>,
    callback_url: Option<String>,
    status: u8,
    carrier: Option<String>,
    error: Option<(String, String)>,
    created_at: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    done_at: Option<DateTime<Utc>>,
    attempts: u32,
}

#[derive(Serialize)]
struct StoredSegment {
    smsc_id: Option<String>,
    state: u8,
    error: Option<String>,
}

#[derive(Clone, Copy)]
enum Stage {
    Accepted,
    Submitted,
    Final,
}

fn sample_message(i: u64, stage: Stage) -> Vec<u8> {
    let r = splitmix64(i ^ 0xABCD);
    let code = r % 1_000_000;
    let text = match r % 3 {
        0 => format!(
            "Your ACME Bank verification code is {code:06}. It expires in 5 minutes. Never share \
             this code with anyone: ACME staff will never ask you for it. Not you? Call 0800 123 \
             4567."
        ),
        1 => format!(
            "Hi, your order #{:08} has shipped and arrives on {}/06. Track it at \
             https://trk.example.com/{:010x} - reply STOP to opt out of delivery updates.",
            r % 100_000_000,
            1 + r % 28,
            r >> 20
        ),
        _ => format!(
            "Dentalcare: your appointment is confirmed for {:02}/07 at {:02}:{:02}. Reply C to \
             cancel or call 020 7946 {:04}. Please arrive 10 minutes early.",
            1 + r % 28,
            8 + r % 10,
            (r >> 8) % 60,
            (r >> 16) % 10_000
        ),
    };
    let at = |offset_ms: u64| {
        Utc.timestamp_millis_opt((id_ms(i) + offset_ms) as i64)
            .single()
            .expect("valid timestamp")
    };
    let submitted = !matches!(stage, Stage::Accepted);
    let done = matches!(stage, Stage::Final);
    let segments = (0..2)
        .map(|s| StoredSegment {
            smsc_id: submitted.then(|| format!("{:016x}", splitmix64(i * 2 + s))),
            state: if done { 2 } else { u8::from(submitted) },
            error: None,
        })
        .collect();
    let message = StoredMessage {
        id: Ulid::from_bytes(message_id(i)),
        account: format!("acct-{:05}", r % 500),
        to: format!("+4477{:08}", r % 100_000_000),
        country: "GB".into(),
        from: "ACME".into(),
        text,
        kind: (r % 3) as u8,
        encoding: 0,
        concat_ref: r as u8,
        segments,
        client_ref: Some(format!("{:032x}", u128::from(r) << 64 | u128::from(!r))),
        callback_url: Some(format!(
            "https://hooks.example.com/sms/dlr?account={}",
            r % 500
        )),
        status: match stage {
            Stage::Accepted => 1,
            Stage::Submitted => 2,
            Stage::Final => 3,
        },
        carrier: submitted.then(|| "vodafone-uk".to_string()),
        error: None,
        created_at: at(0),
        send_at: None,
        expires_at: at(48 * 3_600_000),
        submitted_at: submitted.then(|| at(40)),
        done_at: done.then(|| at(2_500)),
        attempts: u32::from(submitted),
    };
    postcard::to_stdvec(&message).expect("postcard")
}

/// Pre-serialised values, so the timed loops measure the store and not postcard.
struct Values {
    accepted: Vec<Vec<u8>>,
    submitted: Vec<Vec<u8>>,
    final_: Vec<Vec<u8>>,
}

impl Values {
    fn new() -> Self {
        let pool = |stage| {
            (0..VALUE_POOL as u64)
                .map(|i| sample_message(i, stage))
                .collect()
        };
        Self {
            accepted: pool(Stage::Accepted),
            submitted: pool(Stage::Submitted),
            final_: pool(Stage::Final),
        }
    }

    fn get(&self, stage: Stage, i: u64) -> &[u8] {
        let pool = match stage {
            Stage::Accepted => &self.accepted,
            Stage::Submitted => &self.submitted,
            Stage::Final => &self.final_,
        };
        &pool[i as usize % VALUE_POOL]
    }

    fn mean_len(pool: &[Vec<u8>]) -> usize {
        pool.iter().map(Vec::len).sum::<usize>() / pool.len()
    }
}

/// One write of a message's life; a group commit applies a slice of them atomically.
enum Op<'a> {
    /// `messages[id] = value`, `active[id] = ()`.
    Accept { id: Id, value: &'a [u8] },
    /// `messages[id] = value`.
    Submitted { id: Id, value: &'a [u8] },
    /// `messages[id] = value`, delete `active[id]`, `finished[done_ms ++ id] = ()`.
    Final {
        id: Id,
        key: FinishedKey,
        value: &'a [u8],
    },
}

/// The gateway's writer loop, one group commit at a time. A commit carries `chunk` accepts of
/// new messages, the submits of messages accepted `SUBMIT_LAG` earlier and the final receipts
/// of messages accepted `FINAL_LAG` earlier (ids below `first` or from `end` on are skipped).
struct Pipeline {
    next: u64,
    first: u64,
    end: u64,
    chunk: u64,
    lifecycle: bool,
}

impl Pipeline {
    fn lifecycle(first: u64, end: u64, batch: u64) -> Self {
        Self {
            next: first,
            first,
            end,
            chunk: batch / 3,
            lifecycle: true,
        }
    }

    fn accept_only(first: u64, end: u64, batch: u64) -> Self {
        Self {
            next: first,
            first,
            end,
            chunk: batch,
            lifecycle: false,
        }
    }

    fn done(&self) -> bool {
        let tail = if self.lifecycle { FINAL_LAG } else { 0 };
        self.next >= self.end.saturating_add(tail)
    }

    /// Fills `ops` with the next group commit; returns how many messages it accepted.
    fn next_commit<'a>(&mut self, values: &'a Values, ops: &mut Vec<Op<'a>>) -> u64 {
        ops.clear();
        let start = self.next;
        self.next += self.chunk;
        let live = |i: u64| i >= self.first && i < self.end;
        let mut accepted = 0;
        for i in start..start + self.chunk {
            if live(i) {
                accepted += 1;
                ops.push(Op::Accept {
                    id: message_id(i),
                    value: values.get(Stage::Accepted, i),
                });
            }
            if !self.lifecycle {
                continue;
            }
            if let Some(s) = i.checked_sub(SUBMIT_LAG).filter(|&s| live(s)) {
                ops.push(Op::Submitted {
                    id: message_id(s),
                    value: values.get(Stage::Submitted, s),
                });
            }
            if let Some(f) = i.checked_sub(FINAL_LAG).filter(|&f| live(f)) {
                ops.push(Op::Final {
                    id: message_id(f),
                    key: finished_key(f),
                    value: values.get(Stage::Final, f),
                });
            }
        }
        accepted
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// What a recovery scan found: every `active` id with its message.
#[derive(Clone, Copy, Default)]
struct Recovered {
    active: u64,
    value_bytes: u64,
}

/// The store operations the gateway needs, one impl per engine.
trait Backend {
    /// One group commit: all `ops` atomically, durable as the variant promises when it returns.
    fn commit(&mut self, ops: &[Op<'_>]);
    /// Point read of `messages[id]`, in its own read snapshot; returns the value's length.
    fn message_len(&self, id: &Id) -> Option<usize>;
    /// What a restart does: walk `active` and read each message.
    fn recover(&self) -> Recovered;
    /// Number of rows in `messages`.
    fn message_count(&self) -> u64;
    /// Reclaims what the engine can (redb `compact`, fjall flush + major compaction) and closes.
    fn settle(self: Box<Self>);
    /// Waits (up to 3 s) until the engine's background work (fjall's memtable flushes and
    /// compactions) is done; redb has none.
    fn quiesce(&self) {}
}

/// An engine plus a durability setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// redb `Durability::Immediate`: one `fdatasync` per commit.
    RedbFsync,
    /// As above plus `set_quick_repair(true)`: commits also save the allocator state, so the open
    /// after a crash does not walk the whole file.
    RedbFsyncQuickRepair,
    /// redb `Durability::Immediate` on a `StorageBackend` whose `sync_data` is a no-op: every
    /// commit is written to the OS (survives kill -9), never fsynced (lost on an OS crash).
    RedbOs,
    /// redb `Durability::None`: the commit stays in this process; lost on kill -9.
    RedbNone,
    /// fjall batch with `PersistMode::SyncData` (`fdatasync` of the journal), like redb's sync.
    FjallSyncData,
    /// fjall batch with `PersistMode::SyncAll` (`fsync`).
    FjallSyncAll,
    /// fjall batch with `PersistMode::Buffer`: journal written to the OS, not synced.
    FjallBuffer,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::RedbFsync,
        Variant::RedbFsyncQuickRepair,
        Variant::RedbOs,
        Variant::RedbNone,
        Variant::FjallSyncData,
        Variant::FjallSyncAll,
        Variant::FjallBuffer,
    ];

    fn key(self) -> &'static str {
        match self {
            Variant::RedbFsync => "redb-fsync",
            Variant::RedbFsyncQuickRepair => "redb-fsync-qr",
            Variant::RedbOs => "redb-os",
            Variant::RedbNone => "redb-none",
            Variant::FjallSyncData => "fjall-fsync",
            Variant::FjallSyncAll => "fjall-syncall",
            Variant::FjallBuffer => "fjall-os",
        }
    }

    fn from_key(key: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|v| v.key() == key)
            .unwrap_or_else(|| panic!("unknown variant {key}"))
    }

    fn open(self, dir: &Path) -> Box<dyn Backend> {
        match self {
            Variant::RedbFsync => Box::new(RedbBackend::open(dir, RedbMode::Fsync, false)),
            Variant::RedbFsyncQuickRepair => {
                Box::new(RedbBackend::open(dir, RedbMode::Fsync, true))
            }
            Variant::RedbOs => Box::new(RedbBackend::open(dir, RedbMode::NoFsync, false)),
            Variant::RedbNone => Box::new(RedbBackend::open(dir, RedbMode::NonDurable, false)),
            Variant::FjallSyncData => {
                Box::new(FjallBackend::open(dir, fjall::PersistMode::SyncData))
            }
            Variant::FjallSyncAll => Box::new(FjallBackend::open(dir, fjall::PersistMode::SyncAll)),
            Variant::FjallBuffer => Box::new(FjallBackend::open(dir, fjall::PersistMode::Buffer)),
        }
    }
}

// --- redb ---------------------------------------------------------------------------------------

const MESSAGES: redb::TableDefinition<&Id, &[u8]> = redb::TableDefinition::new("messages");
const ACTIVE: redb::TableDefinition<&Id, ()> = redb::TableDefinition::new("active");
const FINISHED: redb::TableDefinition<&FinishedKey, ()> = redb::TableDefinition::new("finished");

#[derive(Clone, Copy, PartialEq, Eq)]
enum RedbMode {
    Fsync,
    NoFsync,
    NonDurable,
}

/// A file backend that writes through to the OS but never syncs: redb's commit protocol
/// unchanged, minus the `fdatasync`. The "os" durability redb itself does not offer.
#[derive(Debug)]
struct NoSyncFileBackend(redb::backends::FileBackend);

impl redb::StorageBackend for NoSyncFileBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// Calls of redb's repair callback: non-zero means the last open had to repair the file.
static REDB_REPAIR_CALLS: AtomicU64 = AtomicU64::new(0);

struct RedbBackend {
    db: redb::Database,
    durability: redb::Durability,
    quick_repair: bool,
}

impl RedbBackend {
    fn open(dir: &Path, mode: RedbMode, quick_repair: bool) -> Self {
        let path = dir.join("smsgate.redb");
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        REDB_REPAIR_CALLS.store(0, Ordering::Relaxed);
        builder.set_repair_callback(|_| {
            REDB_REPAIR_CALLS.fetch_add(1, Ordering::Relaxed);
        });
        let db = if mode == RedbMode::NoFsync {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .expect("open redb file");
            let backend = redb::backends::FileBackend::new(file).expect("file backend");
            builder.create_with_backend(NoSyncFileBackend(backend))
        } else {
            builder.create(&path)
        }
        .expect("open redb");
        let durability = if mode == RedbMode::NonDurable {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        };
        let mut backend = Self {
            db,
            durability,
            quick_repair,
        };
        backend.commit(&[]); // creates the three tables
        backend
    }
}

impl Backend for RedbBackend {
    fn commit(&mut self, ops: &[Op<'_>]) {
        let mut txn = self.db.begin_write().expect("begin_write");
        txn.set_durability(self.durability).expect("durability");
        txn.set_quick_repair(self.quick_repair);
        {
            let mut messages = txn.open_table(MESSAGES).expect("messages");
            let mut active = txn.open_table(ACTIVE).expect("active");
            let mut finished = txn.open_table(FINISHED).expect("finished");
            for op in ops {
                match op {
                    Op::Accept { id, value } => {
                        messages.insert(id, *value).expect("insert");
                        active.insert(id, ()).expect("insert");
                    }
                    Op::Submitted { id, value } => {
                        messages.insert(id, *value).expect("insert");
                    }
                    Op::Final { id, key, value } => {
                        messages.insert(id, *value).expect("insert");
                        active.remove(id).expect("remove");
                        finished.insert(key, ()).expect("insert");
                    }
                }
            }
        }
        txn.commit().expect("commit");
    }

    fn message_len(&self, id: &Id) -> Option<usize> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().expect("begin_read");
        let messages = txn.open_table(MESSAGES).expect("messages");
        let value = messages.get(id).expect("get");
        value.map(|v| v.value().len())
    }

    fn recover(&self) -> Recovered {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.db.begin_read().expect("begin_read");
        let active = txn.open_table(ACTIVE).expect("active");
        let messages = txn.open_table(MESSAGES).expect("messages");
        let mut found = Recovered::default();
        for entry in active.iter().expect("iter") {
            let (id, _) = entry.expect("entry");
            let value = messages.get(id.value()).expect("get").expect("message");
            found.active += 1;
            found.value_bytes += black_box(value.value()).len() as u64;
        }
        found
    }

    fn message_count(&self) -> u64 {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let txn = self.db.begin_read().expect("begin_read");
        txn.open_table(MESSAGES)
            .expect("messages")
            .len()
            .expect("len")
    }

    fn settle(mut self: Box<Self>) {
        while self.db.compact().expect("compact") {}
    }
}

// --- fjall --------------------------------------------------------------------------------------

struct FjallBackend {
    db: fjall::Database,
    messages: fjall::Keyspace,
    active: fjall::Keyspace,
    finished: fjall::Keyspace,
    persist: fjall::PersistMode,
}

impl FjallBackend {
    fn open(dir: &Path, persist: fjall::PersistMode) -> Self {
        let db = fjall::Database::builder(dir.join("fjall"))
            .cache_size(CACHE_BYTES as u64)
            .open()
            .expect("open fjall");
        let keyspace = |name| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .expect("keyspace")
        };
        Self {
            messages: keyspace("messages"),
            active: keyspace("active"),
            finished: keyspace("finished"),
            db,
            persist,
        }
    }
}

impl Backend for FjallBackend {
    fn commit(&mut self, ops: &[Op<'_>]) {
        let mut batch = self.db.batch().durability(Some(self.persist));
        for op in ops {
            match op {
                Op::Accept { id, value } => {
                    batch.insert(&self.messages, id, *value);
                    batch.insert(&self.active, id, []);
                }
                Op::Submitted { id, value } => {
                    batch.insert(&self.messages, id, *value);
                }
                Op::Final { id, key, value } => {
                    batch.insert(&self.messages, id, *value);
                    batch.remove(&self.active, id);
                    batch.insert(&self.finished, key, []);
                }
            }
        }
        batch.commit().expect("commit");
    }

    fn message_len(&self, id: &Id) -> Option<usize> {
        self.messages.get(id).expect("get").map(|v| v.len())
    }

    fn recover(&self) -> Recovered {
        let mut found = Recovered::default();
        for guard in self.active.iter() {
            let id = guard.key().expect("key");
            let value = self.messages.get(&id).expect("get").expect("message");
            found.active += 1;
            found.value_bytes += black_box(&value).len() as u64;
        }
        found
    }

    fn message_count(&self) -> u64 {
        self.messages.len().expect("len") as u64
    }

    fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let keyspaces = [&self.messages, &self.active, &self.finished];
        while Instant::now() < deadline
            && (self.db.outstanding_flushes() > 0
                || self.db.active_compactions() > 0
                || keyspaces.iter().any(|k| k.sealed_memtable_count() > 0))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn settle(self: Box<Self>) {
        for keyspace in [&self.messages, &self.active, &self.finished] {
            keyspace.rotate_memtable_and_wait().expect("flush");
            keyspace.major_compact().expect("compact");
        }
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .expect("persist");
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// Allocated bytes (what `du` reports) of everything under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Writes back every dirty page of the machine (`sync`), so a measurement does not pay for the
/// writeback of data that an earlier one left in the page cache.
fn sync_disks() {
    let _ = Command::new("sync").status();
}

/// Median latency of a raw 4 KiB append + `fdatasync`: the disk's fsync cost right now, to read
/// the fsync rows against (on a shared VM it varies by 10x from minute to minute).
fn fsync_probe() -> Duration {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fs::File::create(dir.path().join("probe")).expect("probe file");
    let block = [0x5a_u8; 4096];
    sync_disks();
    let mut times: Vec<Duration> = (0..100_u64)
        .map(|n| {
            let start = Instant::now();
            file.write_all_at(&block, n * 4096).expect("write");
            file.sync_data().expect("fdatasync");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// `(iterations, elapsed)` of each `iter_custom` call; the last `SAMPLES` are criterion's samples
/// (the earlier ones are its warm-up).
#[derive(Default)]
struct Samples(Vec<(u64, Duration)>);

const SAMPLES: usize = 10;

impl Samples {
    fn record(&mut self, iters: u64, elapsed: Duration) -> Duration {
        self.0.push((iters, elapsed));
        elapsed
    }

    /// Median seconds per iteration over criterion's samples.
    fn median_secs(&self) -> f64 {
        let skip = self.0.len().saturating_sub(SAMPLES);
        let mut per_iter: Vec<f64> = self.0[skip..]
            .iter()
            .map(|(n, d)| d.as_secs_f64() / *n as f64)
            .collect();
        per_iter.sort_by(f64::total_cmp);
        per_iter
            .get(per_iter.len() / 2)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

struct ThroughputRow {
    variant: Variant,
    /// (batch, messages per second, seconds per commit)
    accept: Vec<(u64, f64, f64)>,
    lifecycle: Option<f64>,
}

struct BuildRow {
    variant: Variant,
    lifecycle_rate: f64,
    accept_rate: f64,
    /// Bytes written per full lifecycle: to write syscalls, and to the block layer.
    wchar_per_message: f64,
    write_bytes_per_message: f64,
    disk_at_kill: u64,
    disk_settled: u64,
    recovery: Duration,
    /// redb only: whether the first open after the kill ran the repair (full-file walk).
    repaired: Option<bool>,
    recovered: Recovered,
    messages_after_kill: u64,
}

struct ReadRow {
    variant: Variant,
    point_read: f64,
    reopen: f64,
}

// ---------------------------------------------------------------------------------------------
// Child process: builds a data set, then is killed with SIGKILL by the parent
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "STORE_BENCH_CHILD";
const DIR_ENV: &str = "STORE_BENCH_DIR";

/// Runs in the child: writes, says `ready`, then waits to be killed (gives up after 5 minutes).
fn child_main(task: &str) -> ! {
    let (variant, task) = task.split_once(':').expect("variant:task");
    let variant = Variant::from_key(variant);
    let dir = std::env::var(DIR_ENV).expect(DIR_ENV);
    let mut store = variant.open(Path::new(&dir));
    let values = Values::new();
    let mut ops = Vec::new();
    match task {
        // The disk / recovery data set: 100k full lifecycles, then 100k accepted-only.
        "build" => {
            let io_before = proc_io();
            let start = Instant::now();
            let mut pipeline = Pipeline::lifecycle(0, FULL_LIFECYCLES, LIFECYCLE_BATCH);
            while !pipeline.done() {
                pipeline.next_commit(&values, &mut ops);
                store.commit(&ops);
            }
            let rate = FULL_LIFECYCLES as f64 / start.elapsed().as_secs_f64();
            println!("lifecycle_rate {rate}");
            let io_after = proc_io();
            for (name, n) in ["wchar", "write_bytes"]
                .into_iter()
                .enumerate()
                .map(|(k, n)| (n, k))
            {
                let per_message = (io_after[n] - io_before[n]) as f64 / FULL_LIFECYCLES as f64;
                println!("lifecycle_{name} {per_message}");
            }
            let start = Instant::now();
            let end = FULL_LIFECYCLES + ACCEPTED_ONLY;
            let mut pipeline = Pipeline::accept_only(FULL_LIFECYCLES, end, LIFECYCLE_BATCH);
            while !pipeline.done() {
                pipeline.next_commit(&values, &mut ops);
                store.commit(&ops);
            }
            let rate = ACCEPTED_ONLY as f64 / start.elapsed().as_secs_f64();
            println!("accept_rate {rate}");
        }
        // A short burst of acknowledged commits, to see what survives kill -9.
        "probe" => {
            let mut pipeline = Pipeline::accept_only(0, 3_200, 32);
            while !pipeline.done() {
                pipeline.next_commit(&values, &mut ops);
                store.commit(&ops);
            }
        }
        _ => panic!("unknown task {task}"),
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(300));
    std::process::abort();
}

/// Runs `variant:task` in a child process in `dir`, waits for `ready`, then kills it with
/// SIGKILL (`Child::kill`), i.e. a process crash with every acknowledged commit handed over.
fn run_child_and_kill(variant: Variant, task: &str, dir: &Path) -> Vec<(String, f64)> {
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .env(CHILD_ENV, format!("{}:{task}", variant.key()))
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stats = Vec::new();
    let mut ready = false;
    for line in stdout.lines() {
        let line = line.expect("child output");
        if line == "ready" {
            ready = true;
            break;
        }
        if let Some((name, value)) = line.split_once(' ') {
            stats.push((name.to_string(), value.parse().expect("number")));
        }
    }
    child.kill().expect("kill child");
    child.wait().expect("wait child");
    assert!(ready, "child {} {task} failed", variant.key());
    stats
}

/// `wchar` (bytes handed to write syscalls) and `write_bytes` (bytes this process caused to be
/// sent to the block layer) from /proc/self/io.
fn proc_io() -> [u64; 2] {
    let io = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or(0)
    };
    [field("wchar"), field("write_bytes")]
}

fn stat(stats: &[(String, f64)], name: &str) -> f64 {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .map_or(f64::NAN, |(_, v)| *v)
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// What survives kill -9 after 100 acknowledged commits of 32 accepts.
fn crash_probe(variant: Variant) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    run_child_and_kill(variant, "probe", dir.path());
    let store = variant.open(dir.path());
    (3_200, store.message_count())
}

/// A recovered store kept open for the read benches, with the directory it lives in.
type KeptStore = (Box<dyn Backend>, tempfile::TempDir);

/// Builds the 200k-message data set in a child, kills it, measures disk and the first open.
/// Returns the row and, for `keep`, the recovered store and its directory for the read benches.
fn build_and_recover(variant: Variant, keep: bool) -> (BuildRow, Option<KeptStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    sync_disks();
    let stats = run_child_and_kill(variant, "build", dir.path());
    let disk_at_kill = disk_bytes(dir.path());

    let start = Instant::now();
    let store = variant.open(dir.path());
    let recovered = store.recover();
    let recovery = start.elapsed();
    let repaired = matches!(
        variant,
        Variant::RedbFsync | Variant::RedbFsyncQuickRepair | Variant::RedbOs
    )
    .then(|| REDB_REPAIR_CALLS.load(Ordering::Relaxed) > 0);
    assert_eq!(
        recovered.active,
        ACCEPTED_ONLY,
        "{}: active after kill",
        variant.key()
    );
    let messages_after_kill = store.message_count();
    assert_eq!(messages_after_kill, FULL_LIFECYCLES + ACCEPTED_ONLY);

    let mut row = BuildRow {
        variant,
        lifecycle_rate: stat(&stats, "lifecycle_rate"),
        accept_rate: stat(&stats, "accept_rate"),
        wchar_per_message: stat(&stats, "lifecycle_wchar"),
        write_bytes_per_message: stat(&stats, "lifecycle_write_bytes"),
        disk_at_kill,
        disk_settled: 0,
        recovery,
        repaired,
        recovered,
        messages_after_kill,
    };
    if keep {
        return (row, Some((store, dir)));
    }
    store.settle();
    row.disk_settled = disk_bytes(dir.path());
    (row, None)
}

/// What a write benchmark measures: accepts only at a batch size, or the full lifecycle.
#[derive(Clone, Copy)]
enum WriteLoad {
    Accept(u64),
    Lifecycle,
}

impl WriteLoad {
    fn label(self) -> String {
        match self {
            WriteLoad::Accept(batch) => format!("accept b={batch}"),
            WriteLoad::Lifecycle => format!("lifecycle b={LIFECYCLE_BATCH}"),
        }
    }
}

/// A fresh store in steady state for `load`: 20k messages already accepted, or the lifecycle
/// pipeline filled until final receipts flow (`FINAL_LAG` messages in flight).
struct Prepared {
    store: Box<dyn Backend>,
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
}

impl Prepared {
    fn new(variant: Variant, load: WriteLoad, values: &Values) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = variant.open(dir.path());
        let mut ops = Vec::new();
        let pipeline = match load {
            WriteLoad::Accept(batch) => {
                let mut prefill = Pipeline::accept_only(0, 20_000, 2_000);
                while !prefill.done() {
                    prefill.next_commit(values, &mut ops);
                    store.commit(&ops);
                }
                Pipeline::accept_only(20_000, u64::MAX, batch)
            }
            WriteLoad::Lifecycle => {
                let mut pipeline = Pipeline::lifecycle(0, u64::MAX, LIFECYCLE_BATCH);
                while pipeline.next < FINAL_LAG + 4 * LIFECYCLE_BATCH {
                    pipeline.next_commit(values, &mut ops);
                    store.commit(&ops);
                }
                pipeline
            }
        };
        sync_disks();
        Self {
            store,
            pipeline,
            _dir: dir,
        }
    }

    /// Runs `iters` group commits; returns (messages accepted, time spent in commits).
    fn run<'a>(
        &mut self,
        values: &'a Values,
        iters: u64,
        ops: &mut Vec<Op<'a>>,
    ) -> (u64, Duration) {
        let mut elapsed = Duration::ZERO;
        let mut messages = 0;
        for _ in 0..iters {
            messages += self.pipeline.next_commit(values, ops);
            let start = Instant::now();
            self.store.commit(ops);
            elapsed += start.elapsed();
        }
        (messages, elapsed)
    }
}

/// Rounds of the head-to-head runs, and the length of one side's turn in a round.
const ROUNDS: usize = 8;
const TURN: Duration = Duration::from_millis(300);

struct HeadToHead {
    load: WriteLoad,
    variants: [Variant; 2],
    /// Median messages/s of each side over the rounds.
    rates: [f64; 2],
}

/// Alternates two variants on the same load in short turns (ABBA order), so both see the same
/// disk: on a shared VM the fsync cost drifts by 10x within a minute, which skews results taken
/// a minute apart (as criterion's are). After each turn the store is quiesced (untimed), so
/// fjall's background flushes and compactions run alongside its own turns, as in production,
/// but do not spill into (and slow down) redb's.
fn head_to_head(values: &Values, load: WriteLoad, variants: [Variant; 2]) -> HeadToHead {
    let mut sides = variants.map(|v| Prepared::new(v, load, values));
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ops = Vec::new();
    for round in 0..ROUNDS {
        for turn in 0..2 {
            let side = if round % 2 == 0 { turn } else { 1 - turn };
            let deadline = Instant::now() + TURN;
            let (mut messages, mut busy) = (0, Duration::ZERO);
            while Instant::now() < deadline {
                let (m, d) = sides[side].run(values, 1, &mut ops);
                messages += m;
                busy += d;
            }
            rates[side].push(messages as f64 / busy.as_secs_f64());
            sides[side].store.quiesce();
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b] = rates;
    HeadToHead {
        load,
        variants,
        rates: [median(a), median(b)],
    }
}

fn bench_writes(c: &mut Criterion, values: &Values) -> Vec<ThroughputRow> {
    let mut rows = Vec::new();
    let accept_variants = [
        Variant::RedbFsync,
        Variant::RedbOs,
        Variant::RedbNone,
        Variant::FjallSyncData,
        Variant::FjallSyncAll,
        Variant::FjallBuffer,
    ];
    let lifecycle_variants = [
        Variant::RedbFsync,
        Variant::RedbFsyncQuickRepair,
        Variant::RedbOs,
        Variant::RedbNone,
        Variant::FjallSyncData,
        Variant::FjallBuffer,
    ];
    for variant in Variant::ALL {
        rows.push(ThroughputRow {
            variant,
            accept: Vec::new(),
            lifecycle: None,
        });
    }
    let row = |rows: &mut Vec<ThroughputRow>, v: Variant| -> usize {
        rows.iter().position(|r| r.variant == v).expect("row")
    };

    let mut group = c.benchmark_group("accept");
    for batch in [1_u64, 32, 512] {
        group.throughput(Throughput::Elements(batch));
        for variant in accept_variants {
            let mut prepared = Prepared::new(variant, WriteLoad::Accept(batch), values);
            let mut ops = Vec::new();
            let mut samples = Samples::default();
            group.bench_function(BenchmarkId::new(variant.key(), batch), |b| {
                b.iter_custom(|iters| {
                    let (_, elapsed) = prepared.run(values, iters, &mut ops);
                    samples.record(iters, elapsed)
                });
            });
            let secs = samples.median_secs();
            let i = row(&mut rows, variant);
            rows[i].accept.push((batch, batch as f64 / secs, secs));
        }
    }
    group.finish();

    let mut group = c.benchmark_group("lifecycle");
    let per_commit = LIFECYCLE_BATCH / 3;
    group.throughput(Throughput::Elements(per_commit));
    for variant in lifecycle_variants {
        let mut prepared = Prepared::new(variant, WriteLoad::Lifecycle, values);
        let mut ops = Vec::new();
        let mut samples = Samples::default();
        group.bench_function(BenchmarkId::new(variant.key(), LIFECYCLE_BATCH), |b| {
            b.iter_custom(|iters| {
                let (_, elapsed) = prepared.run(values, iters, &mut ops);
                samples.record(iters, elapsed)
            });
        });
        let i = row(&mut rows, variant);
        rows[i].lifecycle = Some(per_commit as f64 / samples.median_secs());
    }
    group.finish();
    rows
}

fn bench_reads(
    c: &mut Criterion,
    variant: Variant,
    mut store: Box<dyn Backend>,
    dir: &Path,
) -> ReadRow {
    let total = FULL_LIFECYCLES + ACCEPTED_ONLY;
    let ids: Vec<Id> = (0..4_096)
        .map(|n| message_id(splitmix64(n) % total))
        .collect();

    let mut group = c.benchmark_group("point_read");
    let mut samples = Samples::default();
    group.bench_function(variant.key(), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for n in 0..iters {
                let id = &ids[n as usize % ids.len()];
                black_box(store.message_len(id).expect("existing id"));
            }
            samples.record(iters, start.elapsed())
        });
    });
    group.finish();
    let point_read = samples.median_secs();

    // Restart after a clean shutdown: close, then open + walk `active` + read each message.
    let mut group = c.benchmark_group("reopen_recover");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let mut samples = Samples::default();
    let mut slot = Some(store);
    group.bench_function(variant.key(), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                drop(slot.take());
                let start = Instant::now();
                let reopened = variant.open(dir);
                let found = reopened.recover();
                elapsed += start.elapsed();
                assert_eq!(found.active, ACCEPTED_ONLY);
                slot = Some(reopened);
            }
            samples.record(iters, elapsed)
        });
    });
    group.finish();
    store = slot.take().expect("store");
    let reopen = samples.median_secs();
    store.settle();
    ReadRow {
        variant,
        point_read,
        reopen,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    if let Ok(task) = std::env::var(CHILD_ENV) {
        child_main(&task);
    }
    let started = Instant::now();
    let fsync_before = fsync_probe();
    let values = Values::new();
    eprintln!(
        "value sizes (postcard bytes, mean): accepted {}, submitted {}, final {}",
        Values::mean_len(&values.accepted),
        Values::mean_len(&values.submitted),
        Values::mean_len(&values.final_)
    );

    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1_500))
        .without_plots()
        .configure_from_args();

    // Phase 1: redb and fjall interleaved turn by turn on the same writes, each pair preceded
    // by a raw fsync probe.
    let fsync_pair = [Variant::RedbFsync, Variant::FjallSyncData];
    let os_pair = [Variant::RedbOs, Variant::FjallBuffer];
    let duels: Vec<(Duration, HeadToHead)> = [
        (WriteLoad::Accept(1), fsync_pair),
        (WriteLoad::Accept(512), fsync_pair),
        (WriteLoad::Lifecycle, fsync_pair),
        (WriteLoad::Accept(1), os_pair),
        (WriteLoad::Lifecycle, os_pair),
    ]
    .into_iter()
    .map(|(load, pair)| (fsync_probe(), head_to_head(&values, load, pair)))
    .collect();

    // Phase 2: crash semantics, disk use and recovery after kill -9 (child processes).
    let probes: Vec<(Variant, (u64, u64))> =
        [Variant::RedbNone, Variant::RedbOs, Variant::FjallBuffer]
            .into_iter()
            .map(|v| (v, crash_probe(v)))
            .collect();
    let mut builds = Vec::new();
    let mut kept = Vec::new();
    for (variant, keep) in [
        (Variant::RedbFsync, true),
        (Variant::RedbFsyncQuickRepair, false),
        (Variant::RedbOs, false),
        (Variant::FjallSyncData, true),
        (Variant::FjallBuffer, false),
    ] {
        let (row, store) = build_and_recover(variant, keep);
        builds.push(row);
        if let Some(store) = store {
            kept.push((variant, store));
        }
    }

    // Phase 3: write throughput (criterion).
    let throughput = bench_writes(&mut c, &values);

    // Phase 4: point reads and clean restarts on the 200k-message data sets.
    let mut reads = Vec::new();
    for (variant, (store, dir)) in kept {
        let row = bench_reads(&mut c, variant, store, dir.path());
        if let Some(build) = builds.iter_mut().find(|b| b.variant == variant) {
            build.disk_settled = disk_bytes(dir.path());
        }
        reads.push(row);
    }
    c.final_summary();
    let fsync_after = fsync_probe();

    // Summary.
    eprintln!();
    eprintln!(
        "== store_backends summary ({:.0} s) ==",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "raw 4 KiB append + fdatasync, median: {:.0} us at start, {:.0} us at end",
        fsync_before.as_secs_f64() * 1e6,
        fsync_after.as_secs_f64() * 1e6
    );
    eprintln!(
        "Write throughput, messages/s (median of 10 criterion samples; latency = commit time at batch 1)"
    );
    eprintln!(
        "{:<15} {:>11} {:>9} {:>11} {:>11} {:>15} | {:>13} {:>13}",
        "variant",
        "accept b=1",
        "(lat)",
        "accept b=32",
        "accept b=512",
        "lifecycle b=256",
        "build lifecyc",
        "build accept"
    );
    for row in &throughput {
        let accept = |batch: u64| row.accept.iter().find(|a| a.0 == batch);
        let rate = |batch| accept(batch).map_or("-".into(), |a| format!("{:.0}", a.1));
        let latency = accept(1).map_or("-".into(), |a| format!("{:.0}us", a.2 * 1e6));
        let build = builds.iter().find(|b| b.variant == row.variant);
        eprintln!(
            "{:<15} {:>11} {:>9} {:>11} {:>11} {:>15} | {:>13} {:>13}",
            row.variant.key(),
            rate(1),
            latency,
            rate(32),
            rate(512),
            row.lifecycle.map_or("-".into(), |r| format!("{r:.0}")),
            build.map_or("-".into(), |b| format!("{:.0}", b.lifecycle_rate)),
            build.map_or("-".into(), |b| format!("{:.0}", b.accept_rate)),
        );
    }
    eprintln!();
    eprintln!(
        "Head-to-head, messages/s: median of {ROUNDS} alternating {} ms turns (same disk conditions)",
        TURN.as_millis()
    );
    for (sync, d) in &duels {
        eprintln!(
            "{:<17} {:<13} {:>8.0}   {:<13} {:>8.0}   redb/fjall {:.2}   (raw sync {:.0} us)",
            d.load.label(),
            d.variants[0].key(),
            d.rates[0],
            d.variants[1].key(),
            d.rates[1],
            d.rates[0] / d.rates[1],
            sync.as_secs_f64() * 1e6
        );
    }
    eprintln!();
    eprintln!(
        "Disk and recovery: {FULL_LIFECYCLES} full lifecycles + {ACCEPTED_ONLY} accepted-only, writer killed with SIGKILL"
    );
    eprintln!(
        "{:<15} {:>12} {:>9} {:>13} {:>9} {:>16} {:>7} {:>14}",
        "variant",
        "disk at kill",
        "B/msg",
        "disk settled",
        "B/msg",
        "open+scan",
        "repair",
        "active/msgs"
    );
    let messages = FULL_LIFECYCLES + ACCEPTED_ONLY;
    for b in &builds {
        eprintln!(
            "{:<15} {:>8.1} MiB {:>9} {:>9.1} MiB {:>9} {:>13.0} ms {:>7} {:>14}",
            b.variant.key(),
            mib(b.disk_at_kill),
            b.disk_at_kill / messages,
            mib(b.disk_settled),
            b.disk_settled / messages,
            b.recovery.as_secs_f64() * 1e3,
            match b.repaired {
                Some(true) => "yes",
                Some(false) => "no",
                None => "replay",
            },
            format!("{}/{}", b.recovered.active, b.messages_after_kill),
        );
    }
    eprintln!();
    eprintln!("Bytes written per full lifecycle (100k lifecycles in the child, /proc/self/io)");
    for b in &builds {
        eprintln!(
            "{:<15} to write(): {:>7.0} B   to the block layer: {:>7.0} B",
            b.variant.key(),
            b.wchar_per_message,
            b.write_bytes_per_message
        );
    }
    eprintln!();
    eprintln!("Reads on the 200k data set (after the post-crash open)");
    for r in &reads {
        eprintln!(
            "{:<15} point read {:>7.2} us   clean reopen + scan 100k active {:>8.1} ms",
            r.variant.key(),
            r.point_read * 1e6,
            r.reopen * 1e3
        );
    }
    eprintln!();
    eprintln!("Crash probe: 100 acknowledged commits x 32 accepts, then SIGKILL");
    for (variant, (acked, survived)) in &probes {
        eprintln!(
            "{:<15} acked {acked:>5}  survived {survived:>5}",
            variant.key()
        );
    }
}
