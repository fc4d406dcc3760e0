//! A carrier's send rate, shared by all its binds: a token bucket at the
//! configured TPS, cut when the SMSC answers 0x58 (throttled) and regained
//! gradually (AIMD), and paused outright after 0x14 (queue full).
//!
//! The cut is sized by what the SMSC let through: the rate becomes 90 % of
//! the submits it accepted over the last second (never more than was being
//! sent), or half of what was sent when it accepted none. The rate then
//! climbs back quickly to just under that point and probes above it slowly,
//! so a carrier held at its SMSC's limit meets a 0x58 every ten seconds or
//! so and loses a tenth of its rate for a moment, instead of a halving every
//! few seconds: the sawtooth that made an OTP behind a throttled carrier
//! wait a hundred milliseconds.

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
/// Regained per second while probing just under or over the rate the SMSC
/// last allowed, as a share of that rate.
const PROBE_PER_S: f64 = 0.005;
/// Probing (slow regain) starts at this share of the rate last allowed…
const PROBE_FROM: f64 = 0.95;
/// …and ends here: past it the old limit no longer holds, regain fast again.
const PROBE_UNTIL: f64 = 1.10;
/// After a 0x58 the rate becomes this share of what the SMSC accepted.
const CUT_TO: f64 = 0.90;
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
    /// Send tokens granted lately (submits attempted).
    sent: RecentCount,
    /// Submits the SMSC accepted lately.
    accepted: RecentCount,
    /// The rate the SMSC allowed when it last said 0x58.
    allowed: Option<f64>,
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
                sent: RecentCount::new(now),
                accepted: RecentCount::new(now),
                allowed: None,
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
        }
        // Also while unlimited: recovery after the next cut counts from
        // here, not from the last time a limit was in force.
        s.last_refill = s.last_refill.max(now);
        if s.rate.is_finite() {
            if s.tokens < 1.0 {
                let wait = (1.0 - s.tokens) / s.rate;
                return Err(now + Duration::from_secs_f64(wait));
            }
            s.tokens -= 1.0;
        }
        s.sent.add(now, 1);
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

    /// The SMSC accepted `n` submits: counted for sizing the next cut.
    pub fn accepted(&self, now: Instant, n: u32) {
        if n > 0 {
            self.lock().accepted.add(now, n);
        }
    }

    /// The SMSC said 0x58: cut the rate to a little under what it accepted
    /// lately (never above what was being sent), or halve it when it
    /// accepted nothing.
    pub fn throttled(&self, now: Instant) {
        let mut s = self.lock();
        if s.last_cut
            .is_some_and(|t| now.duration_since(t) < CUT_HOLD_OFF)
        {
            return;
        }
        // What is being sent: the rate in force, or when none is, the tokens
        // granted per second lately (over the time since sending resumed, so
        // an idle spell before does not dilute it).
        let sending = if s.rate.is_finite() {
            s.rate
        } else {
            s.sent.per_second(now).unwrap_or(1.0)
        };
        let allowed = s.accepted.per_second(now);
        s.rate = match allowed {
            Some(allowed) => (allowed * CUT_TO).min(s.rate),
            None => sending / 2.0,
        }
        .max(MIN_RATE);
        s.allowed = allowed.map(|a| a.min(s.rate / CUT_TO));
        // Recovery heads for the ceiling, or without one for twice the rate
        // allowed (or sent): reaching that lifts the limit again.
        s.target = if self.ceiling.is_finite() {
            self.ceiling
        } else {
            allowed.unwrap_or(sending) * 2.0
        };
        s.tokens = s.tokens.min(1.0);
        // Recovery starts from the cut, not from the last refill (which,
        // while unlimited, may be long ago).
        s.last_refill = s.last_refill.max(now);
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
    /// Additive increase towards the target since the last refill: fast up
    /// to just under the rate the SMSC last allowed, slowly around it, fast
    /// above.
    fn recover(&mut self, now: Instant, ceiling: f64) {
        if self.rate >= self.target || self.last_cut.is_none() {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        let per_s = match self.allowed {
            Some(at) if (at * PROBE_FROM..at * PROBE_UNTIL).contains(&self.rate) => {
                at * PROBE_PER_S
            }
            Some(at) => at * RECOVERY_PER_S,
            None => self.target.min(1e9) * RECOVERY_PER_S,
        };
        self.rate = (self.rate + per_s * elapsed).min(self.target);
        if self.rate >= self.target && !ceiling.is_finite() {
            // Recovered past where the SMSC objected: lift the limit again.
            self.rate = f64::INFINITY;
            self.target = f64::INFINITY;
        }
    }
}

/// Events (submits sent or accepted) over the last second, in tenths of a second.
#[derive(Debug)]
struct RecentCount {
    epoch: Instant,
    /// The newest bucket, in tenths of a second since `epoch`.
    newest: u64,
    buckets: [u32; BUCKETS as usize],
}

const BUCKETS: u64 = 10;
const BUCKET: Duration = Duration::from_millis(100);

impl RecentCount {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            newest: 0,
            buckets: [0; BUCKETS as usize],
        }
    }

    /// Moves to `now`'s bucket, emptying the ones skipped.
    fn advance(&mut self, now: Instant) {
        let slot =
            (now.saturating_duration_since(self.epoch).as_millis() / BUCKET.as_millis()) as u64;
        if slot > self.newest {
            for i in 1..=(slot - self.newest).min(BUCKETS) {
                self.buckets[((self.newest + i) % BUCKETS) as usize] = 0;
            }
            self.newest = slot;
        }
    }

    fn add(&mut self, now: Instant, n: u32) {
        self.advance(now);
        let i = (self.newest % BUCKETS) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(n);
    }

    /// Events per second, over the time since the oldest bucket of the
    /// last second that has any (so a burst after a quiet spell is not
    /// spread over a whole second); `None` when there were none.
    fn per_second(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        let total: u32 = self.buckets.iter().sum();
        let oldest = (0..BUCKETS.min(self.newest + 1))
            .rev()
            .find(|age| self.buckets[((self.newest - age) % BUCKETS) as usize] > 0)?;
        let start = self.epoch + BUCKET * (self.newest - oldest) as u32;
        let span = now.saturating_duration_since(start).as_secs_f64().max(0.01);
        Some(f64::from(total) / span)
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
        granted(&l, t0 + Duration::from_millis(1010), 40);
        assert!(l.rate().is_infinite(), "the limit lifts after recovery");
    }

    #[test]
    fn a_throttle_cuts_to_a_little_under_what_the_smsc_accepted() {
        let l = RateLimiter::new(1000.0);
        let t0 = Instant::now();
        // Nothing accepted yet: halve.
        l.throttled(t0);
        assert_eq!(l.rate(), 500.0);
        // 400 accepted over the next second, then a 0x58: 90 % of 400/s.
        for ms in (0..1000).step_by(10) {
            l.accepted(t0 + Duration::from_millis(ms), 4);
        }
        l.throttled(t0 + Duration::from_millis(1000));
        assert!((l.rate() - 360.0).abs() < 10.0, "{}", l.rate());
        // Accepted more than is being sent now: the cut never raises it.
        let now = t0 + Duration::from_millis(1300);
        l.accepted(now, 900);
        l.throttled(now);
        assert!(l.rate() <= 360.0, "{}", l.rate());
    }

    /// Sends as fast as the limiter allows to an SMSC that admits `limit`
    /// submits per calendar second and answers 0x58 to the rest (as
    /// smsc-sim's `--throttle-tps` does), from `start` for `seconds`.
    /// Returns (submits admitted, 0x58 answers) per second.
    fn against_fixed_window(
        l: &RateLimiter,
        start: Instant,
        seconds: u64,
        limit: u32,
    ) -> Vec<(u32, u32)> {
        let mut per_second = vec![(0, 0); seconds as usize];
        for tick in 0..seconds * 10_000 {
            let now = start + Duration::from_micros(tick * 100);
            let second = (tick / 10_000) as usize;
            while l.try_acquire(now).is_ok() {
                let (admitted, throttled) = &mut per_second[second];
                if *admitted < limit {
                    *admitted += 1;
                    l.accepted(now, 1);
                } else {
                    *throttled += 1;
                    l.throttled(now);
                }
            }
        }
        per_second
    }

    #[test]
    fn an_smsc_limit_is_found_and_held_with_rare_gentle_probes() {
        let l = RateLimiter::new(0.0);
        let t0 = Instant::now();
        let seconds = against_fixed_window(&l, t0, 60, 500);
        let settled = &seconds[10..];
        let admitted: u32 = settled.iter().map(|s| s.0).sum();
        let throttled: u32 = settled.iter().map(|s| s.1).sum();
        let seconds_with_0x58 = settled.iter().filter(|s| s.1 > 0).count();
        // Held near the limit: ≥ 90 % of what the SMSC allows…
        assert!(
            admitted >= 50 * 450,
            "{admitted} in 50 s at a limit of 500/s"
        );
        // …with a 0x58 in few seconds, and few submits each time.
        assert!(seconds_with_0x58 <= 8, "{seconds:?}");
        assert!(throttled <= 30, "{throttled} throttled: {seconds:?}");
        // Never halved once settled: no second sends under half the limit.
        assert!(settled.iter().all(|s| s.0 >= 400), "{seconds:?}");
    }

    #[test]
    fn a_throttle_after_a_quiet_spell_cuts_the_rate_and_it_stays_cut() {
        // 30 s of unlimited traffic the SMSC accepts, then 10 s of silence,
        // then an SMSC that answers 0x58 to everything: the time spent
        // unlimited must not count as recovery after the cut.
        let l = RateLimiter::new(0.0);
        let t0 = Instant::now();
        for ms in 0..30_000 {
            let now = t0 + Duration::from_millis(ms);
            assert!(l.try_acquire(now).is_ok());
            l.accepted(now, 1);
        }
        let resume = t0 + Duration::from_secs(40);
        let mut sent_per_second = vec![0u32; 10];
        for tick in 0..100_000u64 {
            let now = resume + Duration::from_micros(tick * 100);
            // At most 100 per tick, so a limit that lifts fails the test
            // instead of spinning.
            for _ in 0..100 {
                if l.try_acquire(now).is_err() {
                    break;
                }
                sent_per_second[(tick / 10_000) as usize] += 1;
                l.throttled(now);
            }
        }
        assert!(l.rate().is_finite(), "a limit is in force");
        assert!(
            sent_per_second[0] < 100,
            "cut within the first second: {sent_per_second:?}"
        );
        assert!(
            sent_per_second[1..].iter().all(|n| *n <= 5),
            "held near what the SMSC accepts (nothing): {sent_per_second:?}"
        );
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
