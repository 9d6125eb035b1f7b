"""TrafficPolicy (like Istio's DestinationRule): how callers reach one service
(load balancing, protocol between sidecars, connect timeout). At most one per
service."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field as PField
from pydantic import model_validator

from meshctl.control.kinds.base import Kind, Ref, spec_family, target_reference
from meshctl.control.kinds.common import HEADER_NAME, ServiceRef, Spec, key


class HashOn(Spec):
    header: str | None = PField(default=None, pattern=HEADER_NAME)
    source_ip: bool = False

    @model_validator(mode="after")
    def _one(self) -> HashOn:
        if (self.header is None) == (not self.source_ip):
            raise ValueError("hash on either a header or sourceIp")
        return self


class LoadBalancer(Spec):
    type: Literal["RoundRobin", "LeastRequest", "Random", "RingHash"] = "RoundRobin"
    hash_on: HashOn | None = None

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


class ConnectionPool(Spec):
    """Istio's connectionPool: circuit breakers per calling sidecar. Over a limit, a request gets
    an immediate 503 (`x-meshctl-error: overflow`). Unset limits are 1024."""

    tcp: TcpPool | None = None
    http: HttpPool | None = None


class TrafficPolicySpec(Spec):
    """How callers reach one service (like Istio's DestinationRule)."""

    target_ref: ServiceRef
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    #: The protocol between sidecars; by default http2 for http2/grpc ports, http1 otherwise.
    protocol: Literal["http1", "http2"] | None = None
    connect_timeout_ms: int | None = PField(default=None, ge=1, le=60_000)


class TrafficPolicyKind(Kind):
    exclusive = True

    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        return target_reference(spec, namespace)

    def load(self, rows: list[Any]) -> dict[str, Any]:
        policies = {}
        for p in rows:
            spec = self.parse(p)
            policies[f"{spec.target_ref.namespace or p.namespace}/{spec.target_ref.name}"] = (key(p), spec)
        return {"policies": policies}


KIND = TrafficPolicyKind(
    "TrafficPolicy",
    TrafficPolicySpec,
    spec_family("TrafficPolicy", TrafficPolicySpec, module=__name__),
    refers_to=("Service",),
)
