//! Fault injection: a route's (or a TCP listener's) delay and abort, each
//! rolled for its own share of the traffic, independently of the other.

use std::time::Duration;

use crate::config::{AbortAnswer, FaultConfig};
use crate::stats::ListenerStats;

/// What the dice decided for one request or connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub delay: Option<Duration>,
    pub abort: Option<AbortAnswer>,
}

/// True with a probability of `percent` / 100.
pub fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

pub fn decide(fault: &FaultConfig) -> Verdict {
    Verdict {
        delay: fault
            .delay
            .as_ref()
            .filter(|d| roll(d.percent))
            .map(|d| d.fixed),
        abort: fault
            .abort
            .as_ref()
            .filter(|a| roll(a.percent))
            .map(|a| a.answer),
    }
}

/// Rolls `fault` for one request or connection, holds it for the delay
/// when one came up, and returns the abort to answer with, if any; both
/// counted on the listener.
pub async fn inject(fault: &FaultConfig, stats: &ListenerStats) -> Injected {
    let verdict = decide(fault);
    if let Some(delay) = verdict.delay {
        stats.faults_delayed.inc();
        tokio::time::sleep(delay).await;
    }
    if verdict.abort.is_some() {
        stats.faults_aborted.inc();
    }
    Injected {
        delayed: verdict.delay.is_some(),
        abort: verdict.abort,
    }
}

/// What a fault did to a request or connection: delayed it, and the answer
/// it gets instead of going on (an abort).
pub struct Injected {
    pub delayed: bool,
    pub abort: Option<AbortAnswer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_independent_and_near_their_percentages() {
        let fault = FaultConfig {
            delay: Some(crate::config::FaultDelay {
                percent: 50.0,
                fixed: Duration::from_millis(1),
            }),
            abort: Some(crate::config::FaultAbort {
                percent: 10.0,
                answer: AbortAnswer::Http(503),
            }),
        };
        let n = 20_000;
        let verdicts: Vec<Verdict> = (0..n).map(|_| decide(&fault)).collect();
        let delayed = verdicts.iter().filter(|v| v.delay.is_some()).count() as f64 / n as f64;
        let aborted = verdicts.iter().filter(|v| v.abort.is_some()).count() as f64 / n as f64;
        let both = verdicts
            .iter()
            .filter(|v| v.delay.is_some() && v.abort.is_some())
            .count() as f64
            / n as f64;
        assert!((delayed - 0.5).abs() < 0.02, "{delayed}");
        assert!((aborted - 0.1).abs() < 0.01, "{aborted}");
        assert!((both - 0.05).abs() < 0.01, "{both}");
        assert!(roll(100.0) && !roll(0.0));
    }
}
