"""The sections policies compile into: what a TrafficPolicy adds
to the clusters of its service (outlier detection, health check, retry budget,
locality) and what a RateLimitPolicy puts on its service's inbound listener.
Functions of specs alone, called by the compiler (they import nothing of it).

Every field a policy leaves out stays out of the section, so the data plane's
default (written in ``dataplane_config``) applies; a section with nothing set
is left out.
"""

from __future__ import annotations

from meshctl import dataplane_config as dp
from meshctl.control.kinds.durations import parse_duration
from meshctl.control.kinds.ratelimitpolicy import RateLimit, RateLimitPolicySpec
from meshctl.control.kinds.trafficpolicy import (
    HealthCheck,
    LocalityLbSetting,
    OutlierDetection,
    RetryBudget,
    TrafficPolicySpec,
)
from meshctl.spiffe import spiffe_id

# === TrafficPolicy -> cluster ===


def outlier_detection(od: OutlierDetection) -> dp.OutlierDetectionConfig:
    out: dp.OutlierDetectionConfig = {}
    if od.consecutive_5xx_errors is not None:
        out["consecutive_5xx"] = od.consecutive_5xx_errors
    if od.consecutive_gateway_errors is not None:
        out["consecutive_gateway_errors"] = od.consecutive_gateway_errors
    if od.base_ejection_time is not None:
        out["base_ejection_ms"] = parse_duration(od.base_ejection_time)
    if od.max_ejection_time is not None:
        out["max_ejection_ms"] = parse_duration(od.max_ejection_time)
    if od.max_ejection_percent is not None:
        out["max_ejection_percent"] = od.max_ejection_percent
    if od.min_health_percent is not None:  # Istio's name for the panic threshold
        out["panic_threshold_percent"] = od.min_health_percent
    return out


def health_check(hc: HealthCheck) -> dp.HealthCheckConfig:
    out: dp.HealthCheckConfig = {"type": "tcp"}
    if hc.http is not None:
        out = {"type": "http", "path": hc.http.path}
        if hc.http.expected_statuses is not None:
            out["expected_statuses"] = list(hc.http.expected_statuses)
    if hc.interval is not None:
        out["interval_ms"] = parse_duration(hc.interval)
    if hc.timeout is not None:
        out["timeout_ms"] = parse_duration(hc.timeout)
    if hc.jitter is not None:
        out["jitter_ms"] = parse_duration(hc.jitter)
    if hc.healthy_threshold is not None:
        out["healthy_threshold"] = hc.healthy_threshold
    if hc.unhealthy_threshold is not None:
        out["unhealthy_threshold"] = hc.unhealthy_threshold
    return out


def retry_budget(rb: RetryBudget) -> dp.RetryBudgetConfig:
    out: dp.RetryBudgetConfig = {}
    if rb.retry_ratio is not None:  # Linkerd's ratio (0.2) as the data plane's whole percent (20)
        out["percent"] = round(rb.retry_ratio * 100)
    if rb.min_retries_per_second is not None:
        out["min_per_second"] = rb.min_retries_per_second
    if rb.ttl is not None:
        out["window_ms"] = parse_duration(rb.ttl)
    return out


def locality(setting: LocalityLbSetting | None, zone: str | None) -> dp.LocalityConfig | None:
    """The calling sidecar's locality: on whenever it has a zone, unless the policy turns it off;
    the failover zones are those of the entries from its own zone, in order."""
    if zone is None or (setting is not None and not setting.enabled):
        return None
    out: dp.LocalityConfig = {"zone": zone}
    if setting is None:
        return out
    if failover := list(dict.fromkeys(f.to for f in setting.failover if f.from_ == zone)):
        out["failover"] = failover
    if setting.min_health_percent is not None:
        out["min_healthy_percent"] = setting.min_health_percent
    return out


def add_cluster_policy(c: dp.ClusterConfig, spec: TrafficPolicySpec | None, zone: str | None) -> None:
    """Adds to cluster `c` (of the policy's service) what `spec` sets, and the locality of a
    caller in `zone` (even without a policy)."""
    lb = spec.load_balancer if spec else None
    if (place := locality(lb.locality_lb_setting if lb else None, zone)) is not None:
        c["locality"] = place
    if spec is None:
        return
    if spec.outlier_detection and (od := outlier_detection(spec.outlier_detection)):
        c["outlier_detection"] = od
    if spec.health_check:
        c["health_check"] = health_check(spec.health_check)
    if spec.retry_budget and (budget := retry_budget(spec.retry_budget)):
        c["retry_budget"] = budget


# === RateLimitPolicy -> inbound listener ===


def _bucket(limit: RateLimit) -> dp.RateLimitBucket:
    out: dp.RateLimitBucket = {"rps": limit.requests_per_second}
    if limit.burst is not None:
        out["burst"] = limit.burst
    return out


def rate_limit(spec: RateLimitPolicySpec, namespace: str, trust_domain: str) -> dp.RateLimitConfig:
    """The `rate_limit` of the target's inbound listener, for a policy in `namespace` (where its
    clientRefs default to). On a tcp listener the data plane counts new connections instead."""
    out: dp.RateLimitConfig = {}
    if spec.total is not None:
        out["total"] = _bucket(spec.total)
    if spec.identity is not None:
        out["per_identity"] = _bucket(spec.identity)
    if spec.overrides is not None:
        out["overrides"] = [
            {
                "identities": [spiffe_id(trust_domain, c.namespace or namespace, c.name) for c in o.client_refs],
                **_bucket(o),
            }
            for o in spec.overrides
        ]
    return out
