//! The durable [`Store`]: every message, status change, SMSC id and
//! idempotency key is committed to an embedded database (fjall) before the
//! caller hears "done", in group commits shared by concurrent requests. By
//! default a commit is done once it is in smsgate's own write-ahead log
//! ([`wal`]); fjall applies it right behind ([`applier`]).
//!
//! Indexes kept in the same commits: `ready` (every `queued` message, per
//! kind and account in id order — the scheduler pages from it), `scheduled`
//! (by due time) and `tracked` (accepted by a carrier, awaiting receipts).
//! Memory holds only work in progress ([`ActiveSet`]): the scheduler's
//! window of ready messages, messages in a carrier's hands, submitted ones
//! awaiting receipts, and the SMSC-id index. A backlog of a million ready
//! messages is a million small index keys on disk, not a million objects.
//!
//! Crash semantics: a message in a carrier's hands is still `queued` on
//! disk, so after a crash it is ready again and resubmitted; duplicates are
//! bounded by the submits in flight (window × binds), because a bind holds a
//! window slot until the outcome of its submit is committed.

mod applier;
mod kv;
mod redis_kv;
mod wal;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::active::ActiveSet;
use super::store::{
    AppliedTransition, IdempotencyRecord, InboundRecord, OutboxPosition, Preference,
    PreferenceChange, PreferenceKind, ReadyPage, Released, Store, StoreError, WebhookEvent,
};
use crate::config::{Durability, StoreBackend, StoreConfig};
use crate::message::{Applied, Kind, Message, MessageId, Status, Transition};
use crate::metrics::Metrics;
use kv::{AheadLog, FjallKv, Kv, Space, Write};
pub use writer::GroupCommit;
use writer::{Writer, committed};

/// Records removed per compaction batch (keeps each commit short).
const COMPACT_BATCH: usize = 1000;

/// The embedded durable store.
pub struct DurableStore {
    active: Mutex<ActiveSet>,
    kv: Arc<Kv>,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    /// Ready messages found on disk at open, per kind and account.
    recovered_ready: Vec<(Kind, String, usize)>,
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt record: {e}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails for types serde cannot describe, which ours are not.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// First byte of a message or outbox record in the binary form (ids as 16 bytes,
/// instants as nanoseconds; see `message::stored`). Records from before it start with
/// the id's length as text (26) and are read as text.
const RECORD_BINARY: u8 = 0xB1;

/// A message or outbox record: tagged, binary.
fn encode_record<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails for types serde cannot describe, which ours are not.
    postcard::to_extend(value, vec![RECORD_BINARY]).unwrap_or_default()
}

/// Reads what [`encode_record`] wrote, or the untagged text form of earlier versions.
fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_BINARY, record)) => postcard::from_bytes(record).map_err(codec),
        _ => crate::message::stored::legacy(|| postcard::from_bytes(bytes)).map_err(codec),
    }
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

/// `kind ++ account ++ 0`: the prefix of an account's ready messages of a kind.
fn ready_prefix(kind: Kind, account: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + account.len() + 16);
    k.push(kind.index() as u8);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k
}

/// `kind ++ account ++ 0 ++ id`: a ready message's index key.
fn ready_key(m: &Message) -> Vec<u8> {
    let mut k = ready_prefix(m.kind, &m.account);
    k.extend_from_slice(&m.id.to_bytes());
    k
}

/// Reads a `ready` key back into (kind, account, id).
fn parse_ready_key(key: &[u8]) -> Option<(Kind, String, MessageId)> {
    let kind = *Kind::ALL.get(usize::from(*key.first()?))?;
    let split = key.len().checked_sub(17)?;
    let account = std::str::from_utf8(key.get(1..split)?).ok()?.to_owned();
    let id: [u8; 16] = key.get(split + 1..)?.try_into().ok()?;
    Some((kind, account, MessageId::from_bytes(id)))
}

/// Reads a `scheduled` key back into (due time, id).
fn parse_time_key(key: &[u8]) -> Option<(DateTime<Utc>, MessageId)> {
    let ms = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let at = DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)?;
    Some((at, trailing_id(key)?))
}

/// The id at the end of an index key.
fn trailing_id(key: &[u8]) -> Option<MessageId> {
    let id: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(MessageId::from_bytes(id))
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
        let group = GroupCommit::from_config(config);
        match config.backend {
            StoreBackend::Redis => {
                let receipt_wait =
                    std::time::Duration::from_secs(u64::from(config.dlr_wait_hours) * 3600);
                let kv = Kv::Redis(redis_kv::RedisKv::open(&config.redis, receipt_wait)?);
                let at = format!("{} as {}", config.redis.url, config.redis.node);
                Self::recover(kv, &at, config.durability, group, metrics)
            }
            _ => Self::open_at(&config.path, config.durability, group, metrics),
        }
    }

    /// Opens the store in `path`.
    pub fn open_at(
        path: &Path,
        durability: Durability,
        group: GroupCommit,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", path.display())))?;
        let log = group.write_ahead_log.then(|| AheadLog {
            sync: durability == Durability::Fsync,
            apply_delay: group.apply_delay,
            apply_seconds: Some(metrics.store_apply_seconds.clone()),
        });
        let kv = Kv::Fjall(FjallKv::open(path, log)?);
        Self::recover(kv, &path.display().to_string(), durability, group, metrics)
    }

    /// Rebuilds the in-memory working set from what `kv` holds and starts
    /// the writer.
    fn recover(
        kv: Kv,
        at: &str,
        durability: Durability,
        group: GroupCommit,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let kv = Arc::new(kv);
        let mut active = ActiveSet::new(false);
        let mut tracked = 0usize;
        for key in kv.keys(Space::Tracked)? {
            let Some(bytes) = kv.get(Space::Messages, &key)? else {
                continue;
            };
            let message: Message = decode_record(&bytes)?;
            if message.status == Status::Queued {
                // Partly submitted: its receipts must match, but it waits in
                // `ready` like any other ready message.
                active.index(&message);
            } else {
                active.insert(message);
            }
            tracked += 1;
        }
        let mut ready: HashMap<(Kind, String), usize> = HashMap::new();
        for key in kv.keys(Space::Ready)? {
            if let Some((kind, account, _)) = parse_ready_key(&key) {
                *ready.entry((kind, account)).or_default() += 1;
            }
        }
        let mut scheduled = 0usize;
        for key in kv.keys(Space::Scheduled)? {
            let Some((at, id)) = parse_time_key(&key) else {
                continue;
            };
            active.schedule(at, id);
            scheduled += 1;
        }
        let ready_total: usize = ready.values().sum();
        tracing::info!(%at, tracked, ready = ready_total, scheduled, "durable store open");
        let writer = Arc::new(Writer::start(
            kv.clone(),
            durability == Durability::Fsync,
            group,
            metrics.clone(),
        ));
        metrics.store_disk_bytes.set(kv.disk_space() as i64);
        Ok(Self {
            active: Mutex::new(active),
            kv,
            writer,
            metrics,
            recovered_ready: ready.into_iter().map(|((k, a), n)| (k, a, n)).collect(),
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

    /// The writes that persist a message's new state (it was `before`),
    /// keeping the ready, schedule and tracked indexes in step.
    fn persist(m: &Message, before: Option<Status>, shared: bool, writes: &mut Vec<Write>) {
        let key = message_key(m.id);
        writes.push(Write::Put(Space::Messages, key.clone(), encode_record(m)));
        let was = |s: Status| before == Some(s);
        if m.status == Status::Queued && !was(Status::Queued) {
            writes.push(Write::Put(Space::Ready, ready_key(m), Vec::new()));
        }
        if m.status != Status::Queued && was(Status::Queued) {
            writes.push(Write::Delete(Space::Ready, ready_key(m)));
        }
        if let Some(at) = m.send_at {
            if m.status == Status::Scheduled && !was(Status::Scheduled) {
                writes.push(Write::Put(Space::Scheduled, time_key(at, &key), Vec::new()));
            }
            if m.status != Status::Scheduled && was(Status::Scheduled) {
                writes.push(Write::Delete(Space::Scheduled, time_key(at, &key)));
            }
        }
        if shared && let Some(carrier) = &m.carrier {
            // Nodes sharing the store: which node a receipt belongs to.
            let submitted = m.status == Status::Submitted && !was(Status::Submitted);
            let settled = m.status.is_final() && before.is_some_and(|b| !b.is_final());
            for smsc_id in m.segments.iter().filter_map(|s| s.smsc_id.as_deref()) {
                let key = account_key(carrier, smsc_id);
                if submitted {
                    writes.push(Write::Put(Space::SmscOwner, key, Vec::new()));
                } else if settled {
                    writes.push(Write::Delete(Space::SmscOwner, key));
                }
            }
        }
        let accepted = m.segments.iter().any(|s| s.smsc_id.is_some());
        if m.status.is_final() {
            writes.push(Write::Delete(Space::Tracked, key.clone()));
            let done = m.done_at.unwrap_or(m.created_at);
            writes.push(Write::Put(
                Space::Finished,
                time_key(done, &key),
                Vec::new(),
            ));
        } else if accepted {
            writes.push(Write::Put(Space::Tracked, key, Vec::new()));
        }
        if before.is_some_and(|b| b != m.status)
            && let Some(event) = WebhookEvent::for_message(m, Utc::now())
        {
            Self::outbox_put(&event, writes);
        }
    }

    /// `due ++ id ++ rank`: an outbox key.
    fn outbox_key(e: &WebhookEvent) -> Vec<u8> {
        Self::outbox_position_key(e.position())
    }

    /// The outbox key of an event at `p`.
    fn outbox_position_key(p: OutboxPosition) -> Vec<u8> {
        let mut rest = p.message_id.to_bytes().to_vec();
        rest.push(p.rank);
        time_key(p.due, &rest)
    }

    /// `id ++ rank`: the by-message key of an outbox event.
    fn outbox_message_key(id: MessageId, rank: u8) -> Vec<u8> {
        let mut k = id.to_bytes().to_vec();
        k.push(rank);
        k
    }

    fn outbox_put(e: &WebhookEvent, writes: &mut Vec<Write>) {
        writes.push(Write::Put(
            Space::Outbox,
            Self::outbox_key(e),
            encode_record(e),
        ));
        writes.push(Write::Put(
            Space::OutboxByMessage,
            Self::outbox_message_key(e.message_id, e.rank),
            Vec::new(),
        ));
    }

    /// Reads messages that are not in memory from disk.
    async fn load(&self, ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = self
            .read(move |kv| {
                ids.iter()
                    .map(|id| kv.get(Space::Messages, &message_key(*id)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        bytes
            .into_iter()
            .flatten()
            .map(|b| decode_record::<Message>(&b))
            .collect()
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
            Self::persist(m, None, self.kv.shared(), &mut writes);
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
            .map(|b| IdempotencyRecord::decode(&b).map_err(codec))
            .transpose()
    }

    async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        if let Some(m) = self.lock().get(&id) {
            return Ok(Some(m.clone()));
        }
        let bytes = self
            .read(move |kv| {
                let key = message_key(id);
                match kv.get(Space::Messages, &key)? {
                    Some(b) => Ok(Some(b)),
                    // Accepted by another node sharing the store.
                    None => kv.get_elsewhere(Space::Messages, &key),
                }
            })
            .await?;
        bytes.map(|b| decode_record::<Message>(&b)).transpose()
    }

    fn held(&self, id: MessageId) -> Option<Message> {
        self.lock().get(&id).cloned()
    }

    fn release_memory(&self, ids: &[MessageId]) {
        self.lock().release_memory(ids);
    }

    fn pages(&self) -> bool {
        true
    }

    fn recovered_ready(&self) -> Vec<(Kind, String, usize)> {
        self.recovered_ready.clone()
    }

    async fn page_ready(
        &self,
        kind: Kind,
        account: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<ReadyPage, StoreError> {
        let prefix = ready_prefix(kind, account);
        let mut lower = prefix.clone();
        if let Some(after) = after {
            lower.extend_from_slice(&after.to_bytes());
            lower.push(0); // just past `after`'s own key
        }
        let mut upper = prefix;
        if let Some(last) = upper.last_mut() {
            *last = 1; // past every key of this kind and account
        }
        let keys = self
            .read(move |kv| kv.keys_between(Space::Ready, &lower, &upper, limit))
            .await?;
        let ids: Vec<MessageId> = keys.iter().filter_map(|k| trailing_id(k)).collect();
        let page_last = ids.last().copied();
        let missing: Vec<MessageId> = {
            let active = self.lock();
            ids.into_iter().filter(|id| !active.holds(id)).collect()
        };
        let loaded = self.load(missing).await?;
        let mut active = self.lock();
        let mut messages = Vec::with_capacity(loaded.len());
        for m in loaded {
            if m.status == Status::Queued && !active.holds(&m.id) {
                active.insert(m.clone());
                messages.push(m);
            }
        }
        Ok(ReadyPage {
            messages,
            last: page_last,
            exhausted: keys.len() < limit,
        })
    }

    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        // Messages not in memory (scheduled ones, ready ones on disk) are read first.
        let missing: Vec<MessageId> = {
            let active = self.lock();
            batch
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !active.holds(id))
                .collect()
        };
        let loaded = self.load(missing).await?;
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let done = {
            let mut active = self.lock();
            for m in loaded {
                if !active.holds(&m.id) && !m.status.is_final() {
                    active.insert_held(m);
                }
            }
            for (id, t) in batch {
                let before = active.get(&id).map(|m| m.status);
                let result = active.apply(id, &t);
                if let Some((m, applied)) = &result
                    && *applied != Applied::Ignored
                {
                    Self::persist(m, before, self.kv.shared(), &mut writes);
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

    async fn release_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Released, StoreError> {
        let (due, next_due) = self.lock().take_due(now, limit);
        let batch = due
            .into_iter()
            .map(|id| (id, Transition::Release))
            .collect();
        let messages = self
            .apply(batch)
            .await?
            .into_iter()
            .flatten()
            .filter(|(_, applied)| matches!(applied, Applied::StatusChanged(_)))
            .map(|(m, _)| m)
            .collect();
        Ok(Released { messages, next_due })
    }

    fn scheduled_count(&self) -> usize {
        self.lock().scheduled_count()
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
            let i = self
                .compact_index(Space::InboundByTime, Space::Inbound, finished_before)
                .await?;
            removed += n + m + i;
            if n + m + i == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Receipts that never came: stop waiting (the message stays `submitted`).
        let stale = self.lock().evict_submitted_before(dlr_cutoff);
        if !stale.is_empty() {
            let writes = stale
                .iter()
                .map(|id| Write::Delete(Space::Tracked, message_key(*id)))
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

    async fn save_inbound(&self, records: Vec<InboundRecord>) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(records.len() * 2);
        for r in &records {
            let mut key = account_key(&r.account, "");
            key.extend_from_slice(&r.id.to_bytes());
            writes.push(Write::Put(
                Space::InboundByTime,
                time_key(r.received_at, &key),
                Vec::new(),
            ));
            writes.push(Write::Put(Space::Inbound, key, encode(r)));
        }
        committed(self.writer.submit(writes)).await
    }

    async fn list_inbound(
        &self,
        account: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError> {
        let prefix = account_key(account, "");
        let mut lower = prefix.clone();
        if let Some(after) = after {
            // The smallest key greater than `after`'s own.
            lower.extend_from_slice(&after.to_bytes());
            lower.push(0);
        }
        let mut upper = account.as_bytes().to_vec();
        upper.push(1);
        self.read(move |kv| kv.values_between(Space::Inbound, &lower, &upper, limit))
            .await?
            .iter()
            .map(|b| postcard::from_bytes(b).map_err(codec))
            .collect()
    }

    async fn webhooks_due(
        &self,
        after: Option<OutboxPosition>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        let upper = time_key(now + chrono::Duration::milliseconds(1), &[]);
        let lower = after.map_or_else(Vec::new, |p| {
            let mut key = Self::outbox_position_key(p);
            key.push(0); // just past the event at `p`
            key
        });
        self.read(move |kv| kv.values_between(Space::Outbox, &lower, &upper, limit))
            .await?
            .iter()
            .map(|b| decode_record(b))
            .collect()
    }

    async fn webhook_pending(&self, id: MessageId, rank: u8) -> Result<bool, StoreError> {
        let key = Self::outbox_message_key(id, rank);
        Ok(self
            .read(move |kv| kv.get(Space::OutboxByMessage, &key))
            .await?
            .is_some())
    }

    async fn webhook_settle(
        &self,
        event: &WebhookEvent,
        retry: Option<WebhookEvent>,
    ) -> Result<(), StoreError> {
        let mut writes = vec![Write::Delete(Space::Outbox, Self::outbox_key(event))];
        match retry {
            Some(next) => Self::outbox_put(&next, &mut writes),
            None => writes.push(Write::Delete(
                Space::OutboxByMessage,
                Self::outbox_message_key(event.message_id, event.rank),
            )),
        }
        committed(self.writer.submit(writes)).await
    }

    fn shared(&self) -> bool {
        self.kv.shared()
    }

    async fn claim(&self, key: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        if !self.kv.shared() {
            return Ok(true);
        }
        let key = key.to_owned();
        self.read(move |kv| kv.claim(&key, ttl)).await
    }

    async fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        if !self.kv.shared() {
            return Ok(());
        }
        let key = key.to_owned();
        self.read(move |kv| kv.release_claim(&key)).await
    }

    async fn preference_changes(
        &self,
        cursor: Option<String>,
    ) -> Result<(Option<String>, Vec<PreferenceChange>), StoreError> {
        let (next, raw) = self
            .read(move |kv| kv.preference_changes(cursor.as_deref()))
            .await?;
        let changes = raw
            .into_iter()
            .filter_map(|(key, value)| {
                let kind = match *key.first()? {
                    0 => PreferenceKind::OptOut,
                    1 => PreferenceKind::Consent,
                    _ => return None,
                };
                let rest = key.get(1..)?;
                let split = rest.iter().position(|b| *b == 0)?;
                let account = String::from_utf8(rest[..split].to_vec()).ok()?;
                let e164 = String::from_utf8(rest[split + 1..].to_vec()).ok()?;
                let value = if value.is_empty() {
                    None
                } else {
                    Some(postcard::from_bytes(&value).ok()?)
                };
                Some(PreferenceChange {
                    kind,
                    account,
                    e164,
                    value,
                })
            })
            .collect();
        Ok((next, changes))
    }

    async fn smsc_owner(&self, carrier: &str, smsc_id: &str) -> Result<Option<String>, StoreError> {
        let key = account_key(carrier, smsc_id);
        let owner = self
            .read(move |kv| {
                let owner = kv
                    .get(Space::SmscOwner, &key)?
                    .map(|n| String::from_utf8_lossy(&n).into_owned())
                    .filter(|n| n != kv.node());
                // A node that stopped gets its receipts from whoever adopts
                // its work (the receipt waits here, parked, until then).
                match owner {
                    Some(n) if kv.node_alive(&n)? => Ok(Some(n)),
                    _ => Ok(None),
                }
            })
            .await?;
        Ok(owner)
    }

    async fn forward_receipt(&self, node: &str, record: Vec<u8>) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.read(move |kv| kv.push_forwarded(&node, &record)).await
    }

    async fn take_forwarded(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |kv| kv.pop_forwarded(limit)).await
    }

    async fn adopt_orphans(&self) -> Result<Vec<(Kind, String, usize)>, StoreError> {
        let adopted = self
            .read(|kv| {
                let mut all = Vec::new();
                for node in kv.orphans()? {
                    if let Some(a) = kv.adopt(&node)? {
                        tracing::warn!(%node, ready = a.ready.len(), scheduled = a.scheduled.len(), tracked = a.tracked.len(), "adopted the partition of a node whose lease ran out");
                        all.push(a);
                    }
                }
                Ok(all)
            })
            .await?;
        let mut ready: HashMap<(Kind, String), usize> = HashMap::new();
        let mut tracked = Vec::new();
        {
            let mut active = self.lock();
            for a in &adopted {
                for key in &a.ready {
                    if let Some((kind, account, _)) = parse_ready_key(key) {
                        *ready.entry((kind, account)).or_default() += 1;
                    }
                }
                for key in &a.scheduled {
                    if let Some((at, id)) = parse_time_key(key) {
                        active.schedule(at, id);
                    }
                }
                tracked.extend(a.tracked.iter().filter_map(|k| trailing_id(k)));
            }
        }
        // Messages awaiting receipts: their SMSC ids must match here now.
        for m in self.load(tracked).await? {
            let mut active = self.lock();
            if m.status == Status::Queued {
                active.index(&m);
            } else if !m.status.is_final() {
                active.insert(m);
            }
        }
        Ok(ready.into_iter().map(|((k, a), n)| (k, a, n)).collect())
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
        let group = GroupCommit {
            max_batch: 1024,
            min_interval: std::time::Duration::ZERO,
            write_ahead_log: true,
            apply_delay: std::time::Duration::from_millis(20),
        };
        DurableStore::open_at(dir, Durability::Fsync, group, Arc::new(Metrics::new()))
            .expect("store opens")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_in_the_text_form_of_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = message("written by an earlier version");
        let new = message("written now");
        {
            let store = open(dir.path());
            let text =
                crate::message::stored::legacy(|| postcard::to_stdvec(&old)).expect("encodes");
            let put = Write::Put(Space::Messages, message_key(old.id), text);
            committed(store.writer.submit(vec![put]))
                .await
                .expect("committed");
            store
                .append(vec![new.clone()], None)
                .await
                .expect("appended");
            let raw = store
                .kv
                .get(Space::Messages, &message_key(new.id))
                .expect("read")
                .expect("present");
            assert_eq!(raw.first(), Some(&RECORD_BINARY));
            store.close().await.expect("closed");
        }
        let store = open(dir.path());
        assert_eq!(store.get(old.id).await.expect("read"), Some(old));
        assert_eq!(store.get(new.id).await.expect("read"), Some(new));
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
        assert_eq!(
            store.recovered_ready(),
            vec![(Kind::Marketing, "a".to_owned(), 1)],
            "b is ready again"
        );
        let page = store
            .page_ready(Kind::Marketing, "a", None, 10)
            .await
            .unwrap();
        assert_eq!(page.messages, vec![b.clone()]);
        assert!(page.exhausted);
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
    async fn ready_messages_page_in_id_order_and_skip_those_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Message> = (0..5).map(|i| message(&format!("m{i}"))).collect();
        {
            let store = open(dir.path());
            store.append(all.clone(), None).await.unwrap();
            // Appended messages are held; the scheduler lets go of those it
            // leaves on disk.
            let ids: Vec<MessageId> = all[2..].iter().map(|m| m.id).collect();
            store.release_memory(&ids);
            assert!(store.held(all[0].id).is_some() && store.held(all[2].id).is_none());
            let page = store
                .page_ready(Kind::Marketing, "a", None, 2)
                .await
                .unwrap();
            assert!(page.messages.is_empty(), "the first two are in memory");
            assert_eq!(page.last, Some(all[1].id));
            assert!(!page.exhausted);
            let page = store
                .page_ready(Kind::Marketing, "a", page.last, 10)
                .await
                .unwrap();
            let got: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
            assert_eq!(got, ids);
            assert!(page.exhausted && store.held(all[2].id).is_some());
            assert!(
                store
                    .page_ready(Kind::Otp, "a", None, 10)
                    .await
                    .unwrap()
                    .messages
                    .is_empty(),
                "other kinds have their own index"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scheduled_messages_wait_on_disk_and_are_released_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut later = message("later");
        later.status = Status::Scheduled;
        later.send_at = Some(Utc::now() + chrono::Duration::seconds(30));
        {
            let store = open(dir.path());
            store.append(vec![later.clone()], None).await.unwrap();
            assert!(store.held(later.id).is_none(), "not held in memory");
        }
        let store = open(dir.path());
        assert_eq!(store.scheduled_count(), 1);
        let r = store.release_due(Utc::now(), 10).await.unwrap();
        assert!(r.messages.is_empty());
        assert_eq!(
            r.next_due,
            later
                .send_at
                .map(|t| { DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap() })
        );
        let due = Utc::now() + chrono::Duration::seconds(60);
        let r = store.release_due(due, 10).await.unwrap();
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].status, Status::Queued);
        assert_eq!(store.scheduled_count(), 0);
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.scheduled_count(), 0, "the release was committed");
        assert_eq!(
            store.recovered_ready(),
            vec![(Kind::Marketing, "a".to_owned(), 1)]
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
            fingerprint: Some(vec![7; 32]),
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

    fn inbound(account: &str, text: &str) -> InboundRecord {
        InboundRecord {
            id: MessageId::generate(),
            account: account.into(),
            from: "+447400123456".into(),
            to: "ACME".into(),
            text: text.into(),
            carrier: "c".into(),
            keyword: None,
            received_at: Utc::now(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inbound_messages_are_listed_per_account_in_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = ["one", "two", "three"]
            .iter()
            .map(|t| inbound("a", t))
            .collect();
        {
            let store = open(dir.path());
            store.save_inbound(records[..2].to_vec()).await.unwrap();
            // "ab" sorts right after "a": its records must not leak into a's list.
            store
                .save_inbound(vec![inbound("ab", "other"), records[2].clone()])
                .await
                .unwrap();
            // No close(): committed is enough.
        }
        let store = open(dir.path());
        assert_eq!(store.list_inbound("a", None, 10).await.unwrap(), records);
        assert_eq!(
            store
                .list_inbound("a", Some(records[0].id), 1)
                .await
                .unwrap(),
            vec![records[1].clone()]
        );
        assert!(
            store
                .list_inbound("a", Some(records[2].id), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list_inbound("ab", None, 10).await.unwrap().len(), 1);
        let future = Utc::now() + chrono::Duration::seconds(1);
        let past = Utc::now() - chrono::Duration::days(1);
        assert_eq!(store.compact(future, past, past).await.unwrap(), 4);
        assert!(store.list_inbound("a", None, 10).await.unwrap().is_empty());
    }

    fn event(m: &Message, rank: u8, due: DateTime<Utc>) -> WebhookEvent {
        WebhookEvent {
            message_id: m.id,
            rank,
            account: m.account.clone(),
            url: "http://127.0.0.1:9/hook".to_owned(),
            body: format!("{{\"id\":\"{}\",\"rank\":{rank}}}", m.id).into_bytes(),
            attempts: 0,
            created_at: due,
            due,
        }
    }

    /// A `WebhookEvent` as versions before the binary records wrote it (serde's
    /// defaults: the id and instants as text, the body as a sequence).
    #[derive(serde::Serialize)]
    struct OutboxRecordOfEarlierVersions<'a> {
        message_id: MessageId,
        rank: u8,
        account: &'a str,
        url: &'a str,
        body: &'a Vec<u8>,
        attempts: u32,
        created_at: DateTime<Utc>,
        due: DateTime<Utc>,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_outbox_reads_on_from_a_position_and_keeps_reading_records_of_earlier_versions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let t0 = Utc::now() - chrono::Duration::seconds(10);
        let ms = chrono::Duration::milliseconds;
        let (a, b, c) = (message("a"), message("b"), message("c"));
        let old = event(&a, 1, t0);
        let text = postcard::to_stdvec(&OutboxRecordOfEarlierVersions {
            message_id: old.message_id,
            rank: old.rank,
            account: &old.account,
            url: &old.url,
            body: &old.body,
            attempts: old.attempts,
            created_at: old.created_at,
            due: old.due,
        })
        .expect("encodes");
        let mut writes = vec![Write::Put(
            Space::Outbox,
            DurableStore::outbox_key(&old),
            text,
        )];
        let later = [
            event(&b, 1, t0 + ms(5)),
            event(&c, 1, t0 + ms(9)),
            event(&a, 2, t0 + ms(9)),
        ];
        for e in &later {
            DurableStore::outbox_put(e, &mut writes);
        }
        // Not due yet: never read.
        DurableStore::outbox_put(&event(&b, 2, Utc::now() + ms(60_000)), &mut writes);
        committed(store.writer.submit(writes))
            .await
            .expect("committed");

        let mut all = vec![old.clone()];
        all.extend(later.iter().cloned());
        all.sort_by_key(WebhookEvent::position);
        let due = |after, limit| store.webhooks_due(after, Utc::now(), limit);
        assert_eq!(
            due(None, 10).await.expect("read"),
            all,
            "the old record reads as it was"
        );
        assert_eq!(due(None, 2).await.expect("read"), all[..2].to_vec());
        let on = due(Some(all[1].position()), 10).await.expect("read");
        assert_eq!(on, all[2..].to_vec(), "read on just past the position");
        let last = all.last().map(WebhookEvent::position);
        assert!(due(last, 10).await.expect("read").is_empty());
        let raw = store
            .kv
            .get(Space::Outbox, &DurableStore::outbox_key(&later[0]))
            .expect("read")
            .expect("present");
        assert_eq!(raw.first(), Some(&RECORD_BINARY));
    }
}
