//! Resilience at run time: the retry budget each cluster keeps, and the
//! back-off between tries. Circuit-breaker limits are gauges checked where
//! requests and connections are admitted (`http::proxy`, `http::pool`, `tcp`).

mod budget;

pub use budget::Budget;

use std::time::Duration;

use crate::config::RetryPolicy;

/// Full jitter: a random wait up to min(max, base x 2^retry), so that
/// callers retrying at once spread out instead of arriving together.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << retry.min(16))
        .min(policy.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below() {
        let policy = RetryPolicy::default();
        for retry in 0..20 {
            let ceiling = Duration::from_millis((25u64 << retry.min(16)).min(250));
            for _ in 0..100 {
                assert!(backoff(&policy, retry) <= ceiling, "retry {retry}");
            }
        }
        let waits: Vec<Duration> = (0..200).map(|_| backoff(&policy, 5)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(125)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(125)));
    }
}
