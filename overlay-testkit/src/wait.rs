//! Waiting for a condition the way every test here does: poll it, and panic naming it when a
//! bound that only a bug reaches has passed. A test waits for the event it needs, not for a
//! time it guessed.

use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds; returns how long that took, or panics with `what`
/// after `limit`. Needs a tokio runtime with timers (every `#[tokio::test]` has one).
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
