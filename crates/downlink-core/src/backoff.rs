//! Jittered exponential back-off, shared by every retry loop (remote downloads, the bucket
//! client, the optimistic key-value store).
//!
//! Each retry waits a random time between half and all of a ceiling that doubles per retry
//! ("equal jitter"): waits grow fast enough to let an overloaded peer recover, and parties
//! that failed together do not retry in lockstep.

use std::time::Duration;

/// A back-off schedule: the first retry's ceiling, doubled per retry up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait.
    pub first: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of retry number `retry` (1 for the first): `first × 2^(retry-1)`, at most `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(20);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// How long to wait before retry number `retry`, with `jitter` in `[0, 1)`: between half
    /// and all of [`ceiling`](Self::ceiling).
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        ceiling.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// A jitter value in `[0, 1)` from the wall clock's nanoseconds: spreading retries out needs
/// no secret randomness.
pub fn clock_jitter() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    f64::from(nanos.unwrap_or(0) % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stays_within_half_and_whole() {
        let backoff = Backoff { first: Duration::from_millis(500), max: Duration::from_secs(4) };
        let ceilings: Vec<u128> = (1..=6).map(|retry| backoff.ceiling(retry).as_millis()).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff.ceiling(0), Duration::from_millis(500));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(4));
        for retry in 1..=6 {
            let ceiling = backoff.ceiling(retry);
            assert_eq!(backoff.delay(retry, 0.0), ceiling / 2);
            assert!(backoff.delay(retry, 0.999) <= ceiling);
            assert_eq!(backoff.delay(retry, 7.0), ceiling, "jitter is clamped");
        }
        let jitter = clock_jitter();
        assert!((0.0..1.0).contains(&jitter));
    }
}
