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
from meshctl.control.compile_fields import ms, present
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
    return present(
        dp.OutlierDetectionConfig,
        consecutive_5xx=od.consecutive_5xx_errors,
        consecutive_gateway_errors=od.consecutive_gateway_errors,
        base_ejection_ms=ms(od.base_ejection_time),
        max_ejection_ms=ms(od.max_ejection_time),
        max_ejection_percent=od.max_ejection_percent,
        panic_threshold_percent=od.min_health_percent,  # Istio's name for the panic threshold
    )


def health_check(hc: HealthCheck) -> dp.HealthCheckConfig:
    http = hc.http
    statuses = http.expected_statuses if http else None
    return present(
        dp.HealthCheckConfig,
        type="http" if http else "tcp",
        path=http.path if http else None,
        expected_statuses=None if statuses is None else list(statuses),
        interval_ms=ms(hc.interval),
        timeout_ms=ms(hc.timeout),
        jitter_ms=ms(hc.jitter),
        healthy_threshold=hc.healthy_threshold,
        unhealthy_threshold=hc.unhealthy_threshold,
    )


def retry_budget(rb: RetryBudget) -> dp.RetryBudgetConfig:
    return present(
        dp.RetryBudgetConfig,
        # Linkerd's ratio (0.2) as the data plane's whole percent (20).
        percent=None if rb.retry_ratio is None else round(rb.retry_ratio * 100),
        min_per_second=rb.min_retries_per_second,
        window_ms=ms(rb.ttl),
    )


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
    return present(dp.RateLimitBucket, rps=limit.requests_per_second, burst=limit.burst)


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
