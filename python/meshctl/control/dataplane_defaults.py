"""The data plane's defaults: what a sidecar runs where the compiled config
leaves a field out. The one table of them on the Python side (the comments in
``dataplane_config`` describe the same numbers; this is what code reads):
``explain`` shows them beside what policies set, and the kinds' checks that
compare a field with a default one read them here.

The Rust decoders (``rust/src/config/resilience.rs``, ``health.rs``,
``traffic.rs``) are the authority. Tests hold this table to a running
DataPlane's ``/config``, which writes out the effective retry policy, retry
budget, circuit breakers and outlier detection, and to its decoder for the
rest it can observe."""

from __future__ import annotations

import math
from typing import Final

from meshctl import dataplane_config as dp

# === routes ===

#: A route without `retry` (and every TCP connect): 2 retries of what reached no application.
RETRY: Final[dp.RetryConfig] = {
    "attempts": 2,
    "retry_on": ["connect-failure", "refused-stream", "reset"],
    "non_idempotent": False,
    "backoff": {"base_ms": 25, "max_ms": 250},
}
#: What a retry condition means for a request that may have reached the upstream: these two say
#: nothing did, so any method is retried on them; the others only idempotent requests.
NOTHING_SENT: Final[tuple[dp.RetryCondition, ...]] = ("connect-failure", "refused-stream")
#: Methods the data plane retries after bytes may have reached the upstream (the `http` crate's
#: `Method::is_idempotent`); so is any gRPC call (by status, gRFC A6) and any method on a route
#: with `non_idempotent`.
IDEMPOTENT_METHODS: Final[frozenset[str]] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def burst(rps: float) -> int:
    """A rate-limit bucket's burst when none is given: the rate, rounded up, at least 1."""
    return max(1, math.ceil(rps))


# === clusters ===

LB: Final[dp.LbPolicy] = "round_robin"
RETRY_BUDGET: Final[dp.RetryBudgetConfig] = {"percent": 20, "min_per_second": 10, "window_ms": 10_000}
CIRCUIT_BREAKERS: Final[dp.CircuitBreakersConfig] = {
    "max_connections": 1024,
    "max_pending_requests": 1024,
    "max_requests": 1024,
    "max_retries": 1024,
}
#: Outlier detection is always on: these apply to every cluster without the section.
OUTLIER_DETECTION: Final[dp.OutlierDetectionConfig] = {
    "consecutive_5xx": 5,
    "consecutive_gateway_errors": 5,
    "base_ejection_ms": 10_000,
    "max_ejection_ms": 300_000,
    "max_ejection_percent": 50,
    "panic_threshold_percent": 50,
}
#: Active health checks run only when a cluster has the section; these fill what it leaves out
#: (the jitter: `health_check_jitter_ms`).
HEALTH_CHECK: Final[dp.HealthCheckConfig] = {
    "type": "tcp",
    "interval_ms": 5_000,
    "timeout_ms": 1_000,
    "healthy_threshold": 2,
    "unhealthy_threshold": 3,
}
LOCALITY_MIN_HEALTHY_PERCENT: Final = 70


def health_check_jitter_ms(interval_ms: int) -> int:
    """The jitter of a health check that gives none: a tenth of its interval."""
    return interval_ms // 10
