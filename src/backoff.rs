//! Exponential backoff with jitter, shared by message retries and webhook
//! redelivery.

use std::time::Duration;

use rand::Rng;

/// The delay before attempt number `attempt` (1-based): `base_ms` doubling
/// per attempt, capped at `max_ms`, with ±20 % jitter so a burst of
/// failures does not retry in lockstep.
pub fn jittered(base_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let base = base_ms.max(1);
    let ms = base
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(max_ms.max(base));
    Duration::from_millis(ms).mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap_within_the_jitter() {
        for (attempt, nominal) in [(1, 100), (2, 200), (3, 400), (10, 1000)] {
            let d = jittered(100, 1000, attempt).as_millis() as u64;
            assert!(
                (nominal * 8 / 10..=nominal * 12 / 10).contains(&d),
                "attempt {attempt}: {d} ms"
            );
        }
    }
}
