//! A carrier's send rate, shared by all its binds: a token bucket at the
//! configured TPS, cut in half when the SMSC answers 0x58 (throttled) and
//! regained gradually (AIMD), and paused outright after 0x14 (queue full).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shared_limit::SharedBucket;

/// A cut is applied at most this often: one burst of 0x58 answers to a
/// window of in-flight submits is one signal, not thirty.
const CUT_HOLD_OFF: Duration = Duration::from_millis(250);
/// The rate never drops below this (submits per second).
const MIN_RATE: f64 = 1.0;
/// Regained per second after a cut, as a share of the rate before the cut.
const RECOVERY_PER_S: f64 = 0.10;
/// Tokens the bucket holds at most, in seconds of the current rate.
const BURST_S: f64 = 0.05;

/// The send rate of one carrier.
pub struct RateLimiter {
    /// Configured ceiling; `INFINITY` when unlimited.
    ceiling: f64,
    state: Mutex<State>,
    /// The ceiling shared with the other nodes (Redis), if any.
    shared: Option<SharedBucket>,
}

#[derive(Debug)]
struct State {
    /// Current allowed rate (`INFINITY`: no limit in force).
    rate: f64,
    /// Where recovery heads: the ceiling, or twice the rate at the last cut
    /// when the carrier has no configured ceiling (then the limit lifts).
    target: f64,
    tokens: f64,
    last_refill: Instant,
    last_cut: Option<Instant>,
    paused_until: Option<Instant>,
    /// Submits counted in the current one-second window, and its start.
    window_start: Instant,
    window_count: u32,
    /// Submits in the last complete second.
    measured: f64,
}

impl RateLimiter {
    /// A limiter at `tps` submits per second (0: unlimited until throttled).
    pub fn new(tps: f64) -> Self {
        let ceiling = if tps > 0.0 { tps } else { f64::INFINITY };
        let now = Instant::now();
        Self {
            ceiling,
            state: Mutex::new(State {
                rate: ceiling,
                target: ceiling,
                tokens: burst(ceiling),
                last_refill: now,
                last_cut: None,
                paused_until: None,
                window_start: now,
                window_count: 0,
                measured: 0.0,
            }),
            shared: None,
        }
    }

    /// Also holds the configured ceiling across every node taking from
    /// `bucket` (the AIMD cuts stay this node's own).
    pub fn with_shared(mut self, bucket: SharedBucket) -> Self {
        self.shared = Some(bucket);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one send token: `Ok` to send now, `Err(t)` to try again at `t`.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Instant> {
        let mut s = self.lock();
        if let Some(until) = s.paused_until {
            if now < until {
                return Err(until);
            }
            s.paused_until = None;
        }
        s.recover(now, self.ceiling);
        if s.rate.is_finite() {
            let elapsed = now.saturating_duration_since(s.last_refill).as_secs_f64();
            s.tokens = (s.tokens + elapsed * s.rate).min(burst(s.rate));
            s.last_refill = now;
            if s.tokens < 1.0 {
                let wait = (1.0 - s.tokens) / s.rate;
                return Err(now + Duration::from_secs_f64(wait));
            }
            s.tokens -= 1.0;
        }
        s.count(now);
        Ok(())
    }

    /// Waits for a send token (and one of the shared limit, if any).
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire(Instant::now()) {
                Ok(()) => break,
                Err(at) => tokio::time::sleep_until(at.into()).await,
            }
        }
        if let Some(shared) = &self.shared {
            shared.take().await;
        }
    }

    /// The SMSC said 0x58: halve the rate (from what was really being sent).
    pub fn throttled(&self, now: Instant) {
        let mut s = self.lock();
        if s.last_cut
            .is_some_and(|t| now.duration_since(t) < CUT_HOLD_OFF)
        {
            return;
        }
        // Halve what is being sent: the rate in force, or when none is, what
        // was measured over the last second (or so far in this one).
        let sending = if s.rate.is_finite() {
            s.rate
        } else if s.measured > 0.0 {
            s.measured
        } else {
            f64::from(s.window_count.max(1))
        };
        s.rate = (sending / 2.0).max(MIN_RATE);
        s.target = if self.ceiling.is_finite() {
            self.ceiling
        } else if s.target.is_finite() {
            // Keep heading for where the first cut came from, so repeated
            // cuts do not ratchet the target down with the rate.
            s.target.max(s.rate * 2.0)
        } else {
            sending * 2.0
        };
        s.tokens = s.tokens.min(1.0);
        s.last_cut = Some(now);
    }

    /// The SMSC said 0x14 (queue full): stop every bind for `pause`, and cut.
    pub fn queue_full(&self, now: Instant, pause: Duration) {
        self.throttled(now);
        let mut s = self.lock();
        let until = now + pause;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// The rate in force (submits per second; `INFINITY` when unlimited).
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }
}

impl State {
    /// Additive increase towards the target since the last refill.
    fn recover(&mut self, now: Instant, ceiling: f64) {
        if self.rate >= self.target || self.last_cut.is_none() {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        let step = self.target.min(1e9) * RECOVERY_PER_S * elapsed;
        self.rate = (self.rate + step).min(self.target);
        if self.rate >= self.target && !ceiling.is_finite() {
            // Recovered past where the SMSC objected: lift the limit again.
            self.rate = f64::INFINITY;
            self.target = f64::INFINITY;
        }
    }

    fn count(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            self.measured = f64::from(self.window_count) / elapsed.as_secs_f64();
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += 1;
    }
}

fn burst(rate: f64) -> f64 {
    if rate.is_finite() {
        (rate * BURST_S).max(1.0)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens granted over `seconds` when asking every millisecond.
    fn granted(l: &RateLimiter, start: Instant, seconds: u64) -> u32 {
        (0..seconds * 1000)
            .filter(|ms| l.try_acquire(start + Duration::from_millis(*ms)).is_ok())
            .count() as u32
    }

    #[test]
    fn the_configured_rate_is_kept() {
        let l = RateLimiter::new(100.0);
        let n = granted(&l, Instant::now(), 2);
        assert!((195..=210).contains(&n), "{n} in 2 s at 100/s");
    }

    #[test]
    fn a_throttle_halves_the_rate_and_it_recovers_gradually() {
        let l = RateLimiter::new(200.0);
        let t0 = Instant::now();
        granted(&l, t0, 1);
        l.throttled(t0 + Duration::from_secs(1));
        let after_cut = l.rate();
        assert!((99.0..=101.0).contains(&after_cut), "{after_cut}");
        // A second 0x58 from the same burst does not cut again.
        l.throttled(t0 + Duration::from_millis(1100));
        assert_eq!(l.rate(), after_cut);
        let t1 = t0 + Duration::from_secs(1);
        granted(&l, t1, 2);
        let recovering = l.rate();
        assert!(recovering > after_cut && recovering < 200.0, "{recovering}");
        granted(&l, t1 + Duration::from_secs(2), 10);
        assert_eq!(l.rate(), 200.0, "back to the ceiling");
    }

    #[test]
    fn an_unlimited_carrier_is_limited_only_after_a_throttle() {
        let l = RateLimiter::new(0.0);
        let t0 = Instant::now();
        assert_eq!(granted(&l, t0, 1), 1000, "no limit");
        // Measured ~1000/s over the last second: cut to half of that.
        for i in 0..10 {
            let _ = l.try_acquire(t0 + Duration::from_millis(1000 + i));
        }
        l.throttled(t0 + Duration::from_millis(1010));
        assert!((400.0..=600.0).contains(&l.rate()), "{}", l.rate());
        granted(&l, t0 + Duration::from_millis(1010), 30);
        assert!(l.rate().is_infinite(), "the limit lifts after recovery");
    }

    #[test]
    fn queue_full_pauses_every_sender() {
        let l = RateLimiter::new(0.0);
        let t0 = Instant::now();
        l.queue_full(t0, Duration::from_millis(500));
        assert!(l.try_acquire(t0 + Duration::from_millis(100)).is_err());
        assert!(l.try_acquire(t0 + Duration::from_millis(600)).is_ok());
    }
}
