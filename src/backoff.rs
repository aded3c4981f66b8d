//! The one backoff policy: how long to wait after a run of failures.
//!
//! Every retry in the service (a run's attempts, a continuous process's
//! restarts, stream reconnects, webhook deliveries, protective closes) waits
//! `base · 2^(failures − 1)`, capped at `max`, plus up to `jitter` of that
//! again, so many retriers that failed together do not come back together.
//! One type instead of a hand-rolled copy per caller keeps the policy
//! reviewable in one place.
//!
//! Owns: the arithmetic. Imports nothing of the service (ground floor).

use std::time::Duration;

/// Exponential backoff with a cap and proportional jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Up to this share of the wait is added at random (0 = none).
    jitter: f64,
}

impl Backoff {
    /// `base` after the first failure, doubling up to `max`, with up to 50 % jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, jitter: 0.5 }
    }

    /// The same policy without jitter (for waits that are stored or shown).
    pub const fn exact(self) -> Self {
        Backoff { jitter: 0.0, ..self }
    }

    /// The wait after `failures` failures in a row (0 and 1 both give `base`).
    pub fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let wait = self.base.saturating_mul(1u32 << doublings.min(31)).min(self.max);
        if self.jitter > 0.0 {
            wait.mul_f64(1.0 + rand::random_range(0.0..self.jitter))
        } else {
            wait
        }
    }

    /// The longest wait this policy gives before jitter.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30)).exact();
        let waits: Vec<u128> = (0..10).map(|n| b.wait(n).as_millis()).collect();
        assert_eq!(waits, [500, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(b.wait(u32::MAX), Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn jitter_adds_at_most_half() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for failures in 1..8 {
            let exact = b.exact().wait(failures);
            for _ in 0..50 {
                let w = b.wait(failures);
                assert!(w >= exact && w <= exact.mul_f64(1.5), "{w:?} vs {exact:?}");
            }
        }
    }
}
