//! Bounded retries with jittered exponential backoff, for lost compare-and-swap races.

use std::time::Duration;

/// How often and how patiently a lost race is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts of one operation before it fails with `Conflict`.
    pub max_attempts: u32,
    /// Upper bound of the first wait; doubles per attempt.
    pub base_delay: Duration,
    /// Upper bound of any wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 20,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based count of attempts lost so far): uniformly
    /// random up to `base_delay · 2^(attempt-1)`, capped at `max_delay` ("full jitter"), so
    /// racers spread out instead of colliding again in lockstep.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(rand::random_range(0..=micros))
    }

    /// Sleeps for [`RetryPolicy::delay`] of `attempt`.
    pub(crate) async fn wait(&self, attempt: u32) {
        let d = self.delay(attempt);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            assert!(p.delay(1) <= Duration::from_millis(2));
            assert!(p.delay(3) <= Duration::from_millis(8));
            assert!(p.delay(40) <= Duration::from_millis(200));
        }
        let zero = RetryPolicy {
            base_delay: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.delay(5), Duration::ZERO);
    }
}
