//! When to try Redis again after a connection failed: exponential backoff with jitter.
//!
//! Owns the arithmetic only: 100 ms doubling to 5 s, each wait drawn between half and all of the current step so
//! that nodes which lost Redis together do not all come back in the same millisecond. It must not read a clock or
//! draw randomness: the caller passes a random number in.

use std::time::Duration;

/// The first step after a failure.
pub const FIRST_STEP: Duration = Duration::from_millis(100);

/// The step stops doubling here.
pub const MAX_STEP: Duration = Duration::from_secs(5);

/// The state of one connection's retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { step: FIRST_STEP }
    }
}

impl Backoff {
    /// The wait before the next attempt, between half and all of the current step as `random` goes from 0 to
    /// `u32::MAX`; the step then doubles, up to `MAX_STEP`.
    pub fn next_wait(&mut self, random: u32) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_STEP);
        let half = step / 2;
        let fraction = f64::from(random) / f64::from(u32::MAX);
        half + half.mul_f64(fraction)
    }

    /// A connection succeeded: the next failure starts again from the first step.
    pub fn reset(&mut self) {
        self.step = FIRST_STEP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_from_100_ms_and_stop_at_5_s() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..9)
            .map(|_| backoff.next_wait(u32::MAX).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_step() {
        let mut low = Backoff::default();
        let mut mid = Backoff::default();
        assert_eq!(low.next_wait(0), Duration::from_millis(50));
        let wait = mid.next_wait(u32::MAX / 2);
        assert!(
            wait > Duration::from_millis(70) && wait < Duration::from_millis(80),
            "{wait:?}"
        );
    }

    #[test]
    fn reset_starts_again_from_the_first_step() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next_wait(0);
        }
        backoff.reset();
        assert_eq!(backoff.next_wait(u32::MAX), FIRST_STEP);
    }
}
