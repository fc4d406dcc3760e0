//! Per-account send limits, checked before admission: a token bucket
//! (`limits.messages_per_s`, `limits.burst`) and an optional daily quota
//! (`limits.daily_quota`, per UTC day). Over either, the request is refused
//! whole with 429 and a `Retry-After`.
//!
//! A request for `n` messages (a batch takes one token per message) passes when
//! the bucket holds `min(n, burst)` tokens and takes `n`: a batch larger than
//! the burst goes through once the bucket is full and leaves it in debt, so the
//! sustained rate is the configured one whatever the request sizes, and a batch
//! is never refused forever for being larger than the burst.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::shared_limit::{SharedAccountBucket, SharedLimits};

/// One account's limits and their state.
#[derive(Debug)]
pub struct Limits {
    bucket: Option<Mutex<Bucket>>,
    quota: Option<Mutex<Quota>>,
    /// The same rate held across every node sharing a Redis store.
    shared: Option<SharedAccountBucket>,
}

/// Messages counted against the daily quota by one request; what was not
/// accepted in the end is given back with [`Limits::refund`].
#[derive(Debug)]
pub struct Reserved {
    day: NaiveDate,
    count: u64,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Quota {
    limit: u64,
    day: NaiveDate,
    used: u64,
}

/// Tokens short of what is needed by less than this count as there (float
/// refill arithmetic).
const EPSILON: f64 = 1e-9;

impl Limits {
    /// The limits `config` describes (none when its values are 0).
    pub fn new(config: &LimitsConfig, now: Instant) -> Self {
        let bucket = (config.messages_per_s > 0.0).then(|| {
            let burst = if config.burst == 0 {
                config.messages_per_s.ceil().max(1.0)
            } else {
                f64::from(config.burst)
            };
            Mutex::new(Bucket {
                rate: config.messages_per_s,
                burst,
                tokens: burst,
                last: now,
            })
        });
        let quota = (config.daily_quota > 0).then(|| {
            Mutex::new(Quota {
                limit: config.daily_quota,
                day: NaiveDate::MIN,
                used: 0,
            })
        });
        Self {
            bucket,
            quota,
            shared: None,
        }
    }

    /// Also holds the rate across every node taking from `limits` (when
    /// the account has a rate).
    pub fn share(&mut self, id: &str, limits: &SharedLimits) {
        if let Some(b) = &self.bucket {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            self.shared = Some(limits.account(id, b.rate, b.burst));
        }
    }

    /// The shared part of [`Limits::check`] (one Redis round trip; nothing
    /// without a shared bucket): on 429 gives the reservation back.
    pub async fn check_shared(
        &self,
        account: &str,
        n: usize,
        reserved: &mut Reserved,
    ) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        shared.take_all(n).await.map_err(|wait| {
            self.refund(reserved, n as u64);
            ApiError::rate_limited(account, wait)
        })
    }

    /// Lets `n` messages through or refuses them all: 429 `quota_exceeded`
    /// when the day's quota has fewer than `n` left, 429 `rate_limited` when
    /// the bucket is short. A quota reservation is kept only when the rate
    /// lets the request through.
    pub fn check(
        &self,
        account: &str,
        n: usize,
        now: Instant,
        today: DateTime<Utc>,
    ) -> Result<Reserved, ApiError> {
        let n = n as u64;
        let reserved = self.reserve(account, n, today)?;
        if let Some(bucket) = &self.bucket {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(wait) = b.take(n as f64, now) {
                drop(b);
                let mut reserved = reserved;
                self.refund(&mut reserved, n);
                return Err(ApiError::rate_limited(account, wait));
            }
        }
        Ok(reserved)
    }

    /// Gives back `count` messages of a reservation that were not accepted
    /// (refused by admission, or the commit failed). Nothing after midnight:
    /// the new day starts from zero anyway.
    pub fn refund(&self, reserved: &mut Reserved, count: u64) {
        let count = count.min(reserved.count);
        reserved.count -= count;
        let Some(quota) = &self.quota else { return };
        let mut q = quota.lock().unwrap_or_else(|e| e.into_inner());
        if q.day == reserved.day {
            q.used = q.used.saturating_sub(count);
        }
    }

    fn reserve(&self, account: &str, n: u64, now: DateTime<Utc>) -> Result<Reserved, ApiError> {
        let day = now.date_naive();
        let Some(quota) = &self.quota else {
            return Ok(Reserved { day, count: 0 });
        };
        let mut q = quota.lock().unwrap_or_else(|e| e.into_inner());
        if q.day != day {
            q.day = day;
            q.used = 0;
        }
        if q.used + n > q.limit {
            let midnight = day
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
                .unwrap_or(now);
            let wait = (midnight - now).to_std().unwrap_or(Duration::ZERO);
            return Err(ApiError::quota_exceeded(
                account,
                q.limit,
                q.limit - q.used,
                wait,
            ));
        }
        q.used += n;
        Ok(Reserved { day, count: n })
    }
}

impl Bucket {
    /// Takes `n` tokens if `min(n, burst)` are there; else how long until they are.
    fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        let need = n.min(self.burst);
        if self.tokens + EPSILON >= need {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn limits(messages_per_s: f64, burst: u32, daily_quota: u64, now: Instant) -> Limits {
        Limits::new(
            &LimitsConfig {
                messages_per_s,
                burst,
                daily_quota,
            },
            now,
        )
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    #[test]
    fn the_burst_passes_then_the_rate_refills() {
        let t0 = Instant::now();
        let l = limits(10.0, 5, 0, t0);
        for _ in 0..5 {
            let _ = l.check("a", 1, t0, noon()).expect("within the burst");
        }
        let err = l.check("a", 1, t0, noon()).unwrap_err();
        assert_eq!(err.code, "rate_limited");
        assert_eq!(err.retry_after, Some(1));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        let _ = l.check("a", 1, t1, noon()).expect("refilled");
        assert!(l.check("a", 1, t1, noon()).is_err());
    }

    #[test]
    fn a_batch_larger_than_the_burst_needs_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let l = limits(100.0, 50, 0, t0);
        let _ = l.check("a", 200, t0, noon()).expect("full bucket");
        // 150 tokens of debt: 1.5 s before one message goes again.
        let t1 = t0 + Duration::from_millis(1400);
        let err = l.check("a", 1, t1, noon()).unwrap_err();
        assert_eq!(err.retry_after, Some(1));
        let t2 = t0 + Duration::from_millis(1520);
        let _ = l.check("a", 1, t2, noon()).expect("debt paid");
    }

    #[test]
    fn no_limits_let_everything_through() {
        let t0 = Instant::now();
        let l = limits(0.0, 0, 0, t0);
        for _ in 0..10 {
            let _ = l.check("a", 1000, t0, noon()).expect("unlimited");
        }
    }

    #[test]
    fn the_daily_quota_refuses_until_midnight_and_refunds_what_was_refused() {
        let t0 = Instant::now();
        let l = limits(0.0, 0, 10, t0);
        let mut r = l.check("a", 8, t0, noon()).expect("8 of 10");
        // 3 of the 8 were refused by admission.
        l.refund(&mut r, 3);
        let _ = l.check("a", 5, t0, noon()).expect("5 left");
        let err = l.check("a", 1, t0, noon()).unwrap_err();
        assert_eq!(err.code, "quota_exceeded");
        assert_eq!(err.retry_after, Some(12 * 3600));
        // A reservation gives back at most what it took (5 more here).
        l.refund(&mut r, 100);
        let _ = l.check("a", 5, t0, noon()).expect("5 given back");
        assert!(l.check("a", 1, t0, noon()).is_err());
        let tomorrow = noon() + chrono::Duration::days(1);
        let _ = l.check("a", 10, t0, tomorrow).expect("a new day");
    }

    #[test]
    fn a_rate_refusal_gives_the_quota_back() {
        let t0 = Instant::now();
        let l = limits(1.0, 1, 2, t0);
        let _ = l.check("a", 1, t0, noon()).unwrap();
        assert_eq!(
            l.check("a", 1, t0, noon()).unwrap_err().code,
            "rate_limited"
        );
        let t1 = t0 + Duration::from_secs(1);
        let _ = l
            .check("a", 1, t1, noon())
            .expect("the refused one did not count");
    }
}
