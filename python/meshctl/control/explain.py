"""``explain``: what the mesh would do with one request, and why.

It hands the data plane's own matcher (``_core.match_route``) the matches of
the ordered rules the compiler emits (``compiler.http_entries``) and reports,
for each, whether it matched and if not which condition failed; then which
backends, subsets, endpoints and policy the winning rule uses, and whether
each receiving service's authorization lets the request in: the data plane's
own decision (``_core.authorize``) on the very block the compiler emits
(``compiler.authorization``), for the caller's SPIFFE ID and the path the
receiving sidecar sees (after a URLRewrite). Explain cannot disagree with
the proxy: it runs the proxy's code.

For a forwarded request it also shows what keeps it resilient, from the same
compiled sections with the data plane's defaults filled in: the route's
timeout, retry policy (and whether this request's method is retried once it
may have reached the upstream), fault and mirrors (``explain_route``); and per
backend the load balancer, circuit breakers, retry budget, outlier detection,
health check, locality, the receiving service's rate limits for this caller,
and the endpoints the caller's sidecars report ejected or unhealthy right now
(``explain_backend``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from meshctl import _core
from meshctl.control.compiler import (
    Entry,
    Mesh,
    authorization,
    circuit_breakers,
    http_entries,
    route_match,
    subset_endpoints,
    tcp_route,
)
from meshctl.control.explain_backend import BackendResilience, CallerReport, backend_resilience
from meshctl.control.explain_route import RouteResilience, route_resilience, tcp_resilience
from meshctl.control.kinds.common import NAME, ZONE, BackendRef
from meshctl.spiffe import spiffe_id


class ExplainRequest(BaseModel):
    source: str = Field(description='The calling service, "name" or "namespace/name".')
    #: The service called ("name" or "namespace/name"); taken from `host` when absent.
    destination: str | None = None
    host: str | None = None
    method: str = "GET"
    path: str = Field(default="/", description="Path with optional query string.")
    headers: dict[str, str] = Field(default_factory=dict)
    #: The calling sidecar's zone, for locality; by default each zone the caller's live sidecars run in.
    zone: str | None = Field(default=None, max_length=63, pattern=ZONE)


class RuleVerdict(BaseModel):
    rule: str
    matched: bool
    reason: str


class AuthorizationRuleVerdict(BaseModel):
    #: "<ns>/<policy>[<rule index>]", as the data plane names it.
    rule: str
    action: Literal["allow", "deny"]
    matched: bool
    reason: str


class AuthorizationVerdict(BaseModel):
    """What the receiving sidecar's inbound authorization decides, rules in the order it tries
    them (every deny rule first)."""

    #: The service whose sidecars decide.
    service: str
    #: The caller's identity: spiffe://<trust domain>/ns/<namespace>/sa/<service>.
    principal: str
    #: The request as the receiving sidecar sees it (path after a URLRewrite); None for TCP.
    method: str | None
    path: str | None
    mtls: str
    #: The AuthorizationPolicies on the service.
    policies: list[str]
    decision: Literal["allow", "deny"]
    #: The rule that decided, or "default allow", "default deny", "no ALLOW rule matched".
    decided_by: str
    rules: list[AuthorizationRuleVerdict] = Field(default_factory=list)


class BackendVerdict(BaseModel):
    service: str
    subset: dict[str, str]
    weight: int
    share_percent: float
    endpoints: list[str]
    policy: str | None
    load_balancer: str
    #: The limits the policy's connectionPool sets, as the caller's sidecar applies them (those
    #: not set are the data plane's default, 1024).
    circuit_breakers: dict[str, int] = Field(default_factory=dict)
    authorization: AuthorizationVerdict | None = None
    #: What the caller's sidecar runs for this backend, and what the receiving one limits.
    resilience: BackendResilience | None = None


class Explanation(BaseModel):
    source: str
    destination: str
    protocol: str
    outcome: Literal["forward", "redirect", "no_route", "unknown_service", "denied"]
    summary: str
    route: str | None = None
    rules: list[RuleVerdict] = Field(default_factory=list)
    #: The winning rule's filters, each as the HTTPRoute spells it ({"type", and its own field}).
    filters: list[dict[str, Any]] = Field(default_factory=list)
    backends: list[BackendVerdict] = Field(default_factory=list)
    #: The receiving service's decision: for "denied", the one that denied.
    authorization: AuthorizationVerdict | None = None
    #: The route's timeout, retry policy, fault and mirrors, for a forwarded request.
    resilience: RouteResilience | None = None


def _qualify(name: str, namespace: str) -> str:
    return name if "/" in name else f"{namespace}/{name}"


def source_of(req: ExplainRequest) -> str:
    """The calling service, "ns/name"."""
    return _qualify(req.source, "default")


def unknown_service(mesh: Mesh, req: ExplainRequest) -> str | None:
    """What is wrong when the request names a service the mesh does not have: its `source`, or
    its `destination`. (A `host` that names no mesh service is an answer, not an error: the
    explanation's outcome is "unknown_service".)"""
    source = source_of(req)
    if source not in mesh.services:
        return f"service {source} not found (the calling service must be a mesh service)"
    if req.destination and (dest := _qualify(req.destination, source.split("/")[0])) not in mesh.services:
        return f"service {dest} not found"
    return None


@dataclass(frozen=True)
class _Caller:
    """The calling service and its live sidecars, for what depends on the caller."""

    source: str
    principal: str
    zones: tuple[str, ...]
    sidecars: Sequence[CallerReport]


def _destination(req: ExplainRequest, namespace: str) -> str | None:
    if req.destination:
        return _qualify(req.destination, namespace)
    if not req.host:
        return None
    labels = req.host.split(":")[0].lower().split(".")
    if len(labels) == 1 or (len(labels) == 3 and labels[2] == "svc") or len(labels) == 2:
        ns = labels[1] if len(labels) > 1 else namespace
        if re.match(NAME, labels[0]) and re.match(NAME, ns):
            return f"{ns}/{labels[0]}"
    return None


def authorize(mesh: Mesh, service: str, source: str, method: str | None, path: str | None) -> AuthorizationVerdict:
    """The decision of `service`'s inbound authorization on a request from the mesh service
    `source` ("ns/name"): the data plane's own evaluation (`_core.authorize`) of the very
    block the compiler emits, for the caller's SPIFFE ID."""
    namespace, name = source.split("/", 1)
    principal = spiffe_id(mesh.trust_domain, namespace, name)
    block = authorization(mesh, service) or {"default": "allow", "rules": []}
    decided = _core.authorize(block, peer=principal, method=method, path=path)
    return AuthorizationVerdict(
        service=service,
        principal=principal,
        method=method,
        path=path,
        mtls=mesh.mtls.get(service, "STRICT"),
        policies=sorted(p for p, _ in mesh.authz.get(service, [])),
        decision=decided["decision"],
        decided_by=decided["decided_by"],
        rules=[AuthorizationRuleVerdict(**r) for r in decided["rules"]],
    )


def _rewritten(path: str, entry: Entry) -> str:
    """The path the receiving sidecar sees after the rule's URLRewrite (as the data plane rewrites)."""
    rewrite = entry.rule.filter("URLRewrite")
    if rewrite is None or rewrite.path is None:
        return path
    if rewrite.path.type == "ReplaceFullPath":
        return str(rewrite.path.replace_full_path)
    match = entry.match.path
    if match is None or match.type != "PathPrefix":
        return path
    matched = match.value.rstrip("/")
    rest = path[len(matched) :]
    if not path.startswith(matched) or (rest and not rest.startswith("/")):
        return path
    return (str(rewrite.path.replace_prefix_match).rstrip("/") + rest) or "/"


def _forward(
    mesh: Mesh,
    base: dict[str, Any],
    backends: list[BackendVerdict],
    summary: str,
    method: str | None,
    path: str | None,
    **extra: Any,
) -> Explanation:
    """A forwarded request meets each receiving service's authorization; it is denied when
    every backend it may go to denies it."""
    decided: dict[str, AuthorizationVerdict] = {}
    for b in backends:
        if b.service not in decided:
            decided[b.service] = authorize(mesh, b.service, base["source"], method, path)
        b.authorization = decided[b.service]
    live = [b for b in backends if b.weight > 0] or backends
    denied = [b for b in live if b.authorization and b.authorization.decision == "deny"]
    if denied and len(denied) == len(live):
        verdict = denied[0].authorization
        assert verdict is not None
        return Explanation(
            **base,
            outcome="denied",
            summary=f"denied by the authorization of {verdict.service}: {verdict.decided_by} ({summary})",
            backends=backends,
            authorization=verdict,
            **extra,
        )
    allowed = next(b.authorization for b in live if b not in denied)
    if denied:
        share = sum(b.share_percent for b in denied)
        names = ", ".join(sorted({b.service for b in denied}))
        summary += f"; {share:g}% of requests are denied by the authorization of {names}"
    return Explanation(**base, outcome="forward", summary=summary, backends=backends, authorization=allowed, **extra)


def _backends(mesh: Mesh, refs: list[BackendRef], namespace: str, caller: _Caller) -> list[BackendVerdict]:
    total = sum(b.weight for b in refs) or 1
    out = []
    for b in refs:
        service = f"{b.namespace or namespace}/{b.name}"
        policy = mesh.policies.get(service)
        lb = policy[1].load_balancer.type if policy and policy[1].load_balancer else "RoundRobin"
        pool = policy[1].connection_pool if policy else None
        endpoints = subset_endpoints(mesh, service, b.subset)
        out.append(
            BackendVerdict(
                service=service,
                subset=b.subset,
                weight=b.weight,
                share_percent=round(100 * b.weight / total, 2),
                endpoints=[e.host_port for e in endpoints],
                policy=policy[0] if policy else None,
                load_balancer=lb,
                # A TypedDict of ints; pydantic takes only typing_extensions' TypedDict on 3.11.
                circuit_breakers=cast(dict[str, int], circuit_breakers(pool)) if pool else {},
                resilience=backend_resilience(
                    mesh,
                    service,
                    b.subset,
                    source=caller.source,
                    principal=caller.principal,
                    zones=caller.zones,
                    callers=caller.sidecars,
                ),
            )
        )
    return out


def _filters(entry: Entry) -> list[dict[str, Any]]:
    return [f.model_dump(mode="json", by_alias=True, exclude_none=True) for f in entry.rule.filters]


def explain(mesh: Mesh, req: ExplainRequest, callers: Sequence[CallerReport] = ()) -> Explanation:
    """`callers`: the calling service's live sidecars (their zones and endpoint health)."""
    source = source_of(req)
    namespace = source.split("/")[0]
    zones = (req.zone,) if req.zone else tuple(sorted({c.zone for c in callers if c.zone}))
    caller = _Caller(source, spiffe_id(mesh.trust_domain, *source.split("/", 1)), zones, callers)
    dest = _destination(req, namespace)
    base: dict[str, Any] = {"source": source, "destination": dest or req.host or "?"}
    if dest is None or dest not in mesh.services:
        what = dest or f"host {req.host!r}"
        return Explanation(**base, protocol="?", outcome="unknown_service", summary=f"{what} is not a mesh service")
    protocol = mesh.services[dest]
    base["protocol"] = protocol
    if protocol == "tcp":
        route = tcp_route(mesh, dest)
        refs = route.spec.rules[0].backend_refs if route else [BackendRef(name=dest.split("/")[1])]
        ns = route.namespace if route else dest.split("/")[0]
        why = f"TCPRoute {route.key}" if route else "no TCPRoute attached: the whole service"
        return _forward(
            mesh,
            base,
            _backends(mesh, refs, ns, caller),
            f"TCP to {dest} via {why}",
            None,
            None,
            route=route.key if route else None,
            resilience=tcp_resilience(),
        )

    path = urlsplit(req.path).path or "/"
    entries = http_entries(mesh, dest)
    method = req.method.upper()
    if not entries:
        refs = [BackendRef(name=dest.split("/")[1])]
        return _forward(
            mesh,
            base,
            _backends(mesh, refs, dest.split("/")[0], caller),
            f"no HTTPRoute attached to {dest}: the whole service",
            method,
            path,
            resilience=route_resilience(None, dest.split("/")[0], method, req.headers),
        )
    # The data plane's own matcher decides (`_core.match_route`), on the matches the compiler emits.
    choice = _core.match_route(
        [route_match(e) for e in entries],
        method=method,
        path=req.path,
        host=req.host,
        headers=list(req.headers.items()),
    )
    chosen, reasons = choice["chosen"], choice["reasons"]
    winner = None if chosen is None else entries[chosen]
    verdicts = [
        RuleVerdict(rule=e.name, matched=i == chosen, reason=reasons[i])
        if i < len(reasons)
        else RuleVerdict(rule=e.name, matched=False, reason=f"not tried: {entries[chosen or 0].name} matched first")
        for i, e in enumerate(entries)
    ]
    if winner is None:
        return Explanation(
            **base, outcome="no_route", summary=f"404: no rule of the routes on {dest} matched", rules=verdicts
        )
    filters = _filters(winner)
    if winner.rule.filter("RequestRedirect") is not None:
        return Explanation(
            **base,
            outcome="redirect",
            summary=f"redirected by {winner.name}",
            route=winner.route.key,
            rules=verdicts,
            filters=filters,
        )
    return _forward(
        mesh,
        base,
        _backends(mesh, winner.rule.backend_refs, winner.route.namespace, caller),
        f"{winner.name} matched",
        method,
        _rewritten(path, winner),
        route=winner.route.key,
        rules=verdicts,
        filters=filters,
        resilience=route_resilience(winner.rule, winner.route.namespace, method, req.headers),
    )
