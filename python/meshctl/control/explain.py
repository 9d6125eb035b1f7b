"""``explain``: what the mesh would do with one request, and why.

It walks the same ordered rules the compiler emits (``compiler.http_entries``)
and says, for each, whether it matched and if not which condition failed;
then which backends, subsets, endpoints and policy the winning rule uses.
Matching follows the data plane's rules: exact and segment-aware prefix
paths, anchored regular expressions, exact header (case-insensitive name)
and query values.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, Field

from meshctl.control.compiler import Entry, Mesh, http_entries, subset_endpoints, tcp_route
from meshctl.control.models import FILTER_FIELDS, NAME, BackendRef, RouteMatch


class ExplainRequest(BaseModel):
    source: str = Field(description='The calling service, "name" or "namespace/name".')
    #: The service called ("name" or "namespace/name"); taken from `host` when absent.
    destination: str | None = None
    host: str | None = None
    method: str = "GET"
    path: str = Field(default="/", description="Path with optional query string.")
    headers: dict[str, str] = Field(default_factory=dict)


class RuleVerdict(BaseModel):
    rule: str
    matched: bool
    reason: str


class BackendVerdict(BaseModel):
    service: str
    subset: dict[str, str]
    weight: int
    share_percent: float
    endpoints: list[str]
    policy: str | None
    load_balancer: str


class Explanation(BaseModel):
    source: str
    destination: str
    protocol: str
    outcome: Literal["forward", "redirect", "no_route", "unknown_service"]
    summary: str
    route: str | None = None
    rules: list[RuleVerdict] = Field(default_factory=list)
    filters: list[str] = Field(default_factory=list)
    backends: list[BackendVerdict] = Field(default_factory=list)


def _qualify(name: str, namespace: str) -> str:
    return name if "/" in name else f"{namespace}/{name}"


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


def why_not(match: RouteMatch, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """Empty when `match` matches; else the first condition that failed."""
    p = match.path
    if p is not None:
        if p.type == "Exact" and path != p.value:
            return f"path {path!r} is not exactly {p.value!r}"
        if p.type == "PathPrefix":
            prefix = p.value.rstrip("/")
            if prefix and not (path == prefix or path.startswith(prefix + "/")):
                return f"path {path!r} is not under prefix {p.value!r}"
        if p.type == "RegularExpression" and not re.fullmatch(p.value, path):
            return f"path {path!r} does not match regex {p.value!r}"
    if match.method and match.method != method.upper():
        return f"method {method.upper()} is not {match.method}"
    for h in match.headers:
        got = headers.get(h.name.lower())
        if got != h.value:
            return f"header {h.name} is {got!r}, not {h.value!r}"
    for q in match.query_params:
        if q.value not in query.get(q.name, []):
            return f"query param {q.name} is {query.get(q.name)!r}, not {q.value!r}"
    return ""


def _backends(mesh: Mesh, refs: list[BackendRef], namespace: str) -> list[BackendVerdict]:
    total = sum(b.weight for b in refs) or 1
    out = []
    for b in refs:
        service = f"{b.namespace or namespace}/{b.name}"
        policy = mesh.policies.get(service)
        lb = policy[1].load_balancer.type if policy and policy[1].load_balancer else "RoundRobin"
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
            )
        )
    return out


def _filters(entry: Entry) -> list[str]:
    out = []
    for f in entry.rule.filters:
        detail = getattr(f, FILTER_FIELDS[f.type])
        out.append(f"{f.type} {detail.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)}")
    return out


def explain(mesh: Mesh, req: ExplainRequest) -> Explanation:
    source = _qualify(req.source, "default")
    namespace = source.split("/")[0]
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
        return Explanation(
            **base,
            outcome="forward",
            summary=f"TCP to {dest} via {why}",
            route=route.key if route else None,
            backends=_backends(mesh, refs, ns),
        )

    url = urlsplit(req.path)
    path, query = url.path or "/", dict[str, list[str]]()
    for k, v in parse_qsl(url.query, keep_blank_values=True):
        query.setdefault(k, []).append(v)
    headers = {k.lower(): v for k, v in req.headers.items()}
    entries = http_entries(mesh, dest)
    if not entries:
        refs = [BackendRef(name=dest.split("/")[1])]
        return Explanation(
            **base,
            outcome="forward",
            summary=f"no HTTPRoute attached to {dest}: the whole service",
            backends=_backends(mesh, refs, dest.split("/")[0]),
        )
    verdicts, winner = [], None
    for e in entries:
        if winner is not None:
            verdicts.append(RuleVerdict(rule=e.name, matched=False, reason=f"not tried: {winner.name} matched first"))
            continue
        reason = why_not(e.match, req.method, path, query, headers)
        verdicts.append(RuleVerdict(rule=e.name, matched=not reason, reason=reason or "matched"))
        if not reason:
            winner = e
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
    return Explanation(
        **base,
        outcome="forward",
        summary=f"{winner.name} matched",
        route=winner.route.key,
        rules=verdicts,
        filters=filters,
        backends=_backends(mesh, winner.rule.backend_refs, winner.route.namespace),
    )
