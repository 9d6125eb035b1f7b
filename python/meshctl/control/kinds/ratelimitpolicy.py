"""RateLimitPolicy (shaped like Linkerd's HTTPLocalRateLimitPolicy): how many
requests a service's sidecars take, checked by each sidecar on its inbound
listener. ``total`` bounds all callers together, ``identity`` each caller (by
its mesh identity) on its own, and ``overrides`` give the callers they name a
bucket of their own instead. A request over a limit gets a 429 with
``retry-after``. On a tcp service the limits count new connections.

At most one per service. Its clients are named as Services (a sidecar's mesh
identity is its service's), and count as references: such a service cannot be
deleted while the policy names it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field as PField
from pydantic import model_validator

from meshctl.control.kinds.base import Kind, Loc, Ref, by_target, spec_family, target_reference
from meshctl.control.kinds.common import ServiceTarget, Spec


class RateLimit(Spec):
    """A token bucket: `requestsPerSecond` tokens a second, holding at most `burst` (by default
    the rate, at least 1) for requests that come at once."""

    requests_per_second: float = PField(gt=0, le=1_000_000)
    burst: Annotated[int, PField(ge=1, le=1_000_000)] | None = None


class RateLimitOverride(RateLimit):
    """These callers each get this bucket instead of `identity`'s (and `total` still applies)."""

    client_refs: list[ServiceTarget] = PField(min_length=1, max_length=1000)


class RateLimitPolicySpec(Spec):
    """How many requests one service takes (like Linkerd's HTTPLocalRateLimitPolicy), per sidecar:
    `total` over all callers, `identity` per caller, `overrides` for named callers; at least one."""

    target_ref: ServiceTarget
    total: RateLimit | None = None
    identity: RateLimit | None = None
    overrides: list[RateLimitOverride] | None = PField(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitPolicySpec:
        if self.total is None and self.identity is None and self.overrides is None:
            raise ValueError("a rate limit policy needs total, identity or overrides")
        return self


class RateLimitPolicyKind(Kind):
    exclusive = True

    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        clients = [
            Ref(["overrides", o, "clientRefs", c], "Service", client.namespace or namespace, client.name)
            for o, override in enumerate(spec.overrides or [])
            for c, client in enumerate(override.client_refs)
        ]
        return target_reference(spec, namespace) + clients

    def held(self, refs: list[Ref]) -> list[Ref]:
        return refs[:1]  # the target only: a service may be a client of many policies

    def problems(self, spec: Any) -> list[tuple[Loc, str]]:
        # A caller has one bucket: were it named twice, the first override would win silently.
        out: list[tuple[Loc, str]] = []
        seen: dict[tuple[str | None, str], int] = {}
        for o, override in enumerate(spec.overrides or []):
            for c, client in enumerate(override.client_refs):
                who = (client.namespace, client.name)
                if who in seen:
                    msg = f"service {client.name} is already a client of overrides[{seen[who]}]"
                    out.append((["overrides", o, "clientRefs", c, "name"], msg))
                seen.setdefault(who, o)
        return out

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"rate_limits": {target: (k, spec) for target, k, spec in by_target(rows, self)}}


KIND = RateLimitPolicyKind(
    "RateLimitPolicy",
    RateLimitPolicySpec,
    spec_family("RateLimitPolicy", RateLimitPolicySpec, module=__name__),
    refers_to=("Service",),
)
