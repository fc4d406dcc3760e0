//! The durable store's records kept in Redis (`store.backend = "redis"`).
//!
//! Each [`Space`] maps to at most two Redis keys under one hash tag,
//! `{prefix}:<space>` (a hash: key → value) and `{prefix}:<space>:z` (a
//! sorted set with every score 0, so members sort bytewise like the embedded
//! store's keys and `ZRANGEBYLEX` reads ranges). Spaces that are only looked
//! up use the hash, spaces that are only scanned in order use the sorted set,
//! and the two that are both (inbound, outbox) use both. A group commit is one
//! `MULTI … EXEC` pipeline: one round trip, applied atomically. The hash tag
//! puts every key of a gateway in one Redis Cluster slot, which is what lets
//! a commit span them.
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

/// How long the prefix's lease lasts without renewal.
const LEASE_MS: u64 = 15_000;
/// Keys read per `ZRANGEBYLEX` when a whole index is scanned.
const SCAN_CHUNK: usize = 10_000;

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

/// The lease on a key prefix: one gateway writes under a prefix at a time.
struct Lease {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// The store's keyspaces in a Redis server.
pub(crate) struct RedisKv {
    pool: Arc<Pool>,
    tag: String,
    replicas: u32,
    lease_key: String,
    node: String,
    lease: Mutex<Option<Lease>>,
    lost_lease: Arc<AtomicBool>,
}

impl RedisKv {
    /// Connects, checks the server answers, and takes the prefix's lease
    /// (refused while another node holds it).
    pub(crate) fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| StoreError::Backend(format!("invalid store.redis.url: {e}")))?;
        let pool = Arc::new(Pool::new(client));
        pool.with(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| {
                StoreError::Backend(format!("cannot reach Redis at {}: {e}", config.url))
            })?;
        let tag = format!("{{{}}}", config.prefix);
        let kv = Self {
            pool,
            lease_key: format!("{tag}:lease"),
            tag,
            replicas: config.replicas,
            node: config.node.clone(),
            lease: Mutex::new(None),
            lost_lease: Arc::new(AtomicBool::new(false)),
        };
        kv.take_lease()?;
        Ok(kv)
    }

    /// Takes the lease (or takes it back: same node name) and starts renewing it.
    fn take_lease(&self) -> Result<(), StoreError> {
        let (key, node) = (self.lease_key.clone(), self.node.clone());
        let got: Option<String> = self.pool.with(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(&node)
                .arg("NX")
                .arg("PX")
                .arg(LEASE_MS)
                .query(c)
        })?;
        if got.is_none() {
            let holder: Option<String> =
                self.pool.with(|c| redis::cmd("GET").arg(&key).query(c))?;
            if holder.as_deref().is_some_and(|h| h != node) {
                let ttl: i64 = self.pool.with(|c| redis::cmd("PTTL").arg(&key).query(c))?;
                return Err(StoreError::Backend(format!(
                    "redis prefix {} is in use by node {} (its lease runs out in {} ms)",
                    self.tag,
                    holder.unwrap_or_default(),
                    ttl.max(0)
                )));
            }
            self.pool.with(|c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&node)
                    .arg("PX")
                    .arg(LEASE_MS)
                    .query::<()>(c)
            })?;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (pool, lost, flag) = (self.pool.clone(), self.lost_lease.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("smsgate-redis-lease".into())
            .spawn(move || renew(&pool, &key, &node, &flag, &lost))
            .map_err(backend)?;
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lease {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn key(&self, s: Space) -> String {
        format!("{}:{}", self.tag, super::kv::SPACES[s as usize])
    }

    fn zkey(&self, s: Space) -> String {
        format!("{}:{}:z", self.tag, super::kv::SPACES[s as usize])
    }

    /// Applies the writes atomically (MULTI/EXEC), then waits for replicas
    /// if configured.
    pub(crate) fn commit<'a>(
        &self,
        writes: impl Iterator<Item = &'a Write>,
    ) -> Result<(), StoreError> {
        if self.lost_lease.load(Ordering::Relaxed) {
            return Err(StoreError::Backend(format!(
                "lost the lease on redis prefix {} to another node",
                self.tag
            )));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for w in writes {
            match w {
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
                .arg(self.zkey(s))
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

    /// Gives the lease up (clean shutdown): the next node need not wait.
    pub(crate) fn release(&self) -> Result<(), StoreError> {
        if let Some(mut lease) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let (stopped, wake) = &*lease.stop;
            *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            wake.notify_all();
            if let Some(t) = lease.thread.take() {
                let _ = t.join();
            }
        }
        let holder: Option<String> = self
            .pool
            .with(|c| redis::cmd("GET").arg(&self.lease_key).query(c))?;
        if holder.as_deref() == Some(self.node.as_str()) {
            self.pool
                .with(|c| redis::cmd("DEL").arg(&self.lease_key).query::<()>(c))?;
        }
        Ok(())
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
/// another node has taken it (commits then fail rather than write over it).
fn renew(pool: &Pool, key: &str, node: &str, stop: &(Mutex<bool>, Condvar), lost: &AtomicBool) {
    let (stopped, wake) = stop;
    let mut guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
    while !*guard {
        let (g, _) = wake
            .wait_timeout(guard, Duration::from_millis(LEASE_MS / 3))
            .unwrap_or_else(|p| p.into_inner());
        guard = g;
        if *guard {
            break;
        }
        let holder: Result<Option<String>, _> = pool.with(|c| redis::cmd("GET").arg(key).query(c));
        match holder {
            Ok(Some(h)) if h != node => {
                tracing::error!(holder = %h, "another node took the redis store's lease");
                lost.store(true, Ordering::Relaxed);
            }
            Ok(_) => {
                let renewed = pool.with(|c| {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(node)
                        .arg("PX")
                        .arg(LEASE_MS)
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
