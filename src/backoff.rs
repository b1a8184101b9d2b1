//! The one backoff of fleetmon: exponential from a first delay, capped, with jitter
//! where many clients would otherwise retry in step (agents reconnecting to a
//! collector that came back).

use std::time::Duration;

use rand::Rng as _;

/// Delays that double from `first` up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    jitter: bool,
}

impl Backoff {
    /// `first` after the first failure, doubling, at most `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            jitter: false,
        }
    }

    /// Each delay drawn from 50–100 % of its step, so clients spread out.
    pub const fn jittered(self) -> Self {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The delay after `failures` failures in a row (1: the first; 0 counts as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(30))
            .min(self.cap);
        if self.jitter {
            step.mul_f64(rand::rng().random_range(0.5..=1.0))
        } else {
            step
        }
    }

    /// A counter of failures in a row, for a retry loop.
    pub fn retries(self) -> Retries {
        Retries {
            backoff: self,
            failures: 0,
        }
    }
}

/// Failures in a row of one retry loop, and the delay the next one calls for.
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    failures: u32,
}

impl Retries {
    /// Counts a failure and returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// A success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let delays: Vec<u64> = [0, 1, 2, 4, 9, 10, 1000]
            .iter()
            .map(|&n| backoff.delay(n).as_secs())
            .collect();
        assert_eq!(delays, [1, 1, 2, 8, 256, 300, 300]);
        let mut retries = backoff.retries();
        assert_eq!(retries.failed(), Duration::from_secs(1));
        assert_eq!(retries.failed(), Duration::from_secs(2));
        retries.reset();
        assert_eq!(retries.failed(), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delays_stay_within_half_and_all_of_the_step() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).jittered();
        for failures in [1, 3, 20] {
            let step =
                Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).delay(failures);
            for _ in 0..100 {
                let delay = backoff.delay(failures);
                assert!(delay >= step / 2 && delay <= step, "{delay:?} of {step:?}");
            }
        }
    }
}
