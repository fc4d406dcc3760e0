//! The database under the durable store: fjall (an LSM tree with a journal,
//! chosen over redb by `benches/store_backends.rs`) by default, or a Redis
//! server ([`RedisKv`]). Everything the store writes goes through
//! [`Kv::commit`] as one atomic batch.

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

pub(crate) use super::applier::AheadLog;
use super::applier::{Ahead, Target};
use super::redis_kv::{Adopted, Pairs, RedisKv};
use super::wal::{self, Wal};
use crate::queue::StoreError;

/// The keyspaces (tables) of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// message id → postcard(Message): every message, until retention removes it.
    Messages = 0,
    /// message id → (): messages a carrier accepted (some segment has an SMSC
    /// id) that are not final yet: rebuilt into memory on start for receipts.
    Tracked = 1,
    /// done_at ms (BE) ++ id → (): finished messages in finishing order, for retention.
    Finished = 2,
    /// account ++ 0 ++ key → postcard(IdempotencyRecord).
    Idempotency = 3,
    /// created ms (BE) ++ account ++ 0 ++ key → (): idempotency keys in age order.
    IdempotencyByTime = 4,
    /// kind byte ++ account ++ 0 ++ e164 → postcard(Preference): opt-outs and consents.
    Preferences = 5,
    /// account ++ 0 ++ id → postcard(InboundRecord): MO messages per account, in arrival order.
    Inbound = 6,
    /// received ms (BE) ++ account ++ 0 ++ id → (): inbound messages in age order, for retention.
    InboundByTime = 7,
    /// kind byte ++ account ++ 0 ++ id → (): every `queued` message, per account in id order
    /// (the scheduler pages from here).
    Ready = 8,
    /// send_at ms (BE) ++ id → (): every `scheduled` message in due order.
    Scheduled = 9,
    /// due ms (BE) ++ id ++ rank → postcard(WebhookEvent): the status webhook outbox.
    Outbox = 10,
    /// id ++ rank → due ms (BE): finds a message's pending webhooks.
    OutboxByMessage = 11,
    /// carrier ++ 0 ++ SMSC id → node name: which node sent a segment still
    /// awaiting its receipt (written only when nodes share a Redis store).
    SmscOwner = 12,
}

/// The spaces a node owns (the rest are shared by every node on Redis).
pub(crate) const NODE_SPACES: [Space; 7] = [
    Space::Messages,
    Space::Tracked,
    Space::Finished,
    Space::Ready,
    Space::Scheduled,
    Space::Outbox,
    Space::OutboxByMessage,
];

impl Space {
    /// Every keyspace, in index order (`ALL[s as usize] == s`).
    pub(crate) const ALL: [Space; 13] = [
        Space::Messages,
        Space::Tracked,
        Space::Finished,
        Space::Idempotency,
        Space::IdempotencyByTime,
        Space::Preferences,
        Space::Inbound,
        Space::InboundByTime,
        Space::Ready,
        Space::Scheduled,
        Space::Outbox,
        Space::OutboxByMessage,
        Space::SmscOwner,
    ];

    /// The keyspace with this index (`space as u8`).
    pub(crate) fn from_index(i: u8) -> Option<Self> {
        Self::ALL.get(usize::from(i)).copied()
    }

    /// The keyspace's name on disk (fjall) and in Redis keys.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Messages => "messages",
            Space::Tracked => "tracked",
            Space::Finished => "finished",
            Space::Idempotency => "idempotency",
            Space::IdempotencyByTime => "idempotency_by_time",
            Space::Preferences => "preferences",
            Space::Inbound => "inbound",
            Space::InboundByTime => "inbound_by_time",
            Space::Ready => "ready",
            Space::Scheduled => "scheduled",
            Space::Outbox => "outbox",
            Space::OutboxByMessage => "outbox_by_message",
            Space::SmscOwner => "smsc_owner",
        }
    }
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Insert or overwrite.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove.
    Delete(Space, Vec<u8>),
}

impl Write {
    /// The keyspace and key written.
    pub(crate) fn target(&self) -> (Space, &[u8]) {
        match self {
            Write::Put(s, k, _) | Write::Delete(s, k) => (*s, k),
        }
    }
}

/// The database the store writes to.
pub(crate) enum Kv {
    /// The embedded fjall database in a local directory.
    Fjall(FjallKv),
    /// A Redis server.
    Redis(RedisKv),
}

impl Kv {
    /// Applies the writes atomically. With `sync`, fsyncs before returning
    /// (fjall: its write-ahead log, or its journal without one; Redis
    /// persists by its own `appendfsync` setting).
    pub(crate) fn commit(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError> {
        match self {
            Kv::Fjall(f) => f.commit(writes, sync),
            Kv::Redis(r) => r.commit(writes.iter()),
        }
    }

    /// Reads one value.
    pub(crate) fn get(&self, s: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(f) => f.get(s, key),
            Kv::Redis(r) => r.get(s, key),
        }
    }

    /// Every value of a keyspace, in key order.
    pub(crate) fn values(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(f) => f.values(s),
            Kv::Redis(r) => r.values(s),
        }
    }

    /// Every key of a keyspace, in order.
    pub(crate) fn keys(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(f) => f.keys(s),
            Kv::Redis(r) => r.keys(s),
        }
    }

    /// Up to `limit` keys from `lower` (inclusive) to `upper` (exclusive), in order.
    pub(crate) fn keys_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(f) => f.keys_between(s, lower, upper, limit),
            Kv::Redis(r) => r.keys_between(s, lower, upper, limit),
        }
    }

    /// Up to `limit` values with keys from `lower` (inclusive) to `upper`
    /// (exclusive), in key order.
    pub(crate) fn values_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(f) => f.values_between(s, lower, upper, limit),
            Kv::Redis(r) => r.values_between(s, lower, upper, limit),
        }
    }

    /// Up to `limit` keys below `upper` (exclusive), in order.
    pub(crate) fn keys_below(
        &self,
        s: Space,
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.keys_between(s, &[], upper, limit)
    }

    /// A value kept in another node's partition (Redis; `None` for fjall,
    /// which one node owns alone).
    pub(crate) fn get_elsewhere(
        &self,
        s: Space,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(None),
            Kv::Redis(r) => r.get_elsewhere(s, key),
        }
    }

    /// Nodes whose lease ran out (Redis; none for fjall).
    pub(crate) fn orphans(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(Vec::new()),
            Kv::Redis(r) => r.orphans(),
        }
    }

    /// Moves another node's partition into this node's (Redis).
    pub(crate) fn adopt(&self, node: &str) -> Result<Option<Adopted>, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(None),
            Kv::Redis(r) => r.adopt(node),
        }
    }

    /// Opt-out/consent changes other nodes committed (Redis; see
    /// [`RedisKv::preference_changes`]).
    pub(crate) fn preference_changes(
        &self,
        after: Option<&str>,
    ) -> Result<(Option<String>, Pairs), StoreError> {
        match self {
            Kv::Fjall(_) => Ok((None, Vec::new())),
            Kv::Redis(r) => r.preference_changes(after),
        }
    }

    /// Whether other nodes share this database (Redis).
    pub(crate) fn shared(&self) -> bool {
        matches!(self, Kv::Redis(_))
    }

    /// Claims a key among the nodes sharing the database (Redis; always
    /// granted for fjall, which one node owns).
    pub(crate) fn claim(&self, key: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(true),
            Kv::Redis(r) => r.claim(key, ttl),
        }
    }

    /// Gives a claim back.
    pub(crate) fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Kv::Fjall(_) => Ok(()),
            Kv::Redis(r) => r.release_claim(key),
        }
    }

    /// Whether another node sharing the database is running (Redis).
    pub(crate) fn node_alive(&self, node: &str) -> Result<bool, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(false),
            Kv::Redis(r) => r.alive(node),
        }
    }

    /// This node's name (Redis; empty for fjall).
    pub(crate) fn node(&self) -> &str {
        match self {
            Kv::Fjall(_) => "",
            Kv::Redis(r) => r.node(),
        }
    }

    /// Appends a receipt to `node`'s inbox (Redis).
    pub(crate) fn push_forwarded(&self, node: &str, record: &[u8]) -> Result<(), StoreError> {
        match self {
            Kv::Fjall(_) => Ok(()),
            Kv::Redis(r) => r.push_forwarded(node, record),
        }
    }

    /// Takes up to `limit` receipts from this node's inbox (Redis).
    pub(crate) fn pop_forwarded(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Kv::Fjall(_) => Ok(Vec::new()),
            Kv::Redis(r) => r.pop_forwarded(limit),
        }
    }

    /// Bytes the store takes (on disk; Redis: the server's memory).
    pub(crate) fn disk_space(&self) -> u64 {
        match self {
            Kv::Fjall(f) => f.disk_space(),
            Kv::Redis(r) => r.used_bytes(),
        }
    }

    /// Makes everything written so far durable before exit (fjall: fsync;
    /// Redis: gives the prefix's lease up).
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        match self {
            Kv::Fjall(f) => f.persist(),
            Kv::Redis(r) => r.release(),
        }
    }
}

/// The fjall database and its keyspaces, with smsgate's write-ahead log in
/// front when opened with one ([`super::applier`]).
pub(crate) struct FjallKv {
    trees: Trees,
    ahead: Option<Ahead>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl FjallKv {
    /// Opens (or creates) the database in `path`, replaying its journal and
    /// then what a write-ahead log left in `path/wal`. With `log`, commits
    /// go to the write-ahead log from now on; without, to fjall directly.
    pub(crate) fn open(path: &Path, log: Option<AheadLog>) -> Result<Self, StoreError> {
        let trees = Trees::open(path)?;
        let wal_dir = path.join("wal");
        let mut replayed = 0usize;
        let segments = Wal::replay(&wal_dir, |batch| {
            replayed += 1;
            trees.commit(&batch, None)
        })?;
        if replayed > 0 {
            tracing::info!(batches = replayed, "write-ahead log replayed");
        }
        trees.persist()?;
        wal::remove_segments(&segments);
        let ahead = match log {
            Some(log) => Some(Ahead::start(&wal_dir, log, trees.clone())?),
            None => None,
        };
        Ok(Self { trees, ahead })
    }

    /// Applies the writes atomically. With the write-ahead log: appends
    /// them to it (synced if it syncs) and leaves fjall to the applier.
    /// Without: with `sync`, fsyncs fjall's journal before returning; without,
    /// hands it to the OS (survives a process crash).
    pub(crate) fn commit(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError> {
        match &self.ahead {
            Some(ahead) => ahead.commit(writes),
            None => {
                let mode = if sync {
                    PersistMode::SyncData
                } else {
                    PersistMode::Buffer
                };
                self.trees.commit(&writes, Some(mode))
            }
        }
    }

    /// Reads one value.
    pub(crate) fn get(&self, s: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // The overlay first: a write leaves it only after fjall has it.
        if let Some(pending) = self.ahead.as_ref().and_then(|a| a.overlay().get(s, key)) {
            return Ok(pending);
        }
        let value = self.trees.space(s).get(key).map_err(backend)?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Every value of a keyspace, in key order.
    pub(crate) fn values(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(values_of(self.scan(s, &[], None, usize::MAX, true)?))
    }

    /// Every key of a keyspace, in order.
    pub(crate) fn keys(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(keys_of(self.scan(s, &[], None, usize::MAX, false)?))
    }

    /// Up to `limit` keys from `lower` (inclusive) to `upper` (exclusive), in order.
    pub(crate) fn keys_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(keys_of(self.scan(s, lower, Some(upper), limit, false)?))
    }

    /// Up to `limit` values with keys from `lower` (inclusive) to `upper`
    /// (exclusive), in key order.
    pub(crate) fn values_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(values_of(self.scan(s, lower, Some(upper), limit, true)?))
    }

    /// Up to `limit` entries from `lower` (inclusive) to `upper` (exclusive;
    /// `None`: to the end), in key order: fjall's, with the overlay's
    /// pending writes laid over them. Values are empty unless asked for.
    fn scan(
        &self,
        s: Space,
        lower: &[u8],
        upper: Option<&[u8]>,
        limit: usize,
        values: bool,
    ) -> Result<Pairs, StoreError> {
        // The overlay before fjall: what leaves it meanwhile is in fjall.
        let pending = match &self.ahead {
            Some(a) => a.overlay().range(s, lower, upper, values, limit),
            None => Vec::new(),
        };
        let deletes = pending.iter().filter(|(_, v)| v.is_none()).count();
        let bounds = (
            Bound::Included(lower),
            upper.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let stored = self
            .trees
            .space(s)
            .range::<&[u8], _>(bounds)
            .take(limit.saturating_add(deletes))
            .map(|g| {
                if values {
                    g.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec()))
                } else {
                    g.key().map(|k| (k.to_vec(), Vec::new()))
                }
                .map_err(backend)
            });
        if pending.is_empty() {
            return stored.collect();
        }
        lay_over(stored, pending, limit)
    }

    /// Bytes on disk.
    pub(crate) fn disk_space(&self) -> u64 {
        self.trees.db.disk_space().unwrap_or(0)
    }

    /// fsyncs everything committed so far (with the write-ahead log: once
    /// fjall has applied it all; the log is emptied).
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        match &self.ahead {
            Some(ahead) => ahead.persist(&self.trees),
            None => self.trees.persist(),
        }
    }
}

fn keys_of(entries: Pairs) -> Vec<Vec<u8>> {
    entries.into_iter().map(|(k, _)| k).collect()
}

fn values_of(entries: Pairs) -> Vec<Vec<u8>> {
    entries.into_iter().map(|(_, v)| v).collect()
}

/// Merges `stored` (fjall's entries, in key order, at least `limit` plus the
/// number of pending deletes of them if there are that many) with `pending`
/// (the overlay's, in key order; `None` = deleted): the first `limit`.
fn lay_over(
    stored: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    limit: usize,
) -> Result<Pairs, StoreError> {
    let mut out = Vec::new();
    let mut pending = pending.into_iter().peekable();
    for entry in stored {
        let (key, value) = entry?;
        while let Some((k, v)) = pending.next_if(|(k, _)| *k < key) {
            out.extend(v.map(|v| (k, v)));
        }
        match pending.next_if(|(k, _)| *k == key) {
            Some((k, v)) => out.extend(v.map(|v| (k, v))),
            None => out.push((key, value)),
        }
        if out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
    }
    out.extend(
        pending
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit - out.len()),
    );
    Ok(out)
}

/// fjall's database and keyspace handles (cheap to clone).
#[derive(Clone)]
struct Trees {
    db: Database,
    spaces: Vec<Keyspace>,
}

impl Trees {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(path).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Backend(format!(
                "{} is in use by another smsgate process",
                path.display()
            )),
            e => backend(e),
        })?;
        let spaces = Space::ALL
            .iter()
            .map(|s| db.keyspace(s.name(), KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(Self { db, spaces })
    }

    fn space(&self, s: Space) -> &Keyspace {
        &self.spaces[s as usize]
    }

    fn commit<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a Write>,
        mode: Option<PersistMode>,
    ) -> Result<(), StoreError> {
        let mut batch = self.db.batch().durability(mode);
        for w in writes {
            match w {
                Write::Put(s, k, v) => batch.insert(self.space(*s), k.as_slice(), v.as_slice()),
                Write::Delete(s, k) => batch.remove(self.space(*s), k.as_slice()),
            }
        }
        batch.commit().map_err(backend)
    }
}

impl Target for Trees {
    fn apply(&self, writes: &[&Write]) -> Result<(), StoreError> {
        // No sync: the write-ahead log holds the writes until `persist`.
        self.commit(writes.iter().copied(), None)
    }

    fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::queue::durable::applier::Ahead;

    /// A put of a text key and value.
    pub(crate) fn put(s: Space, k: &str, v: &str) -> Write {
        Write::Put(s, k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    /// A delete of a text key.
    pub(crate) fn del(s: Space, k: &str) -> Write {
        Write::Delete(s, k.as_bytes().to_vec())
    }

    #[test]
    fn every_keyspace_sits_at_its_own_index_with_its_own_name() {
        for (i, s) in Space::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(u8::try_from(i).ok().and_then(Space::from_index), Some(*s));
        }
        let names: std::collections::HashSet<_> = Space::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Space::ALL.len(), "names are distinct");
    }

    fn logged(dir: &Path) -> FjallKv {
        let log = AheadLog {
            sync: true,
            apply_delay: std::time::Duration::from_millis(20),
            apply_seconds: None,
        };
        FjallKv::open(dir, Some(log)).expect("opens")
    }

    fn strings(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .collect()
    }

    #[test]
    fn pending_writes_lay_over_stored_ones_in_key_order_up_to_the_limit() {
        let stored = ["a", "c", "e", "g"]
            .map(|k| Ok((k.as_bytes().to_vec(), b"old".to_vec())))
            .into_iter();
        let pending = vec![
            (b"b".to_vec(), Some(b"new".to_vec())),
            (b"c".to_vec(), None),
            (b"e".to_vec(), Some(b"new".to_vec())),
            (b"h".to_vec(), Some(b"new".to_vec())),
        ];
        let merged = lay_over(stored.clone(), pending.clone(), 10).expect("merges");
        let keys: Vec<_> = merged.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(
            keys,
            [
                ("a", "old"),
                ("b", "new"),
                ("e", "new"),
                ("g", "old"),
                ("h", "new")
            ]
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        );
        let first_three = lay_over(stored, pending, 3).expect("merges");
        assert_eq!(
            keys_of(first_three),
            [b"a".to_vec(), b"b".to_vec(), b"e".to_vec()]
        );
    }

    #[test]
    fn committed_writes_read_back_at_once_and_after_fjall_has_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = logged(dir.path());
        let s = Space::Ready;
        kv.commit(
            vec![put(s, "k1", "1"), put(s, "k2", "2"), put(s, "k3", "3")],
            true,
        )
        .expect("commits");
        kv.commit(vec![del(s, "k2"), put(s, "k3", "three")], true)
            .expect("commits");
        for round in ["right after the commit", "after persist"] {
            assert_eq!(kv.get(s, b"k2").expect("reads"), None, "{round}");
            assert_eq!(
                kv.get(s, b"k3").expect("reads"),
                Some(b"three".to_vec()),
                "{round}"
            );
            assert_eq!(strings(kv.keys(s).expect("reads")), ["k1", "k3"], "{round}");
            assert_eq!(
                strings(kv.values_between(s, b"k", b"l", 1).expect("reads")),
                ["1"],
                "{round}"
            );
            kv.persist().expect("persists");
        }
        assert!(
            kv.ahead.as_ref().is_some_and(|a| a
                .overlay()
                .range(s, b"", None, false, usize::MAX)
                .is_empty()),
            "fjall has everything: nothing is pending"
        );
    }

    /// Stands for a fjall that never got to apply anything (a crash right
    /// after the log's fdatasync).
    struct NeverApplies;

    impl Target for NeverApplies {
        fn apply(&self, _: &[&Write]) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(())
        }
        fn persist(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn what_the_log_holds_and_fjall_does_not_is_applied_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Earlier state in fjall that the log's batches change.
        {
            let kv = FjallKv::open(dir.path(), None).expect("opens");
            kv.commit(vec![put(Space::Messages, "m1", "queued")], true)
                .expect("commits");
        }
        let log = AheadLog {
            sync: true,
            apply_delay: std::time::Duration::ZERO,
            apply_seconds: None,
        };
        let ahead = Ahead::start(&dir.path().join("wal"), log, NeverApplies).expect("starts");
        ahead
            .commit(vec![
                put(Space::Messages, "m1", "sent"),
                put(Space::Tracked, "m1", ""),
            ])
            .expect("commits");
        ahead
            .commit(vec![put(Space::Messages, "m2", "queued")])
            .expect("commits");
        // The "crash": the applier is stuck, the process goes away.
        std::mem::forget(ahead);
        let kv = FjallKv::open(dir.path(), None).expect("reopens");
        assert_eq!(
            kv.get(Space::Messages, b"m1").expect("reads"),
            Some(b"sent".to_vec())
        );
        assert_eq!(
            kv.get(Space::Messages, b"m2").expect("reads"),
            Some(b"queued".to_vec())
        );
        assert_eq!(strings(kv.keys(Space::Tracked).expect("reads")), ["m1"]);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
            .expect("lists")
            .collect();
        assert!(left.is_empty(), "replayed segments are removed: {left:?}");
    }
}
