"""TrafficPolicy (like Istio's DestinationRule): how callers reach one service
(load balancing, protocol between sidecars, connect timeout) and how they
stay resilient to it (circuit breakers, outlier detection, health checks, the
retry budget, locality). At most one per service.

Istio's names and shapes where Istio has the feature (``connectionPool``,
``outlierDetection``, ``loadBalancer.localityLbSetting``); Linkerd's for the
retry budget (``retryRatio``, ``minRetriesPerSecond``, ``ttl``); the active
``healthCheck`` is meshctl's own (Consul- and Envoy-like), since Istio has
none. Durations are written as the Gateway API writes them ("1s", "250ms").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field as PField
from pydantic import ValidationInfo, field_validator, model_validator

from meshctl.control import dataplane_defaults as defaults
from meshctl.control.kinds.base import Kind, Ref, by_target, spec_family, target_reference
from meshctl.control.kinds.common import HEADER_NAME, ZONE, ServiceRef, Spec
from meshctl.control.kinds.durations import Duration, PositiveDuration, parse_duration


class HashOn(Spec):
    header: str | None = PField(default=None, pattern=HEADER_NAME)
    source_ip: bool = False

    @model_validator(mode="after")
    def _one(self) -> HashOn:
        if (self.header is None) == (not self.source_ip):
            raise ValueError("hash on either a header or sourceIp")
        return self


Zone = Annotated[str, PField(min_length=1, max_length=63, pattern=ZONE)]
Percent = Annotated[int, PField(ge=0, le=100)]


class LocalityFailover(Spec):
    """Istio's failover entry: callers in zone `from` whose zone runs short go to `to` next."""

    from_: Zone = PField(alias="from")
    to: Zone

    @model_validator(mode="after")
    def _elsewhere(self) -> LocalityFailover:
        if self.from_ == self.to:
            raise ValueError("`to` must be another zone than `from`")
        return self


class LocalityLbSetting(Spec):
    """Istio's localityLbSetting, over the zones sidecars join with (`--zone`): a caller's requests
    stay in its own zone while enough of its endpoints there are healthy, then go to the zones
    its `failover` entries name, in order, then anywhere. On by default for every caller with a
    zone; `enabled: false` turns it off for this service."""

    enabled: bool = True
    failover: list[LocalityFailover] = PField(default_factory=list, max_length=100)
    #: meshctl's: the healthy share of the local zone's endpoints under which it fails over
    #: (default 70).
    min_health_percent: Percent | None = None

    @model_validator(mode="after")
    def _used(self) -> LocalityLbSetting:
        if not self.enabled and (self.failover or self.min_health_percent is not None):
            raise ValueError("failover and minHealthPercent are unused when enabled is false")
        return self


class LoadBalancer(Spec):
    #: PeakEWMA: latency-aware (the lower of two random endpoints' peak-weighted latency x load).
    type: Literal["RoundRobin", "LeastRequest", "Random", "RingHash", "PeakEWMA"] = "RoundRobin"
    hash_on: HashOn | None = None
    locality_lb_setting: LocalityLbSetting | None = None

    @model_validator(mode="after")
    def _hash_only_for_ring(self) -> LoadBalancer:
        if self.hash_on and self.type != "RingHash":
            raise ValueError("hashOn is only used with type RingHash")
        return self


#: A circuit-breaker limit, as the data plane takes it.
Limit = Annotated[int, PField(ge=1, le=1_000_000)]


class TcpPool(Spec):
    #: Upstream connections each caller's sidecar keeps open to the service at once.
    max_connections: Limit | None = None


class HttpPool(Spec):
    #: Requests waiting for a new upstream connection at once (Istio's name, for HTTP/2 too).
    http1_max_pending_requests: Limit | None = None
    #: Requests in flight at once (Istio's name, for HTTP/1.1 too).
    http2_max_requests: Limit | None = None
    #: Retries in flight at once.
    max_retries: Limit | None = None


class ConnectionPool(Spec):
    """Istio's connectionPool: circuit breakers per calling sidecar. Over a limit, a request gets
    an immediate 503 (`x-meshctl-error: overflow`). Unset limits are 1024."""

    tcp: TcpPool | None = None
    http: HttpPool | None = None


#: The data plane's defaults where a check compares fields.
BASE_EJECTION_MS = defaults.OUTLIER_DETECTION["base_ejection_ms"]
CHECK_INTERVAL_MS = defaults.HEALTH_CHECK["interval_ms"]
#: A count of checks or errors in a row.
Count = Annotated[int, PField(ge=0, le=1000)]


class OutlierDetection(Spec):
    """Istio's outlierDetection: passive health from the answers callers get. An endpoint that
    fails this often in a row is ejected for baseEjectionTime x its number of ejections (capped
    at maxEjectionTime, meshctl's); at most maxEjectionPercent of the endpoints at once, though
    one always may be. Below minHealthPercent healthy endpoints, callers balance over all of
    them (the panic threshold). Unset fields take the data plane's defaults: 5, 5, 10s, 300s,
    50 %, 50 %; 0 disables a count or the panic threshold."""

    consecutive_5xx_errors: Count | None = PField(default=None, alias="consecutive5xxErrors")
    #: Connect failures, resets and 502/503/504.
    consecutive_gateway_errors: Count | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_time: PositiveDuration | None = None
    max_ejection_percent: Percent | None = None
    min_health_percent: Percent | None = None

    @field_validator("max_ejection_time")
    @classmethod
    def _not_below_base(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = info.data.get("base_ejection_time")
        if value is not None and parse_duration(value) < (parse_duration(base) if base else BASE_EJECTION_MS):
            raise ValueError(f"must be at least baseEjectionTime ({base or '10s'})")
        return value


Status = Annotated[int, PField(ge=100, le=599)]


class HttpHealthCheck(Spec):
    #: Asked with GET.
    path: str = PField(min_length=1, max_length=2048, pattern=r"^/[\x21-\x7e]*$")
    #: Statuses that pass; by default any 2xx.
    expected_statuses: list[Status] | None = PField(default=None, min_length=1, max_length=100)


class TcpHealthCheck(Spec):
    """A check that passes when a TCP connection opens."""


class HealthCheck(Spec):
    """meshctl's active health checks (Consul- and Envoy-like; Istio has none): every caller's
    sidecar checks each endpoint every `interval` (plus a random `jitter`), over `http` (a GET of
    `path`, passing on `expectedStatuses`) or `tcp` (a connection), exactly one. An endpoint is
    out after `unhealthyThreshold` failed checks in a row, back after `healthyThreshold` passed
    ones; it must pass outlier detection too. Defaults: 5s, 1s, 10 % of the interval, 2, 3."""

    http: HttpHealthCheck | None = None
    tcp: TcpHealthCheck | None = None
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    jitter: Duration | None = None
    healthy_threshold: Annotated[int, PField(ge=1, le=100)] | None = None
    unhealthy_threshold: Annotated[int, PField(ge=1, le=100)] | None = None

    @field_validator("timeout", "jitter")
    @classmethod
    def _within_interval(cls, value: str | None, info: ValidationInfo) -> str | None:
        interval = info.data.get("interval")
        if value is not None and parse_duration(value) > (parse_duration(interval) if interval else CHECK_INTERVAL_MS):
            raise ValueError(f"must be at most the interval ({interval or '5s'})")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("a health check is either http or tcp: give exactly one")
        return self


class RetryBudget(Spec):
    """Linkerd's retry budget, for the retries of every route to the service: retries may add at
    most `retryRatio` of the requests over `ttl`, plus `minRetriesPerSecond`, so a failing service
    never gets its load multiplied. Defaults: 0.2, 10, 10s."""

    retry_ratio: float | None = PField(default=None, ge=0, le=10)
    min_retries_per_second: Annotated[int, PField(ge=0, le=100_000)] | None = None
    ttl: PositiveDuration | None = None


class TrafficPolicySpec(Spec):
    """How callers reach one service (like Istio's DestinationRule)."""

    target_ref: ServiceRef
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget | None = None
    #: The protocol between sidecars; by default http2 for http2/grpc ports, http1 otherwise.
    protocol: Literal["http1", "http2"] | None = None
    connect_timeout_ms: int | None = PField(default=None, ge=1, le=60_000)


class TrafficPolicyKind(Kind):
    exclusive = True

    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        return target_reference(spec, namespace)

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"policies": {target: (k, spec) for target, k, spec in by_target(rows, self)}}


KIND = TrafficPolicyKind(
    "TrafficPolicy",
    TrafficPolicySpec,
    spec_family("TrafficPolicy", TrafficPolicySpec, module=__name__),
    refers_to=("Service",),
)
