//! Rate limits that hold across every gateway node sharing one Redis: a
//! token bucket kept in Redis and updated by a Lua script (atomic, on the
//! server's clock). A carrier's bucket is taken from a few tokens at a time
//! (per submit would be a round trip per message); an account's is asked
//! once per request, so a 429 is exact.
//!
//! Why a shared bucket rather than splitting the limit by live node count:
//! a split needs membership (who is alive, re-splitting when a node dies or
//! joins) and wastes the share of an idle node, while a bucket is exact
//! whatever the number of nodes and how the traffic is spread over them. Its
//! cost is one round trip per `chunk` tokens (a fiftieth of a second's worth),
//! made on the blocking pool, never per message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::RedisConfig;
use crate::redis_pool::Pool;

/// Refills `KEYS[1]` at `ARGV[1]` tokens/s up to `ARGV[2]`, takes up to
/// `ARGV[3]`; returns `{granted, ms to wait when none was}`.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local grant = math.min(want, math.floor(tokens))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if grant == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {grant, wait}
";

/// Refills `KEYS[1]` at `ARGV[1]` tokens/s up to `ARGV[2]`; lets `ARGV[3]`
/// through when it holds `min(ARGV[3], ARGV[2])` (taking all of them, so a
/// request larger than the burst leaves the bucket in debt); returns
/// `{1, 0}` or `{0, ms until it would}`.
const TAKE_ALL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local need = math.min(want, burst)
local ok, wait = 0, 0
if tokens + 1e-9 >= need then
  tokens = tokens - want
  ok = 1
else
  wait = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 3600000)
return {ok, wait}
";

/// Seconds of the rate the shared bucket holds at most (the burst all nodes
/// together may send after a quiet spell).
const BURST_S: f64 = 0.05;
/// Seconds of the rate a node takes per round trip.
const CHUNK_S: f64 = 0.02;

/// Where the shared buckets live.
pub struct SharedLimits {
    pool: Arc<Pool>,
    prefix: String,
}

impl SharedLimits {
    /// Buckets in the Redis of `config`, under `{shared_prefix}`.
    pub fn new(config: &RedisConfig) -> Result<Self, crate::queue::StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            crate::queue::StoreError::Backend(format!("invalid store.redis.url: {e}"))
        })?;
        Ok(Self {
            pool: Arc::new(Pool::new(client)),
            prefix: format!("{{{}}}", config.shared_prefix),
        })
    }

    /// The bucket of an account's `rate`/`burst` (shared by every node).
    pub fn account(&self, id: &str, rate: f64, burst: f64) -> SharedAccountBucket {
        SharedAccountBucket {
            pool: self.pool.clone(),
            key: format!("{}:account:{id}", self.prefix),
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
        }
    }

    /// The bucket of a carrier's `tps` (shared by every node that names the
    /// carrier the same way).
    pub fn carrier(&self, name: &str, tps: f64) -> SharedBucket {
        SharedBucket::new(
            self.pool.clone(),
            format!("{}:tps:{name}", self.prefix),
            tps,
        )
    }
}

/// One account's send rate shared by every node: each request asks Redis
/// (one round trip), as the answer must be exact per request.
pub struct SharedAccountBucket {
    pool: Arc<Pool>,
    key: String,
    rate: f64,
    burst: f64,
}

impl std::fmt::Debug for SharedAccountBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAccountBucket")
            .field("key", &self.key)
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl SharedAccountBucket {
    /// Lets `n` messages through or none: `Err(wait)` when the account's
    /// shared bucket is short. If Redis cannot be reached, this node's own
    /// bucket (checked before) is the only limit (logged).
    pub async fn take_all(&self, n: usize) -> Result<(), Duration> {
        let answer = eval(
            &self.pool, TAKE_ALL, &self.key, self.rate, self.burst, n as u64,
        )
        .await;
        match answer {
            Ok(Ok((1, _))) => Ok(()),
            Ok(Ok((_, wait_ms))) => Err(Duration::from_millis(wait_ms.max(1))),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, key = %self.key, "shared account limit unavailable; this node's own limit applies");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared account limit task failed");
                Ok(())
            }
        }
    }
}

/// One limit shared by every node.
pub struct SharedBucket {
    pool: Arc<Pool>,
    key: String,
    rate: f64,
    burst: f64,
    chunk: u32,
    /// Tokens this node took and has not used yet.
    cached: Mutex<u32>,
    /// One round trip at a time per node.
    fetching: tokio::sync::Mutex<()>,
}

impl SharedBucket {
    fn new(pool: Arc<Pool>, key: String, rate: f64) -> Self {
        let rate = rate.max(1.0);
        Self {
            pool,
            key,
            rate,
            burst: (rate * BURST_S).max(1.0),
            chunk: (rate * CHUNK_S).ceil().max(1.0) as u32,
            cached: Mutex::new(0),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn take_cached(&self) -> bool {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if *c > 0 {
            *c -= 1;
            true
        } else {
            false
        }
    }

    /// Waits for a token of the shared limit. If Redis cannot be reached the
    /// node goes on under its own limit alone (logged): a Redis outage must
    /// not stop traffic that the node's store may still take.
    pub async fn take(&self) {
        loop {
            if self.take_cached() {
                return;
            }
            let _one = self.fetching.lock().await;
            if self.take_cached() {
                return;
            }
            let want = u64::from(self.chunk);
            let answer = eval(&self.pool, TAKE, &self.key, self.rate, self.burst, want).await;
            match answer {
                Ok(Ok((granted, _))) if granted > 0 => {
                    *self.cached.lock().unwrap_or_else(|p| p.into_inner()) += granted - 1;
                    return;
                }
                Ok(Ok((_, wait_ms))) => {
                    tokio::time::sleep(Duration::from_millis(wait_ms.clamp(1, 1000))).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, key = %self.key, "shared rate limit unavailable; this node's own limit applies");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shared rate limit task failed");
                    return;
                }
            }
        }
    }
}

/// Runs a bucket script (`rate`, `burst`, `want`) on the blocking pool:
/// `Ok(Ok((granted, wait_ms)))`, or why Redis could not answer.
async fn eval(
    pool: &Arc<Pool>,
    script: &'static str,
    key: &str,
    rate: f64,
    burst: f64,
    want: u64,
) -> Result<Result<(u32, u64), crate::queue::StoreError>, tokio::task::JoinError> {
    let (pool, key) = (pool.clone(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        pool.with(|c| {
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&key)
                .arg(rate)
                .arg(burst)
                .arg(want)
                .query::<(u32, u64)>(c)
        })
    })
    .await
}
