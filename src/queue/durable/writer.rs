//! Group commit: one thread owns every write. Requests queue their writes;
//! the thread takes everything that queued up while the previous commit was
//! syncing and commits it as one batch with one sync. Under load, many
//! requests share each fsync; alone, a request waits for exactly one.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::kv::{Kv, Write};
use crate::metrics::Metrics;
use crate::queue::StoreError;

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
    pub(crate) fn start(kv: Arc<Kv>, sync: bool, max_batch: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("smsgate-store-writer".into())
            .spawn(move || run(&kv, &rx, sync, max_batch.max(1), &metrics))
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

fn run(kv: &Kv, rx: &Receiver<Job>, sync: bool, max_batch: usize, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
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
        let result = kv.commit(jobs.iter().flat_map(|j| j.writes.iter()), sync);
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
