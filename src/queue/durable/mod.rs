//! The durable [`Store`]: every message, status change, SMSC id and
//! idempotency key is committed to an embedded database (fjall) before the
//! caller hears "done", in group commits shared by concurrent requests.
//!
//! Work in progress (queued, scheduled, submitted-awaiting-receipt messages)
//! is mirrored in memory ([`ActiveSet`]) so leasing, lookups by SMSC id and
//! queue depths never touch the disk; on start it is rebuilt from the
//! `active` keyspace. Finished messages live only on disk until retention
//! removes them.
//!
//! Crash semantics: a message leased to a bind is still `active` on disk, so
//! after a crash it is queued again and resubmitted; duplicates are bounded by
//! the submits in flight (window × binds), because a bind holds a window slot
//! until the outcome of its submit is committed.

mod kv;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::active::ActiveSet;
use super::store::{
    AppliedTransition, IdempotencyRecord, Preference, PreferenceKind, QueueDepths, Released, Store,
    StoreError,
};
use crate::config::{Durability, StoreConfig};
use crate::message::{Applied, Message, MessageId, Transition};
use crate::metrics::Metrics;
use kv::{Kv, Space, Write};
use writer::{Writer, committed};

/// Records removed per compaction batch (keeps each commit short).
const COMPACT_BATCH: usize = 1000;

/// The embedded durable store.
pub struct DurableStore {
    active: Mutex<ActiveSet>,
    kv: Arc<Kv>,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt record: {e}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails for types serde cannot describe, which ours are not.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn message_key(id: MessageId) -> Vec<u8> {
    id.to_bytes().to_vec()
}

fn time_key(at: DateTime<Utc>, rest: &[u8]) -> Vec<u8> {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut key = Vec::with_capacity(8 + rest.len());
    key.extend_from_slice(&ms.to_be_bytes());
    key.extend_from_slice(rest);
    key
}

/// `account ++ 0 ++ key`: the key of per-account records.
fn account_key(account: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 1 + key.len());
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl DurableStore {
    /// Opens the store in `config.path` and rebuilds the in-memory working set
    /// from it (blocking: call it off the async runtime).
    pub fn open(config: &StoreConfig, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        Self::open_at(&config.path, config.durability, config.max_batch, metrics)
    }

    /// Opens the store in `path`.
    pub fn open_at(
        path: &Path,
        durability: Durability,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", path.display())))?;
        let kv = Arc::new(Kv::open(path)?);
        let mut active = ActiveSet::new(false);
        let mut recovered = 0usize;
        for key in kv.keys(Space::Active)? {
            let Some(bytes) = kv.get(Space::Messages, &key)? else {
                continue;
            };
            let message: Message = postcard::from_bytes(&bytes).map_err(codec)?;
            active.insert(message);
            recovered += 1;
        }
        tracing::info!(path = %path.display(), recovered, "durable store open");
        let writer = Arc::new(Writer::start(
            kv.clone(),
            durability == Durability::Fsync,
            max_batch,
            metrics.clone(),
        ));
        metrics.store_disk_bytes.set(kv.disk_space() as i64);
        Ok(Self {
            active: Mutex::new(active),
            kv,
            writer,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ActiveSet> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a blocking read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Kv) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || f(&kv))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// The writes that persist a message's new state.
    fn persist(m: &Message, writes: &mut Vec<Write>) {
        let key = message_key(m.id);
        writes.push(Write::Put(Space::Messages, key.clone(), encode(m)));
        if m.status.is_final() {
            writes.push(Write::Delete(Space::Active, key.clone()));
            let done = m.done_at.unwrap_or(m.created_at);
            writes.push(Write::Put(
                Space::Finished,
                time_key(done, &key),
                Vec::new(),
            ));
        }
    }

    /// Deletes up to [`COMPACT_BATCH`] entries of a time-ordered index older
    /// than `before`, with the records they point to.
    async fn compact_index(
        &self,
        index: Space,
        target: Space,
        before: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let upper = time_key(before, &[]);
        let keys = self
            .read(move |kv| kv.keys_below(index, &upper, COMPACT_BATCH))
            .await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut writes = Vec::with_capacity(keys.len() * 2);
        for key in &keys {
            writes.push(Write::Delete(target, key[8..].to_vec()));
            writes.push(Write::Delete(index, key.clone()));
        }
        committed(self.writer.submit(writes)).await?;
        Ok(keys.len())
    }
}

#[async_trait]
impl Store for DurableStore {
    async fn append(
        &self,
        messages: Vec<Message>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(messages.len() * 2 + 2);
        for m in &messages {
            let key = message_key(m.id);
            writes.push(Write::Put(Space::Messages, key.clone(), encode(m)));
            writes.push(Write::Put(Space::Active, key, Vec::new()));
        }
        if let Some(r) = &idempotency {
            let key = account_key(&r.account, &r.key);
            writes.push(Write::Put(
                Space::IdempotencyByTime,
                time_key(r.created_at, &key),
                Vec::new(),
            ));
            writes.push(Write::Put(Space::Idempotency, key, encode(r)));
        }
        // Durable first, visible second: nothing is sent that a crash could forget.
        committed(self.writer.submit(writes)).await?;
        let mut active = self.lock();
        messages.into_iter().for_each(|m| active.insert(m));
        Ok(())
    }

    async fn idempotency(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let k = account_key(account, key);
        let bytes = self.read(move |kv| kv.get(Space::Idempotency, &k)).await?;
        bytes
            .map(|b| postcard::from_bytes(&b).map_err(codec))
            .transpose()
    }

    async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        if let Some(m) = self.lock().get(&id) {
            return Ok(Some(m.clone()));
        }
        let bytes = self
            .read(move |kv| kv.get(Space::Messages, &message_key(id)))
            .await?;
        bytes
            .map(|b| postcard::from_bytes(&b).map_err(codec))
            .transpose()
    }

    async fn lease(&self, max: usize) -> Result<Vec<Message>, StoreError> {
        Ok(self.lock().lease(max))
    }

    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let done = {
            let mut active = self.lock();
            for (id, t) in batch {
                let result = active.apply(id, &t);
                if let Some((m, applied)) = &result
                    && *applied != Applied::Ignored
                {
                    Self::persist(m, &mut writes);
                }
                results.push(result);
            }
            // Submitted under the lock, so commits happen in the order of the
            // in-memory changes.
            (!writes.is_empty()).then(|| self.writer.submit(writes))
        };
        if let Some(done) = done {
            committed(done).await?;
        }
        Ok(results)
    }

    async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        Ok(self.lock().find_by_smsc_id(carrier, smsc_id))
    }

    async fn release_due(&self, now: DateTime<Utc>) -> Result<Released, StoreError> {
        let (released, done) = {
            let mut active = self.lock();
            let (messages, released) = active.release_due(now);
            let mut writes = Vec::new();
            messages.iter().for_each(|m| Self::persist(m, &mut writes));
            (
                released,
                (!writes.is_empty()).then(|| self.writer.submit(writes)),
            )
        };
        if let Some(done) = done {
            committed(done).await?;
        }
        Ok(released)
    }

    fn depths(&self) -> QueueDepths {
        self.lock().depths()
    }

    async fn compact(
        &self,
        finished_before: DateTime<Utc>,
        idempotency_before: DateTime<Utc>,
        dlr_cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let n = self
                .compact_index(Space::Finished, Space::Messages, finished_before)
                .await?;
            let m = self
                .compact_index(
                    Space::IdempotencyByTime,
                    Space::Idempotency,
                    idempotency_before,
                )
                .await?;
            removed += n + m;
            if n + m == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Receipts that never came: stop waiting (the message stays `submitted`).
        let stale = self.lock().evict_submitted_before(dlr_cutoff);
        if !stale.is_empty() {
            let writes = stale
                .iter()
                .map(|id| Write::Delete(Space::Active, message_key(*id)))
                .collect();
            committed(self.writer.submit(writes)).await?;
        }
        self.metrics.store_compacted.inc_by(removed as u64);
        self.metrics
            .store_disk_bytes
            .set(self.kv.disk_space() as i64);
        Ok(removed)
    }

    async fn save_preference(
        &self,
        kind: PreferenceKind,
        account: &str,
        e164: &str,
        value: Option<Preference>,
    ) -> Result<(), StoreError> {
        let mut key = vec![kind as u8];
        key.extend_from_slice(&account_key(account, e164));
        let write = match value {
            Some(p) => Write::Put(Space::Preferences, key, encode(&p)),
            None => Write::Delete(Space::Preferences, key),
        };
        committed(self.writer.submit(vec![write])).await
    }

    async fn load_preferences(&self) -> Result<Vec<Preference>, StoreError> {
        self.read(|kv| kv.values(Space::Preferences))
            .await?
            .iter()
            .map(|b| postcard::from_bytes(b).map_err(codec))
            .collect()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let kv = self.kv.clone();
        let writer = self.writer.clone();
        // Stopping joins the writer thread: do it on the blocking pool.
        tokio::task::spawn_blocking(move || {
            writer.stop();
            kv.persist()
        })
        .await
        .map_err(|e| StoreError::Backend(format!("close task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Kind, Status};

    fn message(text: &str) -> Message {
        crate::message::sample(text, Kind::Marketing, 1)
    }

    fn open(dir: &Path) -> DurableStore {
        DurableStore::open_at(dir, Durability::Fsync, 1024, Arc::new(Metrics::new()))
            .expect("store opens")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_work_and_receipt_index_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (message("a"), message("b"));
        {
            let store = open(dir.path());
            store
                .append(vec![a.clone(), b.clone()], None)
                .await
                .unwrap();
            let leased = store.lease(1).await.unwrap();
            assert_eq!(leased[0].id, a.id);
            store
                .apply(vec![(
                    a.id,
                    Transition::SegmentAccepted {
                        carrier: "c".into(),
                        segment: 0,
                        smsc_id: "ff01".into(),
                        at: Utc::now(),
                    },
                )])
                .await
                .unwrap();
            // No close(): as if the process died here.
        }
        let store = open(dir.path());
        assert_eq!(store.depths().queued, [0, 0, 1], "b is queued again");
        assert_eq!(
            store.find_by_smsc_id("c", "ff01").await.unwrap(),
            Some((a.id, 0))
        );
        assert_eq!(
            store.get(a.id).await.unwrap().unwrap().status,
            Status::Submitted
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_removes_finished_messages_past_retention_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (done, waiting) = (message("done"), message("waiting"));
        store
            .append(vec![done.clone(), waiting.clone()], None)
            .await
            .unwrap();
        store
            .apply(vec![(done.id, Transition::Expire { at: Utc::now() })])
            .await
            .unwrap();
        let past = Utc::now() - chrono::Duration::days(1);
        assert_eq!(store.compact(past, past, past).await.unwrap(), 0);
        assert!(store.get(done.id).await.unwrap().is_some());
        let future = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(store.compact(future, past, past).await.unwrap(), 1);
        assert!(
            store.get(done.id).await.unwrap().is_none(),
            "finished one removed"
        );
        assert!(
            store.get(waiting.id).await.unwrap().is_some(),
            "queued one kept"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotency_records_persist_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let record = IdempotencyRecord {
            account: "a".into(),
            key: "k1".into(),
            status: 202,
            body: b"{}".to_vec(),
            created_at: Utc::now(),
        };
        {
            let store = open(dir.path());
            store
                .append(vec![message("x")], Some(record.clone()))
                .await
                .unwrap();
            store.close().await.unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.idempotency("a", "k1").await.unwrap(), Some(record));
        assert_eq!(store.idempotency("b", "k1").await.unwrap(), None);
        let future = Utc::now() + chrono::Duration::seconds(1);
        let past = Utc::now() - chrono::Duration::days(1);
        assert_eq!(store.compact(past, future, past).await.unwrap(), 1);
        assert_eq!(store.idempotency("a", "k1").await.unwrap(), None);
    }
}
