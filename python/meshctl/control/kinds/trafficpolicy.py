"""TrafficPolicy (like Istio's DestinationRule): how callers reach one service
(load balancing, protocol between sidecars, connect timeout). At most one per
service."""

from __future__ import annotations

from typing import Any, Literal

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


class TrafficPolicySpec(Spec):
    """How callers reach one service (like Istio's DestinationRule)."""

    target_ref: ServiceRef
    load_balancer: LoadBalancer | None = None
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
