//! The resilience sections: a cluster's `circuit_breakers`, the limits on
//! what one proxy sends to a cluster at once. Over a limit, a request is
//! refused at once (503, `x-meshctl-error: overflow`) rather than queued
//! behind a struggling upstream. Retries, budgets and health checks join
//! them here.

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

// === impl Decoder (resilience) ===

impl Decoder {
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
