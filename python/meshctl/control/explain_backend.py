"""``explain``, each backend's resilience: the load balancer, circuit breakers,
retry budget, outlier detection, health check and locality of the cluster the
compiler gives the caller's sidecar (``compiler.cluster_config``), each field
from the TrafficPolicy or marked as the data plane's default; the rate limits
the receiving service's sidecars apply to this caller; and which of the
backend's endpoints the caller's sidecars report as ejected or failing their
health checks right now (they send it with each heartbeat)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from meshctl import dataplane_config as dp
from meshctl.control import dataplane_defaults as defaults
from meshctl.control.compile_policy import rate_limit
from meshctl.control.compiler import EndpointView, Mesh, cluster_config, cluster_name, subset_endpoints


@dataclass(frozen=True)
class CallerReport:
    """One live sidecar of the calling service, as of its last heartbeat."""

    zone: str | None
    #: cluster -> endpoint -> {ejected, ejected_for_ms, health_check}: its unhealthy endpoints;
    #: None when it reports none (an older sidecar).
    endpoint_health: Mapping[str, Mapping[str, Mapping[str, Any]]] | None
    #: How long ago it reported, in ms.
    age_ms: int = 0


class Setting(BaseModel):
    """One part of a cluster as the caller's sidecar runs it."""

    #: Every field: what the policy sets, the data plane's default for the rest.
    values: dict[str, Any]
    #: The fields that are the data plane's default (all of them when no policy sets this part).
    defaults: list[str] = Field(default_factory=list)
    #: The TrafficPolicy ("ns/name") that sets the others; None when it is all the default.
    policy: str | None = None


class LocalityVerdict(BaseModel):
    #: A zone the caller's sidecars run in.
    zone: str
    #: False when the TrafficPolicy turns locality off for this service.
    enabled: bool
    #: Where requests go when too few of the zone's endpoints are healthy, in order (then anywhere).
    failover: list[str] = Field(default_factory=list)
    min_healthy_percent: int | None = None
    #: Fields that are the data plane's default.
    defaults: list[str] = Field(default_factory=list)
    #: This backend's live endpoints in the zone.
    local_endpoints: int


class Bucket(BaseModel):
    rps: float
    burst: int
    #: The burst is the default (the rate, at least 1).
    burst_default: bool


class RateLimitVerdict(BaseModel):
    """What the receiving service's RateLimitPolicy lets through, per receiving sidecar."""

    policy: str
    #: What a token pays for: requests (HTTP) or new connections (TCP).
    unit: Literal["requests", "connections"]
    #: Over all callers together.
    total: Bucket | None = None
    #: The caller's own bucket: "override" (overrides[override_index] names it), "identity" (one
    #: per caller), or None (only `total` applies).
    caller_bucket: Literal["override", "identity"] | None = None
    override_index: int | None = None
    caller: Bucket | None = None


class EndpointHealthVerdict(BaseModel):
    endpoint: str
    #: Caller sidecars whose outlier detection has it ejected now.
    ejected_by: int
    #: Caller sidecars whose active health checks fail it.
    failing_health_checks_by: int
    #: The longest ejection left, as last reported.
    ejected_for_ms: int | None = None
    summary: str


class BackendResilience(BaseModel):
    load_balancer: Setting
    circuit_breakers: Setting
    retry_budget: Setting
    outlier_detection: Setting
    #: None: no active health checks (the data plane runs them only when asked).
    health_check: Setting | None = None
    #: One per zone of the caller's sidecars (or the zone asked about).
    locality: list[LocalityVerdict] = Field(default_factory=list)
    rate_limit: RateLimitVerdict | None = None
    #: The caller's live sidecars that report endpoint health.
    reporting_sidecars: int = 0
    #: Endpoints some caller sidecar reports ejected or failing health checks.
    unhealthy: list[EndpointHealthVerdict] = Field(default_factory=list)


# === cluster settings ===


def _setting(given: Mapping[str, Any] | None, default: Mapping[str, Any], policy: str | None) -> Setting:
    section = dict(given or {})
    return Setting(
        values={**default, **section},
        defaults=[k for k in default if k not in section],
        policy=policy if section else None,
    )


def _health_check(given: dp.HealthCheckConfig | None, policy: str | None) -> Setting | None:
    if given is None:
        return None
    interval = given.get("interval_ms", defaults.HEALTH_CHECK["interval_ms"])
    default: dict[str, Any] = {**defaults.HEALTH_CHECK, "jitter_ms": defaults.health_check_jitter_ms(interval)}
    if given["type"] == "http":
        default["expected_statuses"] = "any 2xx"
    return _setting(given, default, policy)


def _locality(
    mesh: Mesh, service: str, subset: Mapping[str, str], zone: str, endpoints: list[EndpointView]
) -> LocalityVerdict:
    place = cluster_config(mesh, service, subset, zone).get("locality")
    local = sum(e.labels.get("zone") == zone for e in endpoints)
    if place is None:
        return LocalityVerdict(zone=zone, enabled=False, local_endpoints=local)
    return LocalityVerdict(
        zone=zone,
        enabled=True,
        failover=list(place.get("failover", [])),
        min_healthy_percent=place.get("min_healthy_percent", defaults.LOCALITY_MIN_HEALTHY_PERCENT),
        defaults=[] if "min_healthy_percent" in place else ["min_healthy_percent"],
        local_endpoints=local,
    )


# === rate limits ===


def _bucket(b: dp.RateLimitBucket) -> Bucket:
    burst = b.get("burst")
    return Bucket(rps=b["rps"], burst=defaults.burst(b["rps"]) if burst is None else burst, burst_default=burst is None)


def rate_limit_verdict(mesh: Mesh, service: str, principal: str) -> RateLimitVerdict | None:
    """The limits of `service`'s inbound listener (as the compiler emits them) for the caller
    `principal`, checked as the data plane does: total, then the caller's override, else its own."""
    limits = mesh.rate_limits.get(service)
    if limits is None:
        return None
    name, spec = limits
    block = rate_limit(spec, name.split("/")[0], mesh.trust_domain)
    out = RateLimitVerdict(
        policy=name,
        unit="connections" if mesh.services.get(service) == "tcp" else "requests",
        total=_bucket(block["total"]) if "total" in block else None,
    )
    for i, o in enumerate(block.get("overrides", [])):
        if principal in o["identities"]:
            out.caller_bucket, out.override_index, out.caller = "override", i, _bucket(o)
            return out
    if "per_identity" in block:
        out.caller_bucket, out.caller = "identity", _bucket(block["per_identity"])
    return out


# === endpoint health, as the caller's sidecars report it ===


def _unhealthy(
    callers: Sequence[CallerReport], cluster: str, endpoints: list[str], source: str
) -> tuple[int, list[EndpointHealthVerdict]]:
    reporting = [c for c in callers if c.endpoint_health is not None]
    out = []
    for endpoint in endpoints:
        ejected: list[int] = []
        failing = 0
        for c in reporting:
            assert c.endpoint_health is not None
            state = c.endpoint_health.get(cluster, {}).get(endpoint)
            if state is None:
                continue
            left = state.get("ejected_for_ms")
            if state.get("ejected") and (left is None or left > c.age_ms):  # not over since the report
                ejected.append(0 if left is None else left - c.age_ms)
            failing += state.get("health_check") == "failing"
        if not ejected and not failing:
            continue
        of = f"{{}} of {len(reporting)} sidecar{'s' if len(reporting) > 1 else ''} of {source}"
        parts = []
        if ejected:
            parts.append(f"ejected by {of.format(len(ejected))} (for {max(ejected) / 1000:.1f} s more)")
        if failing:
            parts.append(f"failing health checks at {of.format(failing)}")
        out.append(
            EndpointHealthVerdict(
                endpoint=endpoint,
                ejected_by=len(ejected),
                failing_health_checks_by=failing,
                ejected_for_ms=max(ejected) if ejected else None,
                summary="; ".join(parts),
            )
        )
    return len(reporting), out


def backend_resilience(
    mesh: Mesh,
    service: str,
    subset: Mapping[str, str],
    *,
    source: str,
    principal: str,
    zones: Sequence[str],
    callers: Sequence[CallerReport],
) -> BackendResilience:
    """What the calling service `source` ("ns/name", identity `principal`) runs for one backend."""
    c = cluster_config(mesh, service, subset)
    policy = mesh.policies.get(service)
    name = policy[0] if policy else None
    lb: dict[str, Any] = {"lb": c["lb"]} if "lb" in c else {}
    if "hash_header" in c:
        lb["hash_header"] = c["hash_header"]
    endpoints = subset_endpoints(mesh, service, subset)
    reporting, unhealthy = _unhealthy(callers, cluster_name(service, subset), [e.host_port for e in endpoints], source)
    return BackendResilience(
        load_balancer=_setting(lb, {"lb": defaults.LB}, name),
        circuit_breakers=_setting(c.get("circuit_breakers"), defaults.CIRCUIT_BREAKERS, name),
        retry_budget=_setting(c.get("retry_budget"), defaults.RETRY_BUDGET, name),
        outlier_detection=_setting(c.get("outlier_detection"), defaults.OUTLIER_DETECTION, name),
        health_check=_health_check(c.get("health_check"), name),
        locality=[_locality(mesh, service, subset, z, endpoints) for z in zones],
        rate_limit=rate_limit_verdict(mesh, service, principal),
        reporting_sidecars=reporting,
        unhealthy=unhealthy,
    )
