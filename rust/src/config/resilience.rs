//! The resilience sections: a route's `retry` policy, a cluster's
//! `retry_budget` and its `circuit_breakers`, the limits on what one proxy
//! sends to a cluster at once. Over a limit, a request is refused at once
//! (503, `x-meshctl-error: overflow`) rather than queued behind a
//! struggling upstream.

use std::time::Duration;

use serde_json::Value;

use super::decode::Decoder;

/// Envoy's defaults: generous enough that only a runaway load meets them.
const DEFAULT_LIMIT: u64 = 1024;
const MAX_LIMIT: u64 = 1_000_000;

/// Per cluster and per proxy (every worker together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Upstream connections open at once (HTTP and TCP).
    pub max_connections: u64,
    /// Requests waiting for a new upstream connection at once.
    pub max_pending_requests: u64,
    /// Requests in flight at once.
    pub max_requests: u64,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
        }
    }
}

/// A route's retries. So far a try is retried when it could not connect
/// (nothing was sent, so any method and body is safe to send again), on
/// another endpoint when there is one. The default, when the route has no
/// `retry`, is 2 retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first; 0 disables retries.
    pub attempts: u32,
    /// Full jitter: retry n waits a random time up to min(max, base x 2^n).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

/// Linkerd's retry budget, per cluster: retries may add at most `ratio` of
/// the requests over `window`, plus `min_per_second`, so that a failing
/// upstream never has its load multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries per hundred requests.
    pub percent: u32,
    pub min_per_second: u32,
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

// === impl Decoder (resilience) ===

impl Decoder {
    pub(super) fn retry(&mut self, v: &Value, path: &str) -> Option<RetryPolicy> {
        let f = self.object(v, path, &["attempts", "retry_on", "backoff"])?;
        let d = RetryPolicy::default();
        let attempts = self
            .uint(&f, "attempts", 0, 10)
            .map_or(d.attempts, |n| n as u32);
        for (at, item) in self.list(&f, "retry_on", false) {
            if item.as_str() != Some("connect-failure") {
                // Retrying after bytes may have reached the upstream needs the request
                // kept for replay; until then only the safe condition is offered.
                self.err(at, "expected connect-failure (the only condition so far)");
            }
        }
        let (mut backoff_base, mut backoff_max) = (d.backoff_base, d.backoff_max);
        if let Some(b) = f.get("backoff") {
            if let Some(bf) = self.object(b, &f.at("backoff"), &["base_ms", "max_ms"]) {
                backoff_base = self.millis(&bf, "base_ms", d.backoff_base.as_millis() as u64);
                backoff_max = self.millis(&bf, "max_ms", d.backoff_max.as_millis() as u64);
                if backoff_max < backoff_base {
                    self.err(bf.at("max_ms"), "must be at least base_ms");
                }
            }
        }
        Some(RetryPolicy {
            attempts,
            backoff_base,
            backoff_max,
        })
    }

    pub(super) fn retry_budget(&mut self, v: &Value, path: &str) -> RetryBudget {
        let d = RetryBudget::default();
        let Some(f) = self.object(v, path, &["percent", "min_per_second", "window_ms"]) else {
            return d;
        };
        RetryBudget {
            percent: self
                .uint(&f, "percent", 0, 1000)
                .map_or(d.percent, |p| p as u32),
            min_per_second: self
                .uint(&f, "min_per_second", 0, 100_000)
                .map_or(d.min_per_second, |n| n as u32),
            window: self.millis(&f, "window_ms", d.window.as_millis() as u64),
        }
    }

    pub(super) fn circuit_breakers(&mut self, v: &Value, path: &str) -> CircuitBreakers {
        let keys = ["max_connections", "max_pending_requests", "max_requests"];
        let Some(f) = self.object(v, path, &keys) else {
            return CircuitBreakers::default();
        };
        let mut limit = |key| self.uint(&f, key, 1, MAX_LIMIT).unwrap_or(DEFAULT_LIMIT);
        CircuitBreakers {
            max_connections: limit("max_connections"),
            max_pending_requests: limit("max_pending_requests"),
            max_requests: limit("max_requests"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::Config;

    fn breakers(section: &str) -> Vec<String> {
        issues(&format!(
            "clusters:\n - {{name: a, endpoints: [], circuit_breakers: {section}}}\n"
        ))
    }

    #[test]
    fn defaults_are_generous_and_each_limit_can_be_set() {
        let c = Config::parse("clusters:\n - {name: a, endpoints: []}\n - {name: b, endpoints: [], circuit_breakers: {max_requests: 10}}\n").unwrap();
        let (a, b) = (
            &c.clusters[0].circuit_breakers,
            &c.clusters[1].circuit_breakers,
        );
        assert_eq!(
            (a.max_connections, a.max_pending_requests, a.max_requests),
            (1024, 1024, 1024)
        );
        assert_eq!(
            (b.max_connections, b.max_pending_requests, b.max_requests),
            (1024, 1024, 10)
        );
    }

    #[test]
    fn retries_and_budgets_have_safe_defaults_and_checked_fields() {
        let c = Config::parse(
            "listeners:\n - {name: l, address: 127.0.0.1:1, routes: [{backends: [{cluster: a}]}, \
             {backends: [{cluster: a}], retry: {attempts: 0}}, \
             {backends: [{cluster: a}], retry: {attempts: 3, retry_on: [connect-failure], backoff: {base_ms: 10, max_ms: 40}}}]}\n\
             clusters:\n - {name: a, endpoints: [], retry_budget: {percent: 50, min_per_second: 1, window_ms: 2000}}\n",
        )
        .unwrap();
        let crate::config::ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        let default = &routes[0].retry;
        assert_eq!(default.attempts, 2);
        assert_eq!(default.backoff_base.as_millis(), 25);
        assert_eq!(default.backoff_max.as_millis(), 250);
        assert_eq!(routes[1].retry.attempts, 0);
        assert_eq!(
            (
                routes[2].retry.attempts,
                routes[2].retry.backoff_max.as_millis()
            ),
            (3, 40)
        );
        let budget = &c.clusters[0].retry_budget;
        assert_eq!((budget.percent, budget.min_per_second), (50, 1));
        assert_eq!(budget.window.as_secs(), 2);

        let got = issues(
            "listeners:\n - {name: l, address: 127.0.0.1:1, routes: [{backends: [{cluster: a}], \
             retry: {attempts: 11, retry_on: [5xx], backoff: {base_ms: 50, max_ms: 10}, colour: red}}]}\n\
             clusters:\n - {name: a, endpoints: [], retry_budget: {percent: -1}}\n",
        );
        let r = "listeners[0].routes[0].retry";
        for want in [
            format!("{r}.attempts: 11 is out of range 0..=10"),
            format!("{r}.retry_on[0]: expected connect-failure"),
            format!("{r}.backoff.max_ms: must be at least base_ms"),
            format!("{r}.colour: unknown field"),
            "clusters[0].retry_budget.percent: expected a whole number".to_string(),
        ] {
            assert!(has(&got, &want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn bad_limits_are_reported_with_paths() {
        let got = breakers("{max_requests: 0, max_connections: many, max_retries: 3}");
        for want in [
            "clusters[0].circuit_breakers.max_requests: 0 is out of range 1..=1000000",
            "clusters[0].circuit_breakers.max_connections: expected a whole number",
            "clusters[0].circuit_breakers.max_retries: unknown field",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            breakers("[1]"),
            ["clusters[0].circuit_breakers: expected a mapping, got a list"]
        );
    }
}
