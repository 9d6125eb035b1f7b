//! The resilience sections: a route's `retry` policy, a cluster's
//! `retry_budget` and its `circuit_breakers`, the limits on what one proxy
//! sends to a cluster at once. Over a limit, a request is refused at once
//! (503, `x-meshctl-error: overflow`) rather than queued behind a
//! struggling upstream.

use std::time::Duration;

use serde_json::Value;

use super::decode::Decoder;

/// `a, b, c` from a name table, for error messages.
fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

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
    /// Retries in flight at once.
    pub max_retries: u64,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
            max_retries: DEFAULT_LIMIT,
        }
    }
}

/// What makes a failed try worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// No connection could be made: nothing was sent.
    ConnectFailure,
    /// An HTTP/2 upstream refused the stream: nothing was processed.
    RefusedStream,
    /// The connection or stream failed before any response byte (or the
    /// per-try timeout passed first).
    Reset,
    /// A 502, 503 or 504 answer.
    GatewayError,
    /// Any 5xx answer.
    ServerError,
}

impl RetryOn {
    pub const ALL: [(&'static str, RetryOn); 5] = [
        ("connect-failure", RetryOn::ConnectFailure),
        ("refused-stream", RetryOn::RefusedStream),
        ("reset", RetryOn::Reset),
        ("gateway-error", RetryOn::GatewayError),
        ("5xx", RetryOn::ServerError),
    ];

    pub fn name(self) -> &'static str {
        RetryOn::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }

    /// Conditions under which nothing reached the upstream application:
    /// safe to retry for any method and any body.
    pub fn nothing_processed(self) -> bool {
        matches!(self, RetryOn::ConnectFailure | RetryOn::RefusedStream)
    }
}

/// gRPC statuses a route may retry, by their names in the spec.
pub const GRPC_CODES: [(&str, u16); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// A route's retries: which failures are retried, how many times, how long
/// each try may take and how long to wait between them. Without a `retry`
/// section a route retries what is safe: 2 retries on connect-failure,
/// refused-stream and reset, for idempotent methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first; 0 disables retries.
    pub attempts: u32,
    pub retry_on: Vec<RetryOn>,
    /// HTTP statuses retried besides `retry_on`.
    pub codes: Vec<u16>,
    /// gRPC status codes retried (read from headers or trailers).
    pub grpc_codes: Vec<u16>,
    /// Bounds each try up to its response head.
    pub per_try_timeout: Option<Duration>,
    /// Retry POST, PATCH and other non-idempotent methods after bytes may
    /// have reached the upstream, too.
    pub non_idempotent: bool,
    /// Full jitter: retry n waits a random time up to min(max, base x 2^n).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
            ],
            codes: Vec::new(),
            grpc_codes: Vec::new(),
            per_try_timeout: None,
            non_idempotent: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

impl CircuitBreakers {
    pub fn to_json(self) -> Value {
        serde_json::json!({
            "max_connections": self.max_connections,
            "max_pending_requests": self.max_pending_requests,
            "max_requests": self.max_requests,
            "max_retries": self.max_retries,
        })
    }
}

impl RetryBudget {
    pub fn to_json(self) -> Value {
        serde_json::json!({
            "percent": self.percent,
            "min_per_second": self.min_per_second,
            "window_ms": self.window.as_millis() as u64,
        })
    }
}

// === impl RetryPolicy ===

impl RetryPolicy {
    pub fn retries_on(&self, condition: RetryOn) -> bool {
        self.attempts > 0 && self.retry_on.contains(&condition)
    }

    /// True when an answer with this status is retried (before idempotency).
    pub fn retries_status(&self, status: u16) -> bool {
        self.attempts > 0
            && (self.codes.contains(&status)
                || (status >= 500 && self.retry_on.contains(&RetryOn::ServerError))
                || (matches!(status, 502..=504) && self.retry_on.contains(&RetryOn::GatewayError)))
    }

    /// True when the policy may retry after the request (head and body) may
    /// have reached the upstream: then a copy is kept for replay.
    pub fn needs_replay(&self) -> bool {
        self.attempts > 0
            && (!self.codes.is_empty()
                || !self.grpc_codes.is_empty()
                || self.retry_on.iter().any(|c| *c != RetryOn::ConnectFailure))
    }

    /// The policy as `/config` and explain show it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "attempts": self.attempts,
            "retry_on": self.retry_on.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "non_idempotent": self.non_idempotent,
            "backoff": {
                "base_ms": self.backoff_base.as_millis() as u64,
                "max_ms": self.backoff_max.as_millis() as u64,
            },
        });
        if !self.codes.is_empty() {
            v["codes"] = self.codes.clone().into();
        }
        if !self.grpc_codes.is_empty() {
            let names: Vec<&str> = GRPC_CODES
                .iter()
                .filter(|(_, c)| self.grpc_codes.contains(c))
                .map(|(n, _)| *n)
                .collect();
            v["grpc_codes"] = names.into();
        }
        if let Some(t) = self.per_try_timeout {
            v["per_try_timeout_ms"] = (t.as_millis() as u64).into();
        }
        v
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
        let f = self.object(
            v,
            path,
            &[
                "attempts",
                "retry_on",
                "codes",
                "grpc_codes",
                "per_try_timeout_ms",
                "non_idempotent",
                "backoff",
            ],
        )?;
        let d = RetryPolicy::default();
        let attempts = self
            .uint(&f, "attempts", 0, 10)
            .map_or(d.attempts, |n| n as u32);
        let retry_on = match f.get("retry_on") {
            None => d.retry_on,
            Some(_) => self
                .list(&f, "retry_on", false)
                .into_iter()
                .filter_map(|(at, item)| {
                    let found = RetryOn::ALL.iter().find(|(n, _)| item.as_str() == Some(n));
                    if found.is_none() {
                        self.err(at, format!("expected one of: {}", names(&RetryOn::ALL)));
                    }
                    found.map(|(_, c)| *c)
                })
                .collect(),
        };
        let codes = self.statuses(&f, "codes");
        let grpc_codes = self
            .list(&f, "grpc_codes", false)
            .into_iter()
            .filter_map(|(at, item)| {
                let found = GRPC_CODES.iter().find(|(n, _)| item.as_str() == Some(n));
                if found.is_none() {
                    self.err(at, format!("expected one of: {}", names(&GRPC_CODES)));
                }
                found.map(|(_, c)| *c)
            })
            .collect();
        let per_try_timeout = self
            .uint(&f, "per_try_timeout_ms", 1, 86_400_000)
            .map(Duration::from_millis);
        let non_idempotent = self.boolean(&f, "non_idempotent").unwrap_or(false);
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
            retry_on,
            codes,
            grpc_codes,
            per_try_timeout,
            non_idempotent,
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
        let keys = [
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
        ];
        let Some(f) = self.object(v, path, &keys) else {
            return CircuitBreakers::default();
        };
        let mut limit = |key| self.uint(&f, key, 1, MAX_LIMIT).unwrap_or(DEFAULT_LIMIT);
        CircuitBreakers {
            max_connections: limit("max_connections"),
            max_pending_requests: limit("max_pending_requests"),
            max_requests: limit("max_requests"),
            max_retries: limit("max_retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{Config, RetryOn};

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
        assert_eq!(
            default.retry_on,
            [
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset
            ]
        );
        assert!(!default.non_idempotent && default.needs_replay());
        assert_eq!(routes[1].retry.attempts, 0);
        assert!(!routes[1].retry.needs_replay());
        assert!(
            !routes[2].retry.needs_replay(),
            "connect failures need no copy"
        );
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
             retry: {attempts: 11, retry_on: [5xx, teapot], codes: [99, 503], grpc_codes: [unavailable, lost], non_idempotent: 1, \
             backoff: {base_ms: 50, max_ms: 10}, colour: red}}]}\n\
             clusters:\n - {name: a, endpoints: [], retry_budget: {percent: -1}}\n",
        );
        let r = "listeners[0].routes[0].retry";
        for want in [
            format!("{r}.attempts: 11 is out of range 0..=10"),
            format!("{r}.retry_on[1]: expected one of: connect-failure, refused-stream"),
            format!("{r}.codes[0]: expected an HTTP status 100..=599"),
            format!("{r}.grpc_codes[1]: expected one of: cancelled"),
            format!("{r}.non_idempotent: expected true or false, got a number"),
            format!("{r}.backoff.max_ms: must be at least base_ms"),
            format!("{r}.colour: unknown field"),
            "clusters[0].retry_budget.percent: expected a whole number".to_string(),
        ] {
            assert!(has(&got, &want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 8, "{got:?}");
    }

    #[test]
    fn bad_limits_are_reported_with_paths() {
        let got = breakers("{max_requests: 0, max_connections: many, max_retry: 3}");
        for want in [
            "clusters[0].circuit_breakers.max_requests: 0 is out of range 1..=1000000",
            "clusters[0].circuit_breakers.max_connections: expected a whole number",
            "clusters[0].circuit_breakers.max_retry: unknown field",
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
