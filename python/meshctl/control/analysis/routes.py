"""Route findings, read from the compiler's own input (``compiler.Mesh``) and
ordered by its own functions (``http_entries``, ``gateway_entries``,
``tcp_route``), so that what is analysed is what sidecars run:

- MC0301: an HTTPRoute rule every match of which is taken by an earlier rule
  (of any route on the same service, or on the same port of a Gateway) —
  analysed on the matches as compiled (``matches.covers``), once per service
  or Gateway port the route is attached to;
- MC0302: a TCPRoute that is not the oldest on its service (only that one is used);
- MC0303: an HTTPRoute on a tcp service, or a TCPRoute on an HTTP one (ignored);
- MC0304 / MC0305: a backend (weight above 0) whose service has no live
  endpoint, or whose label subset matches none of the service's live endpoints.
  Mirrors are left out: a mirrored copy failing changes no answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshctl.control.analysis.matches import covers
from meshctl.control.analysis.report import Finding, finding
from meshctl.control.compiler import (
    Entry,
    Mesh,
    attached,
    gateway_entries,
    http_entries,
    route_match,
    subset_endpoints,
    tcp_route,
)
from meshctl.control.kinds.common import RouteView
from meshctl.control.kinds.gateway import GatewayListener

# === shadowed rules ===


def _rule(e: Entry) -> tuple[str, int]:
    return (e.route.key, e.rule_index)


def _shadowed(entries: Iterable[tuple[Entry, Mapping[str, Any]]], where: str) -> list[Finding]:
    """MC0301 for each rule whose every compiled match (in the data plane's order) is covered by
    an earlier match of another rule. Coverage is transitive, so checking against other rules'
    earlier matches is enough even when a rule's own matches overlap."""
    tried: list[tuple[Entry, Mapping[str, Any]]] = []
    takers: dict[tuple[str, int], list[str] | None] = {}  # rule -> the rules taking its matches (None: one is live)
    rules: dict[tuple[str, int], Entry] = {}
    for entry, match in entries:
        rule = _rule(entry)
        rules.setdefault(rule, entry)
        taker = next((e for e, m in tried if _rule(e) != rule and covers(m, match)), None)
        tried.append((entry, match))
        if takers.get(rule, []) is None:
            continue
        if taker is None:
            takers[rule] = None
        else:
            name = f"{taker.route.key} rule {taker.rule_index}"
            known = takers.setdefault(rule, [])
            assert known is not None
            if name not in known:
                known.append(name)
    out = []
    for rule, by in takers.items():
        if by is None:
            continue
        e = rules[rule]
        message = (
            f"rule {e.rule_index} is never used on {where}: every request it matches is taken first by {', '.join(by)}"
        )
        out.append(finding("MC0301", "HTTPRoute", e.route.key, message, field=f"spec.rules[{e.rule_index}]"))
    return out


def _gateway_ports(listeners: Iterable[GatewayListener]) -> dict[int, list[GatewayListener]]:
    """A Gateway's listeners by port, as the compiler makes one data-plane listener of each port."""
    ports: dict[int, list[GatewayListener]] = {}
    for item in listeners:
        ports.setdefault(item.port, []).append(item)
    return dict(sorted(ports.items()))


def shadowed_rules(mesh: Mesh) -> list[Finding]:
    out = []
    for service, protocol in sorted(mesh.services.items()):
        if protocol != "tcp":  # a tcp service's HTTPRoutes are ignored (MC0303)
            out += _shadowed(((e, route_match(e)) for e in http_entries(mesh, service)), f"service {service}")
    for gateway, spec in sorted(mesh.gateways.items()):
        for port, listeners in _gateway_ports(spec.listeners).items():
            entries = ((e, route_match(e, host)) for host, e in gateway_entries(mesh, gateway, listeners))
            out += _shadowed(entries, f"Gateway {gateway} port {port}")
    return out


# === routes that are not used ===


def ignored_routes(mesh: Mesh) -> list[Finding]:
    out = []
    for service, protocol in sorted(mesh.services.items()):
        routes = attached(mesh.tcp_routes, service)
        if protocol == "tcp":
            used = tcp_route(mesh, service)
            for r in sorted(routes, key=lambda r: r.key):
                if used is not None and r.key != used.key:
                    message = f"unused: {used.key}, the oldest TCPRoute on service {service}, is the one in use"
                    out.append(finding("MC0302", "TCPRoute", r.key, message))
            for r in attached(mesh.http_routes, service):
                message = f"ignored: service {service} is tcp (its first port), so its callers use no HTTP rules"
                out.append(finding("MC0303", "HTTPRoute", r.key, message))
        else:
            for r in routes:
                message = f"ignored: service {service} is {protocol} (its first port); a TCPRoute needs a tcp service"
                out.append(finding("MC0303", "TCPRoute", r.key, message))
    return out


# === backends without endpoints ===


def _backend_findings(mesh: Mesh, kind: str, route: RouteView) -> list[Finding]:
    """MC0304 / MC0305 for one route: one finding per (service, subset), naming the rules."""
    empty: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}
    for r, rule in enumerate(route.spec.rules):
        for b in rule.backend_refs:
            if b.weight > 0:
                service = f"{b.namespace or route.namespace}/{b.name}"
                subset = tuple(sorted(b.subset.items()))
                if not subset_endpoints(mesh, service, b.subset):
                    rules = empty.setdefault((service, subset if mesh.endpoints.get(service) else ()), [])
                    if r not in rules:
                        rules.append(r)
    out = []
    for (service, subset), rules in empty.items():
        where = f"rule {rules[0]} sends" if len(rules) == 1 else f"rules {', '.join(map(str, rules))} send"
        field = f"spec.rules[{rules[0]}].backendRefs"
        if subset:
            labels = ", ".join(f"{k}={v}" for k, v in subset)
            message = f"{where} to service {service} subset {{{labels}}}, which matches none of its live endpoints"
            out.append(finding("MC0305", kind, route.key, message, field=field))
        else:
            message = f"{where} to service {service}, which has no live endpoint (requests get 503)"
            out.append(finding("MC0304", kind, route.key, message, field=field))
    return out


def empty_backends(mesh: Mesh) -> list[Finding]:
    out = []
    for route in mesh.http_routes:
        out += _backend_findings(mesh, "HTTPRoute", route)
    for route in mesh.tcp_routes:
        out += _backend_findings(mesh, "TCPRoute", route)
    return out


def analyse(mesh: Mesh) -> list[Finding]:
    return [*shadowed_rules(mesh), *ignored_routes(mesh), *empty_backends(mesh)]
