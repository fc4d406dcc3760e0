//! fjall applied behind the write-ahead log ([`super::wal`]).
//!
//! A commit is done once its batch is in the log; the batch then waits in
//! the [`Overlay`] (what reads see first) while the applier thread writes it
//! to fjall, and leaves the overlay when fjall has it. A read therefore sees
//! every committed write whether or not fjall has applied it yet, and a
//! stall inside fjall delays only the applier, not the commit. The applier
//! falls at most [`MAX_PENDING_WRITES`] behind; beyond that a commit waits.
//!
//! The applier takes batches in groups: what was committed within
//! `store.apply_delay_ms` of the group's first batch goes to fjall as one
//! batch holding only the last write of each key. A message's record is
//! rewritten at each status change and its index entries (ready, tracked)
//! are put and deleted again within milliseconds, so many of those writes
//! never reach fjall's memtable (less CPU, fewer memtable write-outs).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::Histogram;

use super::kv::{Space, Write};
use super::wal::{self, Wal};
use crate::queue::StoreError;

/// Most writes committed to the log but not yet applied to fjall.
pub(crate) const MAX_PENDING_WRITES: usize = 256 * 1024;

/// Most writes the applier gathers into one group before applying it.
const MAX_GROUP_WRITES: usize = 64 * 1024;

/// The write-ahead log's settings.
pub(crate) struct AheadLog {
    /// fdatasync every commit.
    pub(crate) sync: bool,
    /// How long the applier gathers committed batches before it applies
    /// them to fjall as one (only the last write of each key).
    pub(crate) apply_delay: Duration,
    /// Observes how long fjall takes to apply each group.
    pub(crate) apply_seconds: Option<Histogram>,
}

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
    /// Stops after `puts` puts: the first `puts` entries of the range are
    /// then among fjall's and these, so later ones cannot matter.
    pub(crate) fn range(
        &self,
        s: Space,
        lower: &[u8],
        upper: Option<&[u8]>,
        values: bool,
        puts: usize,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let map = self.space(s).read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Vec::new();
        }
        let bounds = (
            Bound::Included(lower),
            upper.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mut out = Vec::new();
        let mut seen = 0;
        for (k, p) in map.range::<[u8], _>(bounds) {
            if seen == puts {
                break;
            }
            let value = p
                .value()
                .map(|v| if values { v.to_vec() } else { Vec::new() });
            seen += usize::from(value.is_some());
            out.push((k.clone(), value));
        }
        out
    }

    /// The keyspaces a batch writes to, each once (no allocation: this runs
    /// for every commit on the writer and the applier thread).
    fn spaces_of(batch: &[Write]) -> impl Iterator<Item = Space> {
        let used = batch
            .iter()
            .fold(0u32, |used, w| used | 1 << w.target().0 as u32);
        Space::ALL
            .into_iter()
            .filter(move |s| used & (1 << *s as u32) != 0)
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
    /// Applies writes as one batch without syncing (the log holds them
    /// durably). Each key appears at most once.
    fn apply(&self, writes: &[&Write]) -> Result<(), StoreError>;
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

/// What the applier thread is sent.
enum ToApplier {
    /// A committed batch.
    Batch(Job),
    /// Apply what you gathered now (someone waits for fjall to have it all).
    Flush,
}

/// The log, the overlay and the applier thread.
pub(crate) struct Ahead {
    wal: Mutex<Wal>,
    overlay: Arc<Overlay>,
    progress: Arc<Progress>,
    tx: Mutex<Option<Sender<ToApplier>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ahead {
    /// Starts the applier over `target` with a new, empty log in `dir`.
    /// Whatever an earlier log in `dir` holds must have been replayed into
    /// `target` and made durable before ([`Wal::replay`]).
    pub(crate) fn start(
        dir: &std::path::Path,
        log: AheadLog,
        target: impl Target,
    ) -> Result<Self, StoreError> {
        let AheadLog {
            sync,
            apply_delay,
            apply_seconds,
        } = log;
        let wal = Wal::create(dir, sync)?;
        let overlay = Arc::new(Overlay::new());
        let progress = Arc::new(Progress::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (overlay, progress) = (overlay.clone(), progress.clone());
            std::thread::Builder::new()
                .name("smsgate-store-applier".into())
                .spawn(move || {
                    let applier = Applier {
                        target: &target,
                        overlay: &overlay,
                        progress: &progress,
                        apply_seconds,
                    };
                    applier.run(&rx, apply_delay);
                })
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
        self.send(ToApplier::Batch(Job { seq, batch, closed }))
    }

    fn send(&self, message: ToApplier) -> Result<(), StoreError> {
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send(message).is_ok());
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
        if self.progress.lock().applied < committed {
            self.send(ToApplier::Flush)?;
        }
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

/// The applier thread's view.
struct Applier<'a, T> {
    target: &'a T,
    overlay: &'a Overlay,
    progress: &'a Progress,
    apply_seconds: Option<Histogram>,
}

impl<T: Target> Applier<'_, T> {
    /// Applies groups of batches until the sending side is gone or
    /// applying fails.
    fn run(&self, rx: &Receiver<ToApplier>, delay: Duration) {
        let mut closed: Vec<PathBuf> = Vec::new();
        loop {
            let (group, more) = gather(rx, delay);
            if !group.is_empty() && !self.apply(&group, &mut closed) {
                return;
            }
            if !more {
                return;
            }
        }
    }

    /// Applies one group; `false` if applying failed (and from then on
    /// commits fail).
    fn apply(&self, group: &[Job], closed: &mut Vec<PathBuf>) -> bool {
        let started = Instant::now();
        closed.extend(group.iter().filter_map(|j| j.closed.clone()));
        let writes = last_writes(group);
        let result = self.target.apply(&writes).and_then(|()| {
            if closed.is_empty() {
                return Ok(());
            }
            self.target.persist()?;
            wal::remove_segments(closed);
            closed.clear();
            Ok(())
        });
        if let Err(e) = result {
            // The overlay keeps the group (and every later batch), so reads
            // stay right; commits fail from now on.
            tracing::error!(error = %e, "applying the write-ahead log to fjall failed");
            self.progress.lock().failed = Some(e.to_string());
            self.progress.changed.notify_all();
            return false;
        }
        for job in group {
            self.overlay.remove(job.seq, &job.batch);
        }
        if let Some(h) = &self.apply_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        if let Some(last) = group.last() {
            let mut state = self.progress.lock();
            state.applied = last.seq + 1;
            state.pending -= group.iter().map(|j| j.batch.len()).sum::<usize>();
        }
        self.progress.changed.notify_all();
        true
    }
}

/// Waits for a batch, then gathers what else arrives within `delay` of it
/// (at most [`MAX_GROUP_WRITES`] writes, less if a flush is asked for).
/// Also says whether more can come.
fn gather(rx: &Receiver<ToApplier>, delay: Duration) -> (Vec<Job>, bool) {
    let first = match rx.recv() {
        Ok(ToApplier::Batch(job)) => job,
        Ok(ToApplier::Flush) => return (Vec::new(), true),
        Err(_) => return (Vec::new(), false),
    };
    let deadline = Instant::now() + delay;
    let mut writes = first.batch.len();
    let mut group = vec![first];
    while writes < MAX_GROUP_WRITES {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(ToApplier::Batch(job)) => {
                writes += job.batch.len();
                group.push(job);
            }
            Ok(ToApplier::Flush) | Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return (group, false),
        }
    }
    (group, true)
}

/// The group's writes with only the last write of each key, in the order
/// the keys were first written.
fn last_writes(group: &[Job]) -> Vec<&Write> {
    let total = group.iter().map(|j| j.batch.len()).sum();
    let mut at: HashMap<(Space, &[u8]), usize> = HashMap::with_capacity(total);
    let mut writes: Vec<&Write> = Vec::with_capacity(total);
    for w in group.iter().flat_map(|j| j.batch.iter()) {
        match at.entry(w.target()) {
            Entry::Occupied(e) => writes[*e.get()] = w,
            Entry::Vacant(e) => {
                e.insert(writes.len());
                writes.push(w);
            }
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::durable::kv::tests::{del, put};

    /// A fjall stand-in that keeps every group it was given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<Write>>>>);

    impl Target for Recorder {
        fn apply(&self, writes: &[&Write]) -> Result<(), StoreError> {
            let group = writes.iter().map(|w| (*w).clone()).collect();
            self.0.lock().expect("not poisoned").push(group);
            Ok(())
        }
        fn persist(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn started(delay: Duration, target: Recorder) -> (tempfile::TempDir, Ahead) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AheadLog {
            sync: false,
            apply_delay: delay,
            apply_seconds: None,
        };
        let ahead = Ahead::start(dir.path(), log, target).expect("starts");
        (dir, ahead)
    }

    #[test]
    fn batches_committed_within_the_delay_reach_fjall_as_one_with_the_last_write_of_each_key() {
        let recorder = Recorder::default();
        let (_dir, ahead) = started(Duration::from_secs(5), recorder.clone());
        let (m, r, t) = (Space::Messages, Space::Ready, Space::Tracked);
        // A message accepted, submitted and delivered, and a second one accepted.
        ahead
            .commit(vec![put(m, "1", "queued"), put(r, "1", "")])
            .expect("commits");
        ahead
            .commit(vec![put(m, "1", "submitted"), del(r, "1"), put(t, "1", "")])
            .expect("commits");
        ahead
            .commit(vec![put(m, "2", "queued"), put(r, "2", "")])
            .expect("commits");
        ahead
            .commit(vec![put(m, "1", "delivered"), del(t, "1")])
            .expect("commits");
        // Reads see every write while the applier still gathers.
        assert_eq!(
            ahead.overlay().get(m, b"1"),
            Some(Some(b"delivered".to_vec()))
        );
        assert_eq!(ahead.overlay().get(r, b"1"), Some(None));
        // Waiting for fjall ends the gathering (well before the 5 s delay).
        let asked = Instant::now();
        ahead.persist(&recorder).expect("persists");
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "a flush ends the delay"
        );
        let groups = recorder.0.lock().expect("not poisoned").clone();
        assert_eq!(
            groups,
            vec![vec![
                put(m, "1", "delivered"),
                del(r, "1"),
                del(t, "1"),
                put(m, "2", "queued"),
                put(r, "2", ""),
            ]],
            "one group, each key once with its last write, keys in first-write order"
        );
        assert!(
            ahead
                .overlay()
                .range(m, b"", None, true, usize::MAX)
                .is_empty(),
            "applied writes leave the overlay"
        );
    }

    #[test]
    fn without_a_delay_each_commit_is_applied_on_its_own_when_the_applier_keeps_up() {
        let recorder = Recorder::default();
        let (_dir, ahead) = started(Duration::ZERO, recorder.clone());
        for i in 0..3 {
            ahead
                .commit(vec![put(Space::Messages, &i.to_string(), "v")])
                .expect("commits");
            ahead.persist(&recorder).expect("persists");
        }
        assert_eq!(recorder.0.lock().expect("not poisoned").len(), 3);
    }

    #[test]
    fn a_range_read_of_the_overlay_stops_after_the_puts_asked_for() {
        let (_dir, ahead) = started(Duration::from_secs(5), Recorder::default());
        let s = Space::Ready;
        ahead
            .commit(vec![
                put(s, "a", "1"),
                del(s, "b"),
                put(s, "c", "3"),
                put(s, "d", "4"),
            ])
            .expect("commits");
        let keys = |puts| -> Vec<String> {
            ahead
                .overlay()
                .range(s, b"", None, false, puts)
                .into_iter()
                .map(|(k, _)| String::from_utf8(k).expect("utf-8"))
                .collect()
        };
        assert_eq!(keys(1), ["a"]);
        assert_eq!(keys(2), ["a", "b", "c"], "deletes on the way are kept");
        assert_eq!(keys(9), ["a", "b", "c", "d"]);
    }
}
