//! The durable store's records kept in Redis (`store.backend = "redis"`).
//!
//! Several gateway nodes share one prefix. Every key carries the hash tag
//! `{prefix}`, so all of them live in one Redis Cluster slot and a group
//! commit is one `MULTI … EXEC` pipeline: one round trip, applied atomically.
//! Each node owns a partition, `{prefix}:<node>:…`, holding the messages it
//! accepted and their indexes (ready, scheduled, tracked, finished, outbox);
//! idempotency keys, opt-outs/consents and inbound messages are shared by all
//! nodes, `{prefix}:…`. A node holds a lease on its partition (renewed every
//! few seconds); when a node's lease runs out, another node adopts its
//! partition (see [`RedisKv::adopt`]) and sends what it left.
//!
//! Each [`Space`] maps to at most two keys: a hash (key → value) and a sorted
//! set with every score 0 (`…:z`, so members sort bytewise like the embedded
//! store's keys and `ZRANGEBYLEX` reads ranges). Spaces only looked up use the
//! hash, spaces only scanned in order the sorted set, inbound and outbox both.
//!
//! Blocking client on purpose: the store calls its backend from the writer
//! thread and the blocking pool, never from the async runtime.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Client;

use super::kv::{Space, Write};
use crate::config::RedisConfig;
use crate::queue::StoreError;
use crate::redis_pool::{IO_TIMEOUT, Pool};

/// Opt-out/consent changes kept in the log other nodes replay (approximate).
const PREFERENCE_LOG_LEN: u32 = 100_000;
/// Keys read per `ZRANGEBYLEX` when a whole index is scanned.
const SCAN_CHUNK: usize = 10_000;

/// Keys with their values (or log entries' keys and values).
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// How a space is laid out in Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A hash: looked up by key, never scanned in order.
    Hash,
    /// A sorted set: scanned in key order; values are always empty.
    Sorted,
    /// Both: scanned in order, values in the hash.
    Both,
}

fn layout(s: Space) -> Layout {
    match s {
        Space::Messages
        | Space::Idempotency
        | Space::Preferences
        | Space::OutboxByMessage
        | Space::SmscOwner // single keys with a TTL: see `owner_key`
        | Space::Tracked => Layout::Hash,
        Space::Finished
        | Space::IdempotencyByTime
        | Space::InboundByTime
        | Space::Ready
        | Space::Scheduled => Layout::Sorted,
        Space::Inbound | Space::Outbox => Layout::Both,
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// This node's lease on its partition, renewed by a thread.
struct Lease {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Whether a space is shared by every node or kept per node.
fn shared(s: Space) -> bool {
    matches!(
        s,
        Space::Idempotency
            | Space::IdempotencyByTime
            | Space::Preferences
            | Space::Inbound
            | Space::InboundByTime
            | Space::SmscOwner
    )
}

/// A node's partition as another node adopted it: what the adopter must
/// bring into memory.
#[derive(Debug, Default)]
pub(crate) struct Adopted {
    /// `ready` keys moved.
    pub ready: Vec<Vec<u8>>,
    /// `scheduled` keys moved.
    pub scheduled: Vec<Vec<u8>>,
    /// `tracked` keys moved (messages awaiting receipts).
    pub tracked: Vec<Vec<u8>>,
}

/// The store's keyspaces in a Redis server.
pub(crate) struct RedisKv {
    pool: Arc<Pool>,
    tag: String,
    node: String,
    /// `node/random`: tells this process's lease from an earlier one's.
    holder: String,
    lease_ms: u64,
    /// How long an SMSC id's owner is remembered (the receipt wait).
    smsc_ttl_ms: u64,
    replicas: u32,
    lease: Mutex<Option<Lease>>,
    lost_lease: Arc<AtomicBool>,
}

impl RedisKv {
    /// Connects, checks the server answers, takes this node's lease and
    /// registers the node.
    pub(crate) fn open(config: &RedisConfig, receipt_wait: Duration) -> Result<Self, StoreError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| StoreError::Backend(format!("invalid store.redis.url: {e}")))?;
        let pool = Arc::new(Pool::new(client));
        pool.with(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| {
                StoreError::Backend(format!("cannot reach Redis at {}: {e}", config.url))
            })?;
        if config.node.is_empty() || config.node.contains([':', '{', '}']) {
            return Err(StoreError::Backend(format!(
                "store.redis.node {:?} must be non-empty, without ':' or braces",
                config.node
            )));
        }
        let kv = Self {
            pool,
            tag: format!("{{{}}}", config.prefix),
            node: config.node.clone(),
            holder: format!("{}/{:016x}", config.node, rand::random::<u64>()),
            lease_ms: config.lease_ms.max(1000),
            smsc_ttl_ms: u64::try_from(receipt_wait.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            replicas: config.replicas,
            lease: Mutex::new(None),
            lost_lease: Arc::new(AtomicBool::new(false)),
        };
        kv.wait_while_adopted()?;
        kv.take_lease()?;
        let nodes = kv.nodes_key();
        kv.pool
            .with(|c| redis::cmd("SADD").arg(&nodes).arg(&kv.node).query::<()>(c))?;
        Ok(kv)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.tag)
    }

    fn lease_key(&self, node: &str) -> String {
        format!("{}:lease:{node}", self.tag)
    }

    fn adopting_key(&self, node: &str) -> String {
        format!("{}:adopting:{node}", self.tag)
    }

    /// A node restarting while another adopts its partition waits for the
    /// adoption to finish (then finds what was not moved yet, if anything).
    fn wait_while_adopted(&self) -> Result<(), StoreError> {
        let key = self.adopting_key(&self.node);
        for _ in 0..600 {
            let busy: bool = self
                .pool
                .with(|c| redis::cmd("EXISTS").arg(&key).query(c))?;
            if !busy {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(StoreError::Backend(format!(
            "another node is still adopting node {}'s partition",
            self.node
        )))
    }

    /// Takes this node's lease and starts renewing it. A node restarted
    /// under the same name takes its lease back at once (node names must be
    /// unique per running process: the older process then stops committing).
    fn take_lease(&self) -> Result<(), StoreError> {
        let key = self.lease_key(&self.node);
        let holder = self.holder.clone();
        self.pool.with(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(&holder)
                .arg("PX")
                .arg(self.lease_ms)
                .query::<()>(c)
        })?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (pool, lost, flag) = (self.pool.clone(), self.lost_lease.clone(), stop.clone());
        let lease_ms = self.lease_ms;
        let thread = std::thread::Builder::new()
            .name("smsgate-redis-lease".into())
            .spawn(move || renew(&pool, &key, &holder, lease_ms, &flag, &lost))
            .map_err(backend)?;
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lease {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    /// The hash of a space (in `node`'s partition for per-node spaces).
    fn key_of(&self, node: &str, s: Space) -> String {
        let name = s.name();
        if shared(s) {
            format!("{}:{name}", self.tag)
        } else {
            format!("{}:{node}:{name}", self.tag)
        }
    }

    fn key(&self, s: Space) -> String {
        self.key_of(&self.node, s)
    }

    fn zkey_of(&self, node: &str, s: Space) -> String {
        format!("{}:z", self.key_of(node, s))
    }

    fn zkey(&self, s: Space) -> String {
        self.zkey_of(&self.node, s)
    }

    /// Applies the writes atomically (MULTI/EXEC), then waits for replicas
    /// if configured.
    pub(crate) fn commit<'a>(
        &self,
        writes: impl Iterator<Item = &'a Write>,
    ) -> Result<(), StoreError> {
        if self.lost_lease.load(Ordering::Relaxed) {
            return Err(StoreError::Backend(format!(
                "another process took node {}'s lease under redis prefix {}",
                self.node, self.tag
            )));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let log = self.preference_log_key();
        for w in writes {
            // Other nodes replay opt-out/consent changes from this log.
            let change = match w {
                Write::Put(Space::Preferences, k, v) => Some((k, v.as_slice())),
                Write::Delete(Space::Preferences, k) => Some((k, b"".as_slice())),
                _ => None,
            };
            if let Some((k, v)) = change {
                pipe.cmd("XADD")
                    .arg(&log)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(PREFERENCE_LOG_LEN)
                    .arg("*")
                    .arg("k")
                    .arg(k.as_slice())
                    .arg("v")
                    .arg(v)
                    .ignore();
            }
            match w {
                // Which node sent an SMSC id: this one; forgotten after the
                // receipt wait (or when the message settles).
                Write::Put(Space::SmscOwner, k, _) => {
                    pipe.cmd("SET")
                        .arg(self.owner_key(k))
                        .arg(&self.node)
                        .arg("PX")
                        .arg(self.smsc_ttl_ms)
                        .ignore();
                }
                Write::Delete(Space::SmscOwner, k) => {
                    pipe.cmd("DEL").arg(self.owner_key(k)).ignore();
                }
                Write::Put(s, k, v) => {
                    let l = layout(*s);
                    if l != Layout::Hash {
                        pipe.cmd("ZADD")
                            .arg(self.zkey(*s))
                            .arg(0)
                            .arg(k.as_slice())
                            .ignore();
                    }
                    if l != Layout::Sorted {
                        pipe.cmd("HSET")
                            .arg(self.key(*s))
                            .arg(k.as_slice())
                            .arg(v.as_slice())
                            .ignore();
                    }
                }
                Write::Delete(s, k) => {
                    let l = layout(*s);
                    if l != Layout::Hash {
                        pipe.cmd("ZREM")
                            .arg(self.zkey(*s))
                            .arg(k.as_slice())
                            .ignore();
                    }
                    if l != Layout::Sorted {
                        pipe.cmd("HDEL")
                            .arg(self.key(*s))
                            .arg(k.as_slice())
                            .ignore();
                    }
                }
            }
        }
        self.pool.with(|c| pipe.query::<()>(c))?;
        if self.replicas > 0 {
            let acked: u32 = self.pool.with(|c| {
                redis::cmd("WAIT")
                    .arg(self.replicas)
                    .arg(IO_TIMEOUT.as_millis() as u64)
                    .query(c)
            })?;
            if acked < self.replicas {
                return Err(StoreError::Backend(format!(
                    "redis: {acked} of {} replicas acknowledged the commit",
                    self.replicas
                )));
            }
        }
        Ok(())
    }

    /// Reads one value (`Some(empty)` for a member of an ordered-only space).
    pub(crate) fn get(&self, s: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if s == Space::SmscOwner {
            return self
                .pool
                .with(|c| redis::cmd("GET").arg(self.owner_key(key)).query(c));
        }
        if layout(s) == Layout::Sorted {
            let score: Option<f64> = self
                .pool
                .with(|c| redis::cmd("ZSCORE").arg(self.zkey(s)).arg(key).query(c))?;
            return Ok(score.map(|_| Vec::new()));
        }
        self.pool
            .with(|c| redis::cmd("HGET").arg(self.key(s)).arg(key).query(c))
    }

    /// Every value of a space (in key order where the space is ordered).
    pub(crate) fn values(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        match layout(s) {
            Layout::Hash => self
                .pool
                .with(|c| redis::cmd("HVALS").arg(self.key(s)).query(c)),
            Layout::Sorted => Ok(vec![Vec::new(); self.keys(s)?.len()]),
            Layout::Both => {
                let keys = self.keys(s)?;
                self.hash_values(s, &keys)
            }
        }
    }

    /// Every key of a space, in order where the space is ordered.
    pub(crate) fn keys(&self, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        if layout(s) == Layout::Hash {
            return self
                .pool
                .with(|c| redis::cmd("HKEYS").arg(self.key(s)).query(c));
        }
        let mut all = Vec::new();
        let mut lower = Vec::new();
        loop {
            let chunk = self.keys_between(s, &lower, &[], SCAN_CHUNK)?;
            let done = chunk.len() < SCAN_CHUNK;
            if let Some(last) = chunk.last() {
                lower = last.clone();
                lower.push(0); // the smallest key after `last`
            }
            all.extend(chunk);
            if done {
                return Ok(all);
            }
        }
    }

    /// Up to `limit` keys from `lower` (inclusive) to `upper` (exclusive; empty:
    /// no bound), in order.
    pub(crate) fn keys_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.range(&self.zkey(s), lower, upper, limit)
    }

    /// `ZRANGEBYLEX` of `zkey` from `lower` (inclusive) to `upper` (exclusive).
    fn range(
        &self,
        zkey: &str,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let min = if lower.is_empty() {
            b"-".to_vec()
        } else {
            [b"[".as_slice(), lower].concat()
        };
        let max = if upper.is_empty() {
            b"+".to_vec()
        } else {
            [b"(".as_slice(), upper].concat()
        };
        self.pool.with(|c| {
            redis::cmd("ZRANGEBYLEX")
                .arg(zkey)
                .arg(min.as_slice())
                .arg(max.as_slice())
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(c)
        })
    }

    /// Up to `limit` values with keys from `lower` to `upper`, in key order.
    pub(crate) fn values_between(
        &self,
        s: Space,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = self.keys_between(s, lower, upper, limit)?;
        self.hash_values(s, &keys)
    }

    /// The hash values of `keys`, in their order (missing ones skipped).
    fn hash_values(&self, s: Space, keys: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.pool.with(|c| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.key(s));
            for k in keys {
                cmd.arg(k.as_slice());
            }
            cmd.query(c)
        })?;
        Ok(values.into_iter().flatten().collect())
    }

    /// Memory the server uses (`INFO memory`), for the store-size gauge.
    pub(crate) fn used_bytes(&self) -> u64 {
        let info: Result<String, _> = self
            .pool
            .with(|c| redis::cmd("INFO").arg("memory").query(c));
        info.ok()
            .and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Gives the lease up (clean shutdown): the partition stays this node's
    /// (registered, not adopted), to be taken back when it starts again.
    pub(crate) fn release(&self) -> Result<(), StoreError> {
        if let Some(mut lease) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let (stopped, wake) = &*lease.stop;
            *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            wake.notify_all();
            if let Some(t) = lease.thread.take() {
                let _ = t.join();
            }
        }
        Ok(())
    }

    /// Nodes registered under the prefix whose lease ran out (crashed, or
    /// gone for longer than a lease), other than this one.
    pub(crate) fn orphans(&self) -> Result<Vec<String>, StoreError> {
        let nodes: Vec<String> = self
            .pool
            .with(|c| redis::cmd("SMEMBERS").arg(self.nodes_key()).query(c))?;
        let mut out = Vec::new();
        for node in nodes.into_iter().filter(|n| *n != self.node) {
            let alive: bool = self
                .pool
                .with(|c| redis::cmd("EXISTS").arg(self.lease_key(&node)).query(c))?;
            if !alive {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// Moves `other`'s partition into this node's (copy, then delete, in
    /// chunks: a crash half-way leaves copies that a later adoption moves
    /// again), and unregisters it. `None` when another node is adopting it.
    pub(crate) fn adopt(&self, other: &str) -> Result<Option<Adopted>, StoreError> {
        let lock = self.adopting_key(other);
        let got: Option<String> = self.pool.with(|c| {
            redis::cmd("SET")
                .arg(&lock)
                .arg(&self.holder)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query(c)
        })?;
        if got.is_none() {
            return Ok(None);
        }
        // It may have come back between the check and the lock.
        let alive: bool = self
            .pool
            .with(|c| redis::cmd("EXISTS").arg(self.lease_key(other)).query(c))?;
        let mut adopted = Adopted::default();
        if !alive {
            for s in super::kv::NODE_SPACES {
                let moved = self.move_space(other, s)?;
                match s {
                    Space::Ready => adopted.ready = moved,
                    Space::Scheduled => adopted.scheduled = moved,
                    Space::Tracked => adopted.tracked = moved,
                    _ => {}
                }
            }
            self.take_over_receipts(other)?;
            self.pool.with(|c| {
                redis::cmd("SREM")
                    .arg(self.nodes_key())
                    .arg(other)
                    .query::<()>(c)
            })?;
        }
        self.pool
            .with(|c| redis::cmd("DEL").arg(&lock).query::<()>(c))?;
        Ok((!alive).then_some(adopted))
    }

    /// Moves one space of `other`'s partition into this node's; returns the
    /// keys moved.
    fn move_space(&self, other: &str, s: Space) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut moved = Vec::new();
        let l = layout(s);
        if l != Layout::Sorted {
            let (from, to) = (self.key_of(other, s), self.key(s));
            let mut cursor = 0u64;
            loop {
                let (next, pairs): (u64, Pairs) = self.pool.with(|c| {
                    redis::cmd("HSCAN")
                        .arg(&from)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query(c)
                })?;
                if !pairs.is_empty() {
                    let mut cmd = redis::cmd("HSET");
                    cmd.arg(&to);
                    for (k, v) in &pairs {
                        cmd.arg(k.as_slice()).arg(v.as_slice());
                    }
                    self.pool.with(|c| cmd.query::<()>(c))?;
                    if l == Layout::Hash {
                        moved.extend(pairs.into_iter().map(|(k, _)| k));
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            self.pool
                .with(|c| redis::cmd("DEL").arg(&from).query::<()>(c))?;
        }
        if l != Layout::Hash {
            let (from, to) = (self.zkey_of(other, s), self.zkey(s));
            let mut lower = Vec::new();
            loop {
                let chunk = self.range(&from, &lower, &[], SCAN_CHUNK)?;
                if !chunk.is_empty() {
                    let mut cmd = redis::cmd("ZADD");
                    cmd.arg(&to);
                    for k in &chunk {
                        cmd.arg(0).arg(k.as_slice());
                    }
                    self.pool.with(|c| cmd.query::<()>(c))?;
                }
                let done = chunk.len() < SCAN_CHUNK;
                if let Some(last) = chunk.last() {
                    lower = last.clone();
                    lower.push(0);
                }
                moved.extend(chunk);
                if done {
                    break;
                }
            }
            self.pool
                .with(|c| redis::cmd("DEL").arg(&from).query::<()>(c))?;
        }
        Ok(moved)
    }

    fn preference_log_key(&self) -> String {
        format!("{}:preferences:log", self.tag)
    }

    /// Opt-out/consent changes any node committed after log entry `after`
    /// (`None`: none, only where the log ends now), as (key, value; empty
    /// for a removal), and the entry to read after next time.
    pub(crate) fn preference_changes(
        &self,
        after: Option<&str>,
    ) -> Result<(Option<String>, Pairs), StoreError> {
        type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;
        let log = self.preference_log_key();
        let Some(after) = after else {
            let last: Entries = self.pool.with(|c| {
                redis::cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query(c)
            })?;
            let end = last
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
            return Ok((Some(end), Vec::new()));
        };
        let entries: Entries = self.pool.with(|c| {
            redis::cmd("XRANGE")
                .arg(&log)
                .arg(format!("({after}"))
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .query(c)
        })?;
        let next = entries
            .last()
            .map_or_else(|| after.to_owned(), |(id, _)| id.clone());
        let changes = entries
            .into_iter()
            .filter_map(|(_, fields)| {
                let mut k = None;
                let mut v = Vec::new();
                for (name, value) in fields {
                    match name.as_str() {
                        "k" => k = Some(value),
                        "v" => v = value,
                        _ => {}
                    }
                }
                Some((k?, v))
            })
            .collect();
        Ok((Some(next), changes))
    }

    fn claim_key(&self, key: &str) -> String {
        format!("{}:claim:{key}", self.tag)
    }

    /// Claims `key` for `ttl` unless another process holds it.
    pub(crate) fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let got: Option<String> = self.pool.with(|c| {
            redis::cmd("SET")
                .arg(self.claim_key(key))
                .arg(&self.holder)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .query(c)
        })?;
        Ok(got.is_some())
    }

    /// Gives a claim back (if this process still holds it).
    pub(crate) fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        self.pool.with(|c| {
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.claim_key(key))
                .arg(&self.holder)
                .query::<()>(c)
        })
    }

    /// Whether `node` holds its lease (is running).
    pub(crate) fn alive(&self, node: &str) -> Result<bool, StoreError> {
        self.pool
            .with(|c| redis::cmd("EXISTS").arg(self.lease_key(node)).query(c))
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The key naming the node that sent an SMSC id (`carrier ++ 0 ++ id`):
    /// one key each, so each can expire on its own.
    fn owner_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = format!("{}:smsc_owner:", self.tag).into_bytes();
        k.extend_from_slice(key);
        k
    }

    fn inbox_key(&self, node: &str) -> String {
        format!("{}:{node}:receipts", self.tag)
    }

    /// Appends a forwarded receipt to `node`'s inbox.
    pub(crate) fn push_forwarded(&self, node: &str, record: &[u8]) -> Result<(), StoreError> {
        self.pool.with(|c| {
            redis::cmd("RPUSH")
                .arg(self.inbox_key(node))
                .arg(record)
                .query::<()>(c)
        })
    }

    /// Takes up to `limit` receipts from this node's inbox.
    pub(crate) fn pop_forwarded(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let popped: Option<Vec<Vec<u8>>> = self.pool.with(|c| {
            redis::cmd("LPOP")
                .arg(self.inbox_key(&self.node))
                .arg(limit.max(1))
                .query(c)
        })?;
        Ok(popped.unwrap_or_default())
    }

    /// After adopting `other`: its inbox and the SMSC ids it owned are this
    /// node's now.
    fn take_over_receipts(&self, other: &str) -> Result<(), StoreError> {
        let (from, to) = (self.inbox_key(other), self.inbox_key(&self.node));
        loop {
            let moved: Option<Vec<u8>> = self.pool.with(|c| {
                redis::cmd("LMOVE")
                    .arg(&from)
                    .arg(&to)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .query(c)
            })?;
            if moved.is_none() {
                break;
            }
        }
        // Adoption is rare and off the hot path: a SCAN over the owner keys.
        let pattern = format!("{}:smsc_owner:*", self.tag);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.pool.with(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !keys.is_empty() {
                let owners: Vec<Option<String>> = self.pool.with(|c| {
                    let mut cmd = redis::cmd("MGET");
                    for k in &keys {
                        cmd.arg(k.as_slice());
                    }
                    cmd.query(c)
                })?;
                let mut pipe = redis::pipe();
                for (k, owner) in keys.iter().zip(owners) {
                    if owner.as_deref() == Some(other) {
                        pipe.cmd("SET")
                            .arg(k.as_slice())
                            .arg(&self.node)
                            .arg("XX")
                            .arg("KEEPTTL")
                            .ignore();
                    }
                }
                self.pool.with(|c| pipe.query::<()>(c))?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// A message kept in another node's partition (a node answers reads for
    /// messages any node accepted).
    pub(crate) fn get_elsewhere(
        &self,
        s: Space,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if shared(s) || layout(s) == Layout::Sorted {
            return Ok(None);
        }
        let nodes: Vec<String> = self
            .pool
            .with(|c| redis::cmd("SMEMBERS").arg(self.nodes_key()).query(c))?;
        for node in nodes.into_iter().filter(|n| *n != self.node) {
            let found: Option<Vec<u8>> = self.pool.with(|c| {
                redis::cmd("HGET")
                    .arg(self.key_of(&node, s))
                    .arg(key)
                    .query(c)
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

impl Drop for RedisKv {
    fn drop(&mut self) {
        if let Some(lease) = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let (stopped, wake) = &*lease.stop;
            *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            wake.notify_all();
        }
    }
}

/// Renews the lease every third of its life until told to stop; notes when
/// another process has taken it (commits then fail rather than write over
/// the partition).
fn renew(
    pool: &Pool,
    key: &str,
    holder: &str,
    lease_ms: u64,
    stop: &(Mutex<bool>, Condvar),
    lost: &AtomicBool,
) {
    let (stopped, wake) = stop;
    let mut guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
    while !*guard {
        let (g, _) = wake
            .wait_timeout(guard, Duration::from_millis(lease_ms / 3))
            .unwrap_or_else(|p| p.into_inner());
        guard = g;
        if *guard {
            break;
        }
        let current: Result<Option<String>, _> = pool.with(|c| redis::cmd("GET").arg(key).query(c));
        match current {
            Ok(Some(h)) if h != holder => {
                tracing::error!(holder = %h, "another process took this node's redis lease; no more commits");
                lost.store(true, Ordering::Relaxed);
                break;
            }
            Ok(_) => {
                let renewed = pool.with(|c| {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(holder)
                        .arg("PX")
                        .arg(lease_ms)
                        .query::<()>(c)
                });
                if let Err(e) = renewed {
                    tracing::warn!(error = %e, "cannot renew the redis store's lease");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the redis store's lease"),
        }
    }
}
