//! How the SMSC decides what to answer: message ids, the TPS throttle, error injection and the
//! outcome each accepted message will have.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;

use super::config::{MessageIdFormat, Outcome, OutcomeMix, SimConfig};

/// Message ids: a random per-instance prefix plus a counter, so ids never repeat within one
/// simulator and are very unlikely to collide with an earlier run's.
#[derive(Debug)]
pub(crate) struct IdGen {
    base: u64,
    counter: AtomicU64,
    format: MessageIdFormat,
}

impl IdGen {
    fn new(format: MessageIdFormat) -> IdGen {
        let prefix: u32 = rand::rng().random();
        let base = if format.is_hex() {
            // The top nibble a..f: every id has a letter (so case matters) and 16 digits.
            u64::from(prefix | 0xA000_0000) << 32
        } else {
            // Keeps the id below u64::MAX: 999_999 * 10^13 + counter.
            u64::from(prefix % 1_000_000) * 10_000_000_000_000
        };
        IdGen {
            base,
            counter: AtomicU64::new(1),
            format,
        }
    }

    /// The next id, numeric and formatted.
    pub(crate) fn next(&self) -> (u64, String) {
        let n = self
            .base
            .wrapping_add(self.counter.fetch_add(1, Ordering::Relaxed));
        (n, self.format.format(n))
    }
}

/// A fixed one-second window shared by all sessions: the first `limit` submits of each second
/// pass, the rest are throttled. State is packed as `second << 32 | count` in one atomic so the
/// hot path takes no lock.
#[derive(Debug)]
pub(crate) struct Throttle {
    limit: Option<u32>,
    /// The limit applies from this long after `epoch` on.
    after: Duration,
    epoch: Instant,
    state: AtomicU64,
}

impl Throttle {
    fn new(limit: Option<u32>, after: Duration) -> Throttle {
        Throttle {
            limit,
            after,
            epoch: Instant::now(),
            state: AtomicU64::new(0),
        }
    }

    /// Counts one submit; `false` when it is over the limit.
    pub(crate) fn admit(&self) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let elapsed = self.epoch.elapsed();
        if elapsed < self.after {
            return true;
        }
        let second = elapsed.as_secs() & 0xFFFF_FFFF;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> 32, current & 0xFFFF_FFFF);
            let next = if window == second {
                if count >= u64::from(limit) {
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Everything that decides the fate of a submit_sm.
#[derive(Debug)]
pub(crate) struct Policy {
    pub ids: IdGen,
    pub throttle: Throttle,
    errors: Vec<(f64, u32)>,
    mix: OutcomeMix,
    scripts: Mutex<HashMap<String, VecDeque<Outcome>>>,
    /// Outcomes still scripted, so the common case skips the lock.
    scripted: AtomicUsize,
}

impl Policy {
    pub(crate) fn new(cfg: &SimConfig) -> Policy {
        Policy {
            ids: IdGen::new(cfg.message_id_format),
            throttle: Throttle::new(cfg.throttle_tps, cfg.throttle_after),
            errors: cfg.error_injection.clone(),
            mix: cfg.outcomes,
            scripts: Mutex::new(HashMap::new()),
            scripted: AtomicUsize::new(0),
        }
    }

    /// Rolls error injection once: `Some(status)` means answer with that status.
    pub(crate) fn injected_error(&self) -> Option<u32> {
        if self.errors.is_empty() {
            return None;
        }
        let roll: f64 = rand::rng().random();
        let mut cumulative = 0.0;
        for &(probability, status) in &self.errors {
            cumulative += probability;
            if roll < cumulative {
                return Some(status);
            }
        }
        None
    }

    /// Queues outcomes for the next accepted submits to `destination`.
    pub(crate) fn script(&self, destination: &str, outcomes: Vec<Outcome>) {
        let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        self.scripted.fetch_add(outcomes.len(), Ordering::AcqRel);
        scripts
            .entry(destination.to_owned())
            .or_default()
            .extend(outcomes);
    }

    /// The outcome of an accepted submit: the next scripted one for this destination, else a
    /// draw from the mix.
    pub(crate) fn outcome_for(&self, destination: &str) -> Outcome {
        if self.scripted.load(Ordering::Acquire) > 0 {
            let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
            let next = scripts
                .get_mut(destination)
                .map(|q| (q.pop_front(), q.is_empty()));
            if let Some((outcome, drained)) = next {
                if drained {
                    scripts.remove(destination);
                }
                if let Some(outcome) = outcome {
                    self.scripted.fetch_sub(1, Ordering::AcqRel);
                    return outcome;
                }
            }
        }
        self.mix.pick()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_formatted() {
        let hex = IdGen::new(MessageIdFormat::Hex);
        let (a, sa) = hex.next();
        let (b, sb) = hex.next();
        assert_ne!(a, b);
        assert_eq!(sa.len(), 16);
        assert!(
            sb.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let dec = IdGen::new(MessageIdFormat::Decimal);
        let (n, s) = dec.next();
        assert_eq!(s.parse::<u64>().ok(), Some(n));
    }

    #[test]
    fn throttle_admits_limit_per_second() {
        let t = Throttle::new(Some(10), Duration::ZERO);
        let admitted = (0..25).filter(|_| t.admit()).count();
        // All within the same second (or, rarely, straddling two).
        assert!(admitted == 10 || admitted == 20, "{admitted}");
    }

    #[test]
    fn throttle_admits_everything_until_its_start() {
        let t = Throttle::new(Some(10), Duration::from_secs(3600));
        assert_eq!((0..25).filter(|_| t.admit()).count(), 25);
    }

    #[test]
    fn scripted_outcomes_come_first_then_the_mix() {
        let p = Policy::new(&SimConfig::default());
        p.script("4915", vec![Outcome::Undeliverable, Outcome::Expired]);
        assert_eq!(p.outcome_for("4916"), Outcome::Delivered);
        assert_eq!(p.outcome_for("4915"), Outcome::Undeliverable);
        assert_eq!(p.outcome_for("4915"), Outcome::Expired);
        assert_eq!(p.outcome_for("4915"), Outcome::Delivered);
    }
}
