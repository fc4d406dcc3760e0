//! fjall applied behind the write-ahead log ([`super::wal`]).
//!
//! A commit is done once its batch is in the log; the batch then waits in
//! the [`Overlay`] (what reads see first) while the applier thread writes it
//! to fjall, and leaves the overlay when fjall has it. A read therefore sees
//! every committed write whether or not fjall has applied it yet, and a
//! stall inside fjall delays only the applier, not the commit. The applier
//! falls at most [`MAX_PENDING_WRITES`] behind; beyond that a commit waits.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus::Histogram;

use super::kv::{Space, Write};
use super::wal::{self, Wal};
use crate::queue::StoreError;

/// Most writes committed to the log but not yet applied to fjall.
pub(crate) const MAX_PENDING_WRITES: usize = 256 * 1024;

/// A committed write fjall does not have yet.
struct Pending {
    seq: u64,
    batch: Arc<Vec<Write>>,
    index: usize,
}

impl Pending {
    fn value(&self) -> Option<&[u8]> {
        match &self.batch[self.index] {
            Write::Put(_, _, v) => Some(v),
            Write::Delete(..) => None,
        }
    }
}

/// What is committed but not yet in fjall, per keyspace, by key.
pub(crate) struct Overlay {
    spaces: Vec<RwLock<BTreeMap<Vec<u8>, Pending>>>,
}

impl Overlay {
    fn new() -> Self {
        Self {
            spaces: Space::ALL.iter().map(|_| RwLock::default()).collect(),
        }
    }

    fn space(&self, s: Space) -> &RwLock<BTreeMap<Vec<u8>, Pending>> {
        &self.spaces[s as usize]
    }

    /// The pending write of `key`: `Some(None)` if it is a delete, `None` if
    /// nothing is pending (fjall has the latest).
    pub(crate) fn get(&self, s: Space, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let map = self.space(s).read().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|p| p.value().map(<[u8]>::to_vec))
    }

    /// The pending writes with keys from `lower` (inclusive) to `upper`
    /// (exclusive; `None`: to the end), in key order; values only if asked.
    pub(crate) fn range(
        &self,
        s: Space,
        lower: &[u8],
        upper: Option<&[u8]>,
        values: bool,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let map = self.space(s).read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Vec::new();
        }
        let bounds = (
            Bound::Included(lower),
            upper.map_or(Bound::Unbounded, Bound::Excluded),
        );
        map.range::<[u8], _>(bounds)
            .map(|(k, p)| {
                let value = p
                    .value()
                    .map(|v| if values { v.to_vec() } else { Vec::new() });
                (k.clone(), value)
            })
            .collect()
    }

    /// The keyspaces a batch writes to, each once, in order of first use.
    fn spaces_of(batch: &[Write]) -> impl Iterator<Item = Space> {
        let mut seen = 0u32;
        let mut order = Vec::with_capacity(4);
        for w in batch {
            let s = w.target().0;
            if seen & (1 << s as u32) == 0 {
                seen |= 1 << s as u32;
                order.push(s);
            }
        }
        order.into_iter()
    }

    /// Adds a committed batch; each keyspace's lock is taken once.
    fn insert(&self, seq: u64, batch: &Arc<Vec<Write>>) {
        for s in Self::spaces_of(batch) {
            let mut map = self.space(s).write().unwrap_or_else(|p| p.into_inner());
            for (index, w) in batch.iter().enumerate() {
                let (ws, key) = w.target();
                if ws == s {
                    let pending = Pending {
                        seq,
                        batch: batch.clone(),
                        index,
                    };
                    map.insert(key.to_vec(), pending);
                }
            }
        }
    }

    /// Forgets the batch's writes that no later batch overwrote; each
    /// keyspace's lock is taken once.
    fn remove(&self, seq: u64, batch: &[Write]) {
        for s in Self::spaces_of(batch) {
            let mut map = self.space(s).write().unwrap_or_else(|p| p.into_inner());
            for w in batch {
                let (ws, key) = w.target();
                if ws == s && map.get(key).is_some_and(|p| p.seq == seq) {
                    map.remove(key);
                }
            }
        }
    }
}

/// Where the applier has got to.
#[derive(Default)]
struct State {
    /// Batches applied (the next sequence number to apply).
    applied: u64,
    /// Writes committed to the log, not yet applied.
    pending: usize,
    /// Why applying stopped, if it did.
    failed: Option<String>,
}

#[derive(Default)]
struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_while(
        &self,
        mut until: impl FnMut(&State) -> bool,
    ) -> std::sync::MutexGuard<'_, State> {
        self.changed
            .wait_while(self.lock(), |s| s.failed.is_none() && until(s))
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// fjall as the applier sees it: apply a batch, make everything durable.
pub(crate) trait Target: Send + 'static {
    /// Applies a batch without syncing (the log holds it durably).
    fn apply(&self, batch: &[Write]) -> Result<(), StoreError>;
    /// Syncs everything applied so far.
    fn persist(&self) -> Result<(), StoreError>;
}

/// A batch on its way to fjall.
struct Job {
    seq: u64,
    batch: Arc<Vec<Write>>,
    /// A log segment holding only earlier batches: remove it once fjall
    /// has synced them.
    closed: Option<PathBuf>,
}

/// The log, the overlay and the applier thread.
pub(crate) struct Ahead {
    wal: Mutex<Wal>,
    overlay: Arc<Overlay>,
    progress: Arc<Progress>,
    tx: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ahead {
    /// Starts the applier over `target` with a new, empty log in `dir`.
    /// Whatever an earlier log in `dir` holds must have been replayed into
    /// `target` and made durable before ([`Wal::replay`]).
    pub(crate) fn start(
        dir: &std::path::Path,
        sync: bool,
        target: impl Target,
        apply_seconds: Option<Histogram>,
    ) -> Result<Self, StoreError> {
        let wal = Wal::create(dir, sync)?;
        let overlay = Arc::new(Overlay::new());
        let progress = Arc::new(Progress::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (overlay, progress) = (overlay.clone(), progress.clone());
            std::thread::Builder::new()
                .name("smsgate-store-applier".into())
                .spawn(move || run(&rx, &target, &overlay, &progress, apply_seconds))
                .map_err(|e| StoreError::Backend(format!("cannot start the store applier: {e}")))?
        };
        Ok(Self {
            wal: Mutex::new(wal),
            overlay,
            progress,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// What reads must see before fjall.
    pub(crate) fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Commits a batch: appends it to the log (synced if the log syncs) and
    /// queues it for fjall. Waits first if the applier is too far behind.
    pub(crate) fn commit(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut state = self
                .progress
                .wait_while(|s| s.pending > 0 && s.pending + batch.len() > MAX_PENDING_WRITES);
            if let Some(why) = &state.failed {
                return Err(StoreError::Backend(format!("store applier stopped: {why}")));
            }
            state.pending += batch.len();
        }
        let (seq, closed) = match wal.append(&batch) {
            Ok(appended) => appended,
            Err(e) => {
                self.progress.lock().pending -= batch.len();
                return Err(e);
            }
        };
        let batch = Arc::new(batch);
        self.overlay.insert(seq, &batch);
        let job = Job { seq, batch, closed };
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            return Err(StoreError::Backend("store applier stopped".into()));
        }
        Ok(())
    }

    /// Waits until fjall has every committed batch, syncs it and empties
    /// the log.
    pub(crate) fn persist(&self, target: &impl Target) -> Result<(), StoreError> {
        let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        let committed = wal.next_seq();
        {
            let state = self.progress.wait_while(|s| s.applied < committed);
            if let Some(why) = &state.failed {
                return Err(StoreError::Backend(format!("store applier stopped: {why}")));
            }
        }
        target.persist()?;
        wal::remove_segments(&wal.clear()?);
        Ok(())
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: &Receiver<Job>,
    target: &impl Target,
    overlay: &Overlay,
    progress: &Progress,
    apply_seconds: Option<Histogram>,
) {
    let mut closed: Vec<PathBuf> = Vec::new();
    while let Ok(job) = rx.recv() {
        let started = Instant::now();
        closed.extend(job.closed);
        let result = target.apply(&job.batch).and_then(|()| {
            if closed.is_empty() {
                return Ok(());
            }
            target.persist()?;
            wal::remove_segments(&closed);
            closed.clear();
            Ok(())
        });
        if let Err(e) = result {
            // The overlay keeps the batch (and every later one), so reads
            // stay right; commits fail from now on.
            tracing::error!(error = %e, "applying the write-ahead log to fjall failed");
            progress.lock().failed = Some(e.to_string());
            progress.changed.notify_all();
            return;
        }
        overlay.remove(job.seq, &job.batch);
        if let Some(h) = &apply_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        {
            let mut state = progress.lock();
            state.applied = job.seq + 1;
            state.pending -= job.batch.len();
        }
        progress.changed.notify_all();
    }
}
