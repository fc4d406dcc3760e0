//! The database under the durable store: fjall (an LSM tree with a journal,
//! chosen over redb by `benches/store_backends.rs`) by default, or a Redis
//! server ([`RedisKv`]). Everything the store writes goes through
//! [`Kv::commit`] as one atomic batch.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::redis_kv::{Adopted, Pairs, RedisKv};
use crate::queue::StoreError;

/// The keyspaces (tables) of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Keyspace names, indexed by [`Space`].
pub(crate) const SPACES: [&str; 13] = [
    "messages",
    "tracked",
    "finished",
    "idempotency",
    "idempotency_by_time",
    "preferences",
    "inbound",
    "inbound_by_time",
    "ready",
    "scheduled",
    "outbox",
    "outbox_by_message",
    "smsc_owner",
];

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Insert or overwrite.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove.
    Delete(Space, Vec<u8>),
}

/// The database the store writes to.
pub(crate) enum Kv {
    /// The embedded fjall database in a local directory.
    Fjall(FjallKv),
    /// A Redis server.
    Redis(RedisKv),
}

impl Kv {
    /// Applies the writes atomically. With `sync`, fsyncs the journal before
    /// returning (fjall; Redis persists by its own `appendfsync` setting).
    pub(crate) fn commit<'a>(
        &self,
        writes: impl Iterator<Item = &'a Write>,
        sync: bool,
    ) -> Result<(), StoreError> {
        match self {
            Kv::Fjall(f) => f.commit(writes, sync),
            Kv::Redis(r) => r.commit(writes),
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

/// The fjall database and its keyspaces.
pub(crate) struct FjallKv {
    db: Database,
    spaces: Vec<Keyspace>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl FjallKv {
    /// Opens (or creates) the database in `path`, replaying its journal.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(path).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Backend(format!(
                "{} is in use by another smsgate process",
                path.display()
            )),
            e => backend(e),
        })?;
        let spaces = SPACES
            .iter()
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(Self { db, spaces })
    }

    fn space(&self, s: Space) -> &Keyspace {
        &self.spaces[s as usize]
    }

    /// Applies the writes atomically. With `sync`, fsyncs the journal before
    /// returning; without, hands it to the OS (survives a process crash).
    pub(crate) fn commit<'a>(
        &self,
        writes: impl Iterator<Item = &'a Write>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mode = if sync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        let mut batch = self.db.batch().durability(Some(mode));
        for w in writes {
            match w {
                Write::Put(s, k, v) => batch.insert(self.space(*s), k.as_slice(), v.as_slice()),
                Write::Delete(s, k) => batch.remove(self.space(*s), k.as_slice()),
            }
        }
        batch.commit().map_err(backend)
    }

    /// Reads one value.
    pub(crate) fn get(&self, s: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.space(s).get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    /// Every value of a keyspace, in key order.
    pub(crate) fn values(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        self.space(s)
            .iter()
            .map(|g| g.into_inner().map(|(_, v)| v.to_vec()).map_err(backend))
            .collect()
    }

    /// Every key of a keyspace, in order.
    pub(crate) fn keys(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        self.space(s)
            .iter()
            .map(|g| g.key().map(|k| k.to_vec()).map_err(backend))
            .collect()
    }

    /// Up to `limit` keys from `lower` (inclusive) to `upper` (exclusive), in order.
    pub(crate) fn keys_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.space(s)
            .range(lower..upper)
            .take(limit)
            .map(|g| g.key().map(|k| k.to_vec()).map_err(backend))
            .collect()
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
        self.space(s)
            .range(lower..upper)
            .take(limit)
            .map(|g| g.into_inner().map(|(_, v)| v.to_vec()).map_err(backend))
            .collect()
    }

    /// Bytes on disk.
    pub(crate) fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// fsyncs everything written so far.
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }
}
