//! The one retry policy: exponential backoff with full jitter, for every loop that retries.
//!
//! [`RetryPolicy`] bounds the attempts of one operation (a lost compare-and-swap race gives up
//! with `Conflict` after `max_attempts`; libnetwork's unbounded CAS loops are what DESIGN §4
//! forbids); `Backoff` spaces the attempts of a loop that lives as long as its store (a watch
//! reconnecting), with the same jittered delays, so that hosts recovering from one store outage
//! spread out instead of re-listing in lockstep.

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
    pub fn delay(&self, attempt: u32) -> Duration {
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
    pub async fn wait(&self, attempt: u32) {
        let d = self.delay(attempt);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// The attempts of a loop that retries for as long as it runs (reconnecting a watch, renewing a
/// lease): [`RetryPolicy`]'s jittered delays, growing from `min` to `max`, back to the start
/// after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    /// Delays up to `min` at first, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: min,
                max_delay: max,
            },
            attempt: 0,
        }
    }

    /// Sleeps the next delay.
    pub(crate) async fn wait(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
        self.policy.wait(self.attempt).await;
    }

    /// Back to the shortest delay after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let p = RetryPolicy::default();
        // Capped: each delay is at most its bound.
        let longest = |attempt: u32| (0..500).map(|_| p.delay(attempt)).max().unwrap();
        for _ in 0..100 {
            assert!(p.delay(1) <= Duration::from_millis(2));
            assert!(p.delay(3) <= Duration::from_millis(8));
            assert!(p.delay(40) <= Duration::from_millis(200));
        }
        // Growing: of 500 draws (uniform up to the bound), the longest comes near the bound,
        // which doubles per attempt until the cap (a draw under half its bound 500 times in a
        // row has a chance of 2^-500).
        assert!(longest(1) > Duration::from_millis(1));
        assert!(longest(3) > Duration::from_millis(4));
        assert!(longest(5) > Duration::from_millis(16));
        assert!(longest(40) > Duration::from_millis(100));
        let zero = RetryPolicy {
            base_delay: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.delay(5), Duration::ZERO);
    }

    #[test]
    fn backoff_is_jittered_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (1..=50).map(|a| b.policy.delay(a)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "delays are random, not a fixed schedule"
        );
        b.attempt = 7;
        b.reset();
        assert_eq!(b.attempt, 0);
    }
}
