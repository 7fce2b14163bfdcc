//! [`Backoff`]: how long to wait between reconnection attempts (capped exponential, jittered).

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with jitter: attempt `n` waits a random time in
/// `[d/2, d]` where `d = min(initial * 2^n, max)`. The jitter keeps a fleet of workers that lost
/// the same broker from reconnecting in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting more than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The ceiling of attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before attempt `attempt` (0-based): jittered in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stay_within_jitter_bounds() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
        assert_eq!(backoff.ceiling(4), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(60), Duration::from_secs(1));
        for attempt in 0..10 {
            let d = backoff.delay(attempt);
            let c = backoff.ceiling(attempt);
            assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
        }
    }
}
