//! Group commit: one thread owns every write. Requests queue their writes;
//! the thread takes everything that queued up while the previous commit was
//! syncing and commits it as one batch with one sync. Under load, many
//! requests share each fsync; alone, a request waits for exactly one.
//!
//! On a disk whose sync takes a few hundred microseconds the writer would
//! otherwise commit thousands of times a second with a handful of writes
//! each, and every sync costs CPU in the kernel. [`GroupCommit::min_interval`]
//! spaces commits out: a commit starts no sooner than that long after the
//! previous one started, so under load each sync carries more writes, while
//! a request on an idle store still waits for one sync only.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::kv::{Kv, Write};
use crate::metrics::Metrics;
use crate::queue::StoreError;

/// How the writer groups writes into commits.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommit {
    /// Most writes in one commit.
    pub max_batch: usize,
    /// Least time from the start of one commit to the start of the next.
    pub min_interval: Duration,
    /// Commit to smsgate's write-ahead log and let fjall apply behind it
    /// (the embedded store; see `queue/durable/wal.rs`).
    pub write_ahead_log: bool,
    /// With the write-ahead log: how long fjall's applier gathers commits
    /// before it applies them as one batch.
    pub apply_delay: Duration,
}

impl GroupCommit {
    /// The grouping `[store]` configures.
    pub fn from_config(config: &crate::config::StoreConfig) -> Self {
        Self {
            max_batch: config.max_batch,
            min_interval: Duration::from_micros(config.commit_interval_us),
            write_ahead_log: config.write_ahead_log,
            apply_delay: Duration::from_millis(config.apply_delay_ms),
        }
    }
}

/// Writes waiting to be committed, and who to tell.
struct Job {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the writer thread.
pub(crate) struct Writer {
    tx: std::sync::Mutex<Option<Sender<Job>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread over `kv`.
    pub(crate) fn start(
        kv: Arc<Kv>,
        sync: bool,
        group: GroupCommit,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("smsgate-store-writer".into())
            .spawn(move || run(&kv, &rx, sync, group, &metrics))
            .ok();
        Self {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(thread),
        }
    }

    /// Queues writes for the next group commit; await the receiver for the
    /// outcome. Never blocks, so it may be called under a lock to keep the
    /// order of writes equal to the order of the in-memory changes.
    pub(crate) fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send(Job { writes, done }));
        if let Some(Err(mpsc::SendError(job))) = sent {
            let _ = job
                .done
                .send(Err(StoreError::Backend("store writer stopped".into())));
        }
        rx
    }

    /// Commits what is queued and stops the thread (blocking).
    pub(crate) fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Awaits a submitted commit.
pub(crate) async fn committed(
    rx: oneshot::Receiver<Result<(), StoreError>>,
) -> Result<(), StoreError> {
    rx.await
        .unwrap_or_else(|_| Err(StoreError::Backend("store writer stopped".into())))
}

fn run(kv: &Kv, rx: &Receiver<Job>, sync: bool, group: GroupCommit, metrics: &Metrics) {
    let max_batch = group.max_batch.max(1);
    let mut last_start: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        if let Some(wait) = last_start
            .map(|at| at + group.min_interval)
            .and_then(|next| next.checked_duration_since(Instant::now()))
        {
            // Let more writes gather for this sync (the thread owns no lock).
            std::thread::sleep(wait);
        }
        let mut size = first.writes.len();
        let mut jobs = vec![first];
        while size < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.writes.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        last_start = Some(started);
        let writes = jobs
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.writes))
            .collect();
        let result = kv.commit(writes, sync);
        metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.store_commit_writes.observe(size as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        for job in jobs {
            let _ = job.done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::durable::kv::{FjallKv, Space};

    fn start(dir: &std::path::Path, min_interval: Duration) -> (Writer, Arc<Metrics>) {
        let kv = Arc::new(Kv::Fjall(FjallKv::open(dir, None).expect("opens")));
        let metrics = Arc::new(Metrics::new());
        let group = GroupCommit {
            max_batch: 4096,
            min_interval,
            write_ahead_log: false,
            apply_delay: Duration::ZERO,
        };
        (Writer::start(kv, true, group, metrics.clone()), metrics)
    }

    fn put(i: u32) -> Vec<Write> {
        vec![Write::Put(
            Space::Messages,
            i.to_be_bytes().to_vec(),
            b"v".to_vec(),
        )]
    }

    #[tokio::test]
    async fn writes_arriving_within_the_interval_share_one_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, metrics) = start(dir.path(), Duration::from_millis(500));
        // The first write finds an idle writer and is committed at once ...
        committed(writer.submit(put(0))).await.expect("committed");
        // ... the next 100 trickle in, one a millisecond, while the interval
        // runs (each would have its own commit without it) and share one.
        let mut pending = Vec::new();
        for i in 1..=100 {
            pending.push(writer.submit(put(i)));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for rx in pending {
            committed(rx).await.expect("committed");
        }
        let commits = metrics.store_commit_seconds.get_sample_count();
        assert!(commits <= 3, "101 writes took {commits} commits");
        writer.stop();
    }

    #[tokio::test]
    async fn without_an_interval_each_lone_write_commits_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, metrics) = start(dir.path(), Duration::ZERO);
        for i in 0..20 {
            committed(writer.submit(put(i))).await.expect("committed");
        }
        assert_eq!(metrics.store_commit_seconds.get_sample_count(), 20);
        writer.stop();
    }
}
