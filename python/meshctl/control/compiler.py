"""The snapshot compiler: mesh resources in, one sidecar's data-plane config
out (the document ``DataPlane.update()`` takes). A pure function of its
inputs — no database, no clock — and tested as one.

A sidecar gets:
- ``inbound``: its advertised address, forwarding to the app on loopback;
- ``outbound/<ns>/<svc>``: one loopback port per upstream it asked for, with
  that service's HTTPRoute rules (or TCPRoute backends);
- ``http-proxy``: one loopback port routing to every HTTP service by Host
  (``svc``, ``svc.ns``, ``svc.ns.svc``).

Between sidecars everything is mutual TLS: the inbound listener requires it
(STRICT, or PERMISSIVE per service), and each outbound cluster originates it
and expects the destination's SPIFFE ID; HTTP goes as HTTP/2. The sidecar
adds its own SVID files to the ``identity`` section, which carries the roots.

Rules attached to one service are ordered as the Gateway API says: exact
paths first, then regular expressions, then longer prefixes (a match without
a path is the prefix ``/``); then matches with a method, with more headers,
with more query params; then the older route, the route's name, and the
order in the route.

The inbound listener of a service with AuthorizationPolicies (or of every
service when the mesh default is deny) carries an ``authorization`` block:
each policy rule becomes the cross product of its ``from`` and ``to``
entries, in policy name order then rule order (see ``authorization``).

The HTTP proxy port also carries egress (ExternalServices, CONNECT, the mesh
outbound policy), and a sidecar registered ``transparent`` gets the listeners
its iptables redirect reaches: see ``compile_egress``.

An ingress gateway (a sidecar registered with ``gateway``) gets no inbound
listener: instead one ``gateway/<port>`` listener per port of the Gateway
of its service's name (see ``_Compiler.gateway``), serving the HTTPRoutes
attached to it, with edge TLS for HTTPS ports and the usual mTLS clusters
into the mesh.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from meshctl import dataplane_config as dp
from meshctl.control.compile_egress import Egress, TransparentSpec, vips
from meshctl.control.compile_fields import present
from meshctl.control.compile_memo import RoutesDone, reusable
from meshctl.control.compile_policy import add_cluster_policy, rate_limit
from meshctl.control.compile_route import resilience
from meshctl.control.compile_telemetry import telemetry, with_access_log
from meshctl.control.kinds.authorizationpolicy import AuthorizationPolicySpec
from meshctl.control.kinds.common import BackendRef, RouteView
from meshctl.control.kinds.externalservice import ExternalView
from meshctl.control.kinds.gateway import GatewayListener, GatewaySpec
from meshctl.control.kinds.httproute import HeaderModifier, HTTPRouteRule, PathMatch, PathModifier, RouteMatch
from meshctl.control.kinds.ratelimitpolicy import RateLimitPolicySpec
from meshctl.control.kinds.telemetry import TelemetryView
from meshctl.control.kinds.trafficpolicy import ConnectionPool, TrafficPolicySpec
from meshctl.spiffe import spiffe_id

# === inputs ===


@dataclass(frozen=True)
class EndpointView:
    address: str
    port: int
    weight: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def host_port(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def config(self) -> dp.EndpointConfig:
        out: dp.EndpointConfig = {"address": self.host_port, "weight": self.weight}
        if zone := self.labels.get("zone"):  # what its sidecar joined with (--zone): for callers' locality
            out["zone"] = zone
        return out


@dataclass
class Mesh:
    """Everything the compiler reads, as loaded at one generation."""

    generation: int = 0
    #: "ns/name" -> the protocol of the service's first port (http when it has none).
    services: dict[str, str] = field(default_factory=dict)
    #: "ns/name" -> its live endpoints.
    endpoints: dict[str, list[EndpointView]] = field(default_factory=dict)
    http_routes: list[RouteView] = field(default_factory=list)
    tcp_routes: list[RouteView] = field(default_factory=list)
    #: target "ns/name" -> (policy "ns/name", spec)
    policies: dict[str, tuple[str, TrafficPolicySpec]] = field(default_factory=dict)
    #: "ns/name" -> "STRICT" | "PERMISSIVE": whether its sidecars also take plaintext callers.
    mtls: dict[str, str] = field(default_factory=dict)
    #: target "ns/name" -> [(AuthorizationPolicy "ns/name", spec)]
    authz: dict[str, list[tuple[str, AuthorizationPolicySpec]]] = field(default_factory=dict)
    #: What a request that no policy decides gets ("allow" | "deny"): the control plane's setting.
    authz_default: str = "allow"
    #: Identities are spiffe://<trust_domain>/ns/<namespace>/sa/<service>.
    trust_domain: str = "cluster.local"
    #: The CA's roots (PEM), sent to every sidecar; two during a root rotation.
    trust_bundle: tuple[str, ...] = ()
    #: "ns/name" -> the Gateway's spec (its instances join as the Service "ns/name").
    gateways: dict[str, GatewaySpec] = field(default_factory=dict)
    #: target "ns/name" -> (RateLimitPolicy "ns/name", spec)
    rate_limits: dict[str, tuple[str, RateLimitPolicySpec]] = field(default_factory=dict)
    #: Every Telemetry, in namespace and name order.
    telemetry: list[TelemetryView] = field(default_factory=list)
    #: "ns/name" -> its ports as (port, protocol); a service without ports has none.
    service_ports: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    #: Every ExternalService, in namespace and name order.
    external_services: list[ExternalView] = field(default_factory=list)
    #: Egress no Service or ExternalService claims: "ALLOW_ANY" | "REGISTRY_ONLY" (the setting).
    outbound_policy: str = "ALLOW_ANY"
    #: id(route list) -> (that list, routes by the service they attach to): see `attached_to`.
    route_index: dict[int, tuple[list[RouteView], int, dict[str, list[RouteView]]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: (service, hosts, zone) -> its compiled routes and the clusters they name: compiled once per
    #: mesh for every caller (see `_Compiler.http_routes`).
    service_routes: dict[tuple[Any, ...], RoutesDone] = field(default_factory=dict, repr=False, compare=False)
    #: The previous mesh's `service_routes` (the push hub sets it): reused where still valid.
    earlier: dict[tuple[Any, ...], RoutesDone] = field(default_factory=dict, repr=False, compare=False)
    #: (service, subset, zone) -> its cluster, compiled once per mesh (see `mesh_cluster`).
    clusters: dict[tuple[Any, ...], dp.ClusterConfig] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class SidecarSpec:
    """One sidecar as it registered."""

    namespace: str
    service: str
    address: str
    inbound_port: int
    app_port: int
    #: (upstream as given: "svc" or "ns/svc", local port)
    upstreams: tuple[tuple[str, int], ...] = ()
    http_proxy_port: int | None = None
    admin_port: int | None = None
    #: An ingress gateway: the Gateway's listeners instead of an inbound listener.
    gateway: bool = False
    #: Where it runs (`--zone`): its clusters keep traffic in this zone (locality).
    zone: str | None = None
    #: Transparent mode: its outbound (and DNS) ports.
    transparent: TransparentSpec | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}"

    def upstream_key(self, name: str) -> str:
        return name if "/" in name else f"{self.namespace}/{name}"


# === rule order, shared with `explain` ===


@dataclass(frozen=True)
class Entry:
    """One match of one rule of one route, in the order the data plane tries them."""

    route: RouteView
    rule_index: int
    match_index: int
    rule: HTTPRouteRule
    match: RouteMatch

    @property
    def name(self) -> str:
        return f"{self.route.key}/rule{self.rule_index}/match{self.match_index}"


#: What a match without a path matches (Gateway API): it ranks as this, and ties with it.
_ANY_PATH = PathMatch(type="PathPrefix", value="/")


def _precedence(e: Entry) -> tuple[Any, ...]:
    path = e.match.path or _ANY_PATH
    kind = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[path.type]
    return (
        kind,
        -len(path.value),
        e.match.method is None,
        -len(e.match.headers),
        -len(e.match.query_params),
        e.route.created_at,
        e.route.key,
        e.rule_index,
        e.match_index,
    )


def attached(routes: Iterable[RouteView], service: str) -> list[RouteView]:
    """The routes whose parentRefs name `service` ("ns/name") (Gateway parents are not services)."""
    return [
        r
        for r in routes
        if any(
            f"{p.namespace or r.namespace}/{p.name}" == service and not getattr(p, "is_gateway", False)
            for p in r.spec.parent_refs
        )
    ]


def attached_to(mesh: Mesh, routes: list[RouteView], service: str) -> list[RouteView]:
    """`attached(routes, service)` for one of `mesh`'s route lists, through an index built once per
    list (compiling every service's listeners would otherwise scan every route for each)."""
    index = mesh.route_index.get(id(routes))
    if index is None or index[0] is not routes or index[1] != len(routes):
        by: dict[str, list[RouteView]] = {}
        for r in routes:
            parents = [p for p in r.spec.parent_refs if not getattr(p, "is_gateway", False)]
            for parent in dict.fromkeys(f"{p.namespace or r.namespace}/{p.name}" for p in parents):
                by.setdefault(parent, []).append(r)
        index = mesh.route_index[id(routes)] = (routes, len(routes), by)
    return list(index[2].get(service, ()))


def http_entries(mesh: Mesh, service: str) -> list[Entry]:
    entries = [
        Entry(route, ri, mi, rule, match)
        for route in attached_to(mesh, mesh.http_routes, service)
        for ri, rule in enumerate(route.spec.rules)
        for mi, match in enumerate(rule.matches)
    ]
    return sorted(entries, key=_precedence)


def tcp_route(mesh: Mesh, service: str) -> RouteView | None:
    """The oldest TCPRoute attached to `service` wins, as for conflicting Gateway API routes."""
    routes = sorted(attached_to(mesh, mesh.tcp_routes, service), key=lambda r: (r.created_at, r.key))
    return routes[0] if routes else None


def subset_endpoints(mesh: Mesh, service: str, subset: Mapping[str, str]) -> list[EndpointView]:
    return [e for e in mesh.endpoints.get(service, []) if all(e.labels.get(k) == v for k, v in subset.items())]


# === gateways: which routes a listener serves, for which hosts ===


def covers(pattern: str, host: str) -> bool:
    """Whether hostname `pattern` covers `host` (itself a name or a `*.` wildcard): equal, or
    `*.example.com` over any name below example.com, at any depth (`a.example.com`,
    `a.b.example.com`, `*.b.example.com`), as Gateway API hostnames match; never example.com."""
    if pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1


def intersect(listener: str | None, hostnames: Iterable[str]) -> list[str | None]:
    """The hosts a route with `hostnames` (none: any) serves on a listener with hostname
    `listener` (None: any): for each pair, the narrower of the two when one covers the other
    (`*.example.com` and `a.example.com` give `a.example.com`; `*.com` and `*.example.com`
    give `*.example.com`), else nothing. None stands for any host; an empty list means the
    route does not attach to the listener."""
    names = list(dict.fromkeys(hostnames))
    if listener is None:
        return list(names) if names else [None]
    if not names:
        return [listener]
    out: list[str | None] = []
    for name in names:
        narrower = name if covers(listener, name) else listener if covers(name, listener) else None
        if narrower is not None and narrower not in out:
            out.append(narrower)
    return out


def host_precedence(host: str | None) -> tuple[int, int, str]:
    """Rules for exact hosts first, then wildcards, longest (most specific) first, then any host:
    the Gateway API gives precedence to the route with the most specific matching hostname."""
    if host is None:
        return (2, 0, "")
    return (1 if host.startswith("*.") else 0, -len(host), host)


def gateway_routes(mesh: Mesh, gateway: str, listener: GatewayListener) -> list[tuple[str | None, RouteView]]:
    """(host, route) for each HTTPRoute attached to `listener` of Gateway `gateway` ("ns/name"),
    directly (sectionName) or through the whole Gateway, once per host it serves there."""
    out: list[tuple[str | None, RouteView]] = []
    for route in mesh.http_routes:
        parents = [
            p
            for p in route.spec.parent_refs
            if getattr(p, "is_gateway", False) and f"{p.namespace or route.namespace}/{p.name}" == gateway
        ]
        if any(p.section_name in (None, listener.name) for p in parents):
            out += [(h, route) for h in intersect(listener.hostname, route.spec.hostnames or [])]
    return out


def gateway_entries(mesh: Mesh, gateway: str, listeners: Iterable[GatewayListener]) -> list[tuple[str | None, Entry]]:
    """The rules one data-plane listener (the Gateway's `listeners` on one port) tries, in order:
    by host (`host_precedence`), then by the usual rule precedence within a host."""
    seen: set[tuple[str | None, str]] = set()
    out: list[tuple[str | None, Entry]] = []
    for listener in listeners:
        for host, route in gateway_routes(mesh, gateway, listener):
            for ri, rule in enumerate(route.spec.rules):
                for mi, match in enumerate(rule.matches):
                    entry = Entry(route, ri, mi, rule, match)
                    if (host, entry.name) not in seen:  # a route on two listeners of a port, same host
                        seen.add((host, entry.name))
                        out.append((host, entry))
    return sorted(out, key=lambda he: (host_precedence(he[0]), _precedence(he[1])))


# === the compiler ===

_NAME_OK = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def cluster_name(service: str, subset: Mapping[str, str]) -> str:
    if not subset:
        return f"out/{service}"
    label = "/".join(f"{k}:{v}" for k, v in sorted(subset.items()))
    if not _NAME_OK.match(label):
        digest = hashlib.sha256(label.encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.:/-]", "_", label) + "-" + digest
    return f"out/{service}/{label}"


_LB_POLICIES: dict[str, dp.LbPolicy] = {
    "RoundRobin": "round_robin",
    "LeastRequest": "least_request",
    "Random": "random",
    "RingHash": "ring_hash",
    "PeakEWMA": "peak_ewma",
}
_PATH_FORMS: dict[str, Literal["path", "path_prefix", "path_regex"]] = {
    "Exact": "path",
    "PathPrefix": "path_prefix",
    "RegularExpression": "path_regex",
}
_MTLS_MODES: dict[str, dp.TlsMode] = {"STRICT": "strict", "PERMISSIVE": "permissive"}
_ACTIONS: dict[str, dp.AuthorizationAction] = {"ALLOW": "allow", "DENY": "deny"}


def circuit_breakers(pool: ConnectionPool) -> dp.CircuitBreakersConfig:
    """The data plane's circuit breakers for Istio's connectionPool: only the limits it sets."""
    limits: dp.CircuitBreakersConfig = {}
    if pool.tcp and pool.tcp.max_connections:
        limits["max_connections"] = pool.tcp.max_connections
    if pool.http and pool.http.http1_max_pending_requests:
        limits["max_pending_requests"] = pool.http.http1_max_pending_requests
    if pool.http and pool.http.http2_max_requests:
        limits["max_requests"] = pool.http.http2_max_requests
    if pool.http and pool.http.max_retries:
        limits["max_retries"] = pool.http.max_retries
    return limits


def route_match(e: Entry, host: str | None = None) -> dp.MatchConfig:
    """The data plane's `match` for a rule's match (explain hands the same to `_core.match_route`)."""
    m: dp.MatchConfig = {}
    if host:
        m["host"] = host
    if e.match.path:
        m[_PATH_FORMS[e.match.path.type]] = e.match.path.value
    if e.match.method:
        m["method"] = e.match.method
    exact = {h.name.lower(): h.value for h in e.match.headers if h.type != "RegularExpression"}
    if exact:
        m["headers"] = exact
    if regex := {h.name.lower(): h.value for h in e.match.headers if h.type == "RegularExpression"}:
        m["header_regex"] = regex
    if e.match.query_params:
        m["query"] = {q.name: q.value for q in e.match.query_params}
    return m


class _Compiler:
    def __init__(self, mesh: Mesh, sidecar: SidecarSpec):
        self.mesh, self.sidecar = mesh, sidecar
        self.clusters: dict[str, dp.ClusterConfig] = {}
        #: The clusters named while compiling one service's routes, in order (see `http_routes`).
        self._named: dict[str, tuple[str, Mapping[str, str]]] | None = None

    def protocol(self, service: str) -> str:
        return self.mesh.services.get(service, "http")

    def cluster(self, service: str, subset: Mapping[str, str]) -> str:
        name = cluster_name(service, subset)
        if self._named is not None:
            self._named[name] = (service, subset)
        if name not in self.clusters:
            self.clusters[name] = mesh_cluster(self.mesh, service, subset, self.sidecar.zone)
        return name

    def backends(self, refs: list[BackendRef], namespace: str) -> list[dp.BackendConfig]:
        return [
            {"cluster": self.cluster(f"{b.namespace or namespace}/{b.name}", b.subset), "weight": b.weight}
            for b in refs
        ]

    def route(self, e: Entry, host: str | None = None) -> dp.RouteConfig:
        r: dp.RouteConfig = {"name": e.name, "match": route_match(e, host)}
        rule = e.rule
        if (redirect := rule.filter("RequestRedirect")) is not None:
            to = present(
                dp.RedirectConfig,
                scheme=redirect.scheme,
                host=redirect.hostname,
                port=redirect.port,
                status=redirect.status_code,
            )
            r["redirect"] = _path(to, redirect.path)
        else:
            r["backends"] = self.backends(rule.backend_refs, e.route.namespace)
        if (rewrite := rule.filter("URLRewrite")) is not None:
            new: dp.RewriteConfig = {} if rewrite.hostname is None else {"host": rewrite.hostname}
            if new := _path(new, rewrite.path):  # an empty URLRewrite changes nothing (the data plane refuses one)
                r["rewrite"] = new
        if (mod := rule.filter("RequestHeaderModifier")) is not None:
            r["request_headers"] = _headers(mod)
        if (mod := rule.filter("ResponseHeaderModifier")) is not None:
            r["response_headers"] = _headers(mod)
        r.update(resilience(rule, e.route.namespace, self.cluster))
        return r

    def http_routes(self, service: str, hosts: list[str | None]) -> list[dp.RouteConfig]:
        """`service`'s routes for `hosts`; what they compile to depends on nothing of the caller but
        its zone, so they are compiled once per mesh (every sidecar calling a popular service, and
        every http-proxy listener, which routes to every service, would otherwise compile them
        again) and their clusters added to each caller's in the order a compile names them."""
        key = (service, tuple(hosts), self.sidecar.zone)
        done = self.mesh.service_routes.get(key)
        if done is None:
            views = tuple(attached_to(self.mesh, self.mesh.http_routes, service))
            mesh, zone = self.mesh, self.sidecar.zone
            done = reusable(mesh.earlier.get(key), views, lambda svc, sub: mesh_cluster(mesh, svc, sub, zone))
            if done is None:
                outer, self._named = self._named, {}
                try:
                    routes = self._http_routes(service, hosts)
                    named = {n: (svc, sub, self.clusters[n]) for n, (svc, sub) in self._named.items()}
                    done = RoutesDone(routes, named, views)
                finally:
                    if outer is not None:
                        outer.update(self._named)
                    self._named = outer
            self.mesh.service_routes[key] = done
        for name, (svc, sub, cluster) in done.clusters.items():
            self.clusters.setdefault(name, cluster)
            if self._named is not None:
                self._named[name] = (svc, sub)
        return done.routes

    def _http_routes(self, service: str, hosts: list[str | None]) -> list[dp.RouteConfig]:
        entries = http_entries(self.mesh, service)
        if not entries:  # no HTTPRoute: every request goes to the whole service
            cluster = self.cluster(service, {})
            routes: list[dp.RouteConfig] = []
            for h in hosts:
                r: dp.RouteConfig = {"name": f"{service}/default"}
                if h:
                    r["match"] = {"host": h}
                r["backends"] = [{"cluster": cluster}]
                routes.append(r)
            return routes
        return [self.route(e, h) for h in hosts for e in entries]

    def outbound(self, service: str, port: int) -> dp.ListenerConfig:
        base: dp.ListenerConfig = {"name": f"outbound/{service}", "address": f"127.0.0.1:{port}"}
        return self.service_listener(service, self.protocol(service) == "tcp", base)

    def service_listener(self, service: str, tcp: bool, base: dp.ListenerConfig) -> dp.ListenerConfig:
        """`base` made a listener to `service`: its TCPRoute backends, or its HTTP routes."""
        base["direction"] = "outbound"
        if tcp:
            route = tcp_route(self.mesh, service)
            refs = route.spec.rules[0].backend_refs if route else [BackendRef(name=service.split("/")[1])]
            namespace = route.namespace if route else service.split("/")[0]
            return base | {"protocol": "tcp", "backends": self.backends(refs, namespace)}
        return base | {"protocol": "http", "routes": self.http_routes(service, [None])}

    def inbound(self) -> dp.ListenerConfig:
        sc = self.sidecar
        c: dp.ClusterConfig = {"name": "inbound", "endpoints": [{"address": f"127.0.0.1:{sc.app_port}"}]}
        c["service"] = sc.key
        protocol = self.protocol(sc.key)
        address = EndpointView(sc.address, sc.inbound_port).host_port
        listener: dp.ListenerConfig = {"name": "inbound", "address": address, "direction": "inbound"}
        if protocol == "tcp":
            listener |= {"protocol": "tcp", "cluster": "inbound"}
        else:
            c["protocol"] = "http2" if protocol in ("http2", "grpc") else "http1"
            listener |= {"protocol": "http", "routes": [{"name": "inbound", "backends": [{"cluster": "inbound"}]}]}
        listener["tls"] = {"mode": _MTLS_MODES[self.mesh.mtls.get(sc.key, "STRICT")]}
        if (authz := authorization(self.mesh, sc.key)) is not None:
            listener["authorization"] = authz
        if (limits := self.mesh.rate_limits.get(sc.key)) is not None:
            listener["rate_limit"] = rate_limit(limits[1], limits[0].split("/")[0], self.mesh.trust_domain)
        self.clusters["inbound"] = c
        return listener

    def gateway(self) -> list[dp.ListenerConfig]:
        """One listener per port of the sidecar's Gateway, on its address: routes by host, and for
        HTTPS the listeners' certificates by SNI. Certificate files are relative (`<ref>.pem`,
        `<ref>.key`): the gateway process finds them in its --cert-dir."""
        sc = self.sidecar
        spec = self.mesh.gateways.get(sc.key)
        if spec is None:
            return []
        ports: dict[int, list[GatewayListener]] = {}
        for item in spec.listeners:
            ports.setdefault(item.port, []).append(item)
        out = []
        for port, listeners in sorted(ports.items()):
            https = listeners[0].protocol == "HTTPS"
            routes = []
            for host, entry in gateway_entries(self.mesh, sc.key, listeners):
                r = self.route(entry, host)
                if "backends" in r:  # the edge says how the client came; a client cannot claim it
                    edits = r.setdefault("request_headers", {})
                    edits["set"] = {"x-forwarded-proto": "https" if https else "http", **edits.get("set", {})}
                routes.append(r)
            listener: dp.ListenerConfig = {
                "name": f"gateway/{port}",
                "address": EndpointView(sc.address, port).host_port,
                "protocol": "http",
                "routes": routes,
                "direction": "gateway",
            }
            if https:
                # A client without SNI (or with an unknown name) gets the first: the catch-all's.
                certificates: list[dp.CertificateConfig] = []
                for item in sorted(listeners, key=lambda x: x.hostname is not None):
                    assert item.tls is not None
                    ref = item.tls.certificate_refs[0].name
                    cert: dp.CertificateConfig = {"server_names": [item.hostname]} if item.hostname else {}
                    cert |= {"cert_chain_file": f"{ref}.pem", "private_key_file": f"{ref}.key"}
                    certificates.append(cert)
                listener["tls"] = {"mode": "simple", "certificates": certificates}
            out.append(listener)
        return out

    def http_proxy(self, port: int) -> dp.ListenerConfig:
        routes: list[dp.RouteConfig] = []
        for service in sorted(self.mesh.services):
            if self.protocol(service) == "tcp":
                continue
            namespace, name = service.split("/")
            hosts: list[str | None] = [f"{name}.{namespace}", f"{name}.{namespace}.svc"]
            if namespace == self.sidecar.namespace:
                hosts.insert(0, name)
            routes += self.http_routes(service, hosts)
        routes += self.egress().proxy_routes()
        listener: dp.ListenerConfig = {"name": "http-proxy", "address": f"127.0.0.1:{port}", "protocol": "http"}
        listener |= {"routes": routes, "direction": "outbound"}
        # The mesh's outbound policy decides what an unknown Host gets (ALLOW_ANY: it is passed on).
        listener["egress"] = self.egress().proxy_egress()
        return listener

    def egress(self) -> Egress:
        return Egress(self.mesh.external_services, self.mesh.outbound_policy, self.sidecar.key, self.clusters)

    def transparent(self, spec: TransparentSpec) -> tuple[list[dp.ListenerConfig], dp.DnsConfig | None]:
        """The transparent listener, an unbound listener per VIP and port (each service's ports,
        http on 80 for one without), and the DNS answerer when the sidecar has a DNS port."""
        addresses = vips(self.mesh.services, self.mesh.external_services)
        egress = self.egress()
        listeners = [egress.transparent_listener(spec.outbound_port)]
        for service in sorted(self.mesh.services):
            for port, protocol in self.mesh.service_ports.get(service) or [(80, "http")]:
                base: dp.ListenerConfig = {"name": f"vip/{service}/{port}", "address": f"{addresses[service]}:{port}"}
                base["bind"] = False
                listeners.append(self.service_listener(service, protocol == "tcp", base))
        listeners += egress.vip_listeners(addresses)
        if spec.dns_port is None:
            return listeners, None
        return listeners, egress.dns(spec.dns_port, self.mesh.services, self.sidecar.namespace, addresses)

    def outbound_part(self) -> Outbound:
        sc = self.sidecar
        listeners = [self.outbound(sc.upstream_key(u), port) for u, port in sorted(sc.upstreams, key=lambda u: u[1])]
        if sc.http_proxy_port:
            listeners.append(self.http_proxy(sc.http_proxy_port))
        dns = None
        if sc.transparent is not None and not sc.gateway:
            more, dns = self.transparent(sc.transparent)
            listeners += more
        return Outbound(listeners, list(self.clusters.values()), dns)

    def own_part(self) -> Own:
        """What is the sidecar's alone: its inbound listener (or a gateway's), their clusters, its
        telemetry section and access log."""
        self.clusters = {}
        own = self.gateway() if self.sidecar.gateway else [self.inbound()]
        sc = self.sidecar
        instance = EndpointView(sc.address, sc.inbound_port).host_port  # a gateway's port is 0
        section, log = telemetry(self.mesh.telemetry, sc.namespace, sc.service, instance)
        return Own(own, list(self.clusters.values()), section, log)

    def tail(self, out: Outbound) -> dp.DataPlaneConfig:
        """The sections after the clusters (dns, admin, identity)."""
        config: dp.DataPlaneConfig = {}
        if out.dns is not None:
            config["dns"] = out.dns
        if self.sidecar.admin_port:
            config["admin"] = {"address": f"127.0.0.1:{self.sidecar.admin_port}"}
        if self.mesh.trust_bundle:
            # The sidecar adds its own SVID files to this section.
            config["identity"] = {"roots": "".join(self.mesh.trust_bundle)}
        return config

    def compile(self, outbound: Outbound | None) -> dp.DataPlaneConfig:
        out = outbound or self.outbound_part()
        own = self.own_part()
        clusters = {c["name"]: c for c in [*own.clusters, *out.clusters]}  # a gateway's may repeat
        config: dp.DataPlaneConfig = {"listeners": with_access_log([*own.listeners, *out.listeners], own.log)}
        config |= {"clusters": list(clusters.values()), "telemetry": own.telemetry}
        return config | self.tail(out)


@dataclass(frozen=True)
class Own:
    """The part of a sidecar's config that is its own (see `_Compiler.own_part`)."""

    listeners: list[dp.ListenerConfig]
    clusters: list[dp.ClusterConfig]
    telemetry: dp.TelemetryConfig
    log: dp.AccessLogConfig | None


@dataclass(frozen=True)
class Outbound:
    """The part of a sidecar's config that is the same for every instance of its service with
    the same upstream ports: computed once per such group and generation."""

    listeners: list[dp.ListenerConfig]
    clusters: list[dp.ClusterConfig]
    #: The DNS answerer of a transparent sidecar.
    dns: dp.DnsConfig | None = None


def outbound_key(sidecar: SidecarSpec, mesh: Mesh | None = None) -> tuple[Any, ...]:
    """Sidecars with equal keys get equal `Outbound` parts (in `mesh`: the ExternalServices
    that refuse the sidecar's service, since allowedServices makes their output differ)."""
    refused = () if mesh is None else tuple(e.key for e in mesh.external_services if not e.allows(sidecar.key))
    ports = (sidecar.http_proxy_port, sidecar.transparent, sidecar.gateway)
    return (sidecar.namespace, sidecar.upstreams, sidecar.zone, *ports, refused)


def compile_outbound(mesh: Mesh, sidecar: SidecarSpec) -> Outbound:
    return _Compiler(mesh, sidecar).outbound_part()


def mesh_cluster(mesh: Mesh, service: str, subset: Mapping[str, str], zone: str | None) -> dp.ClusterConfig:
    """`cluster_config`, once per mesh: the callers of a service share its cluster (the compiled
    configs are never changed once made; the routes a service compiles to share them already)."""
    key = (service, tuple(sorted(subset.items())), zone)
    c = mesh.clusters.get(key)
    if c is None:
        c = mesh.clusters[key] = cluster_config(mesh, service, subset, zone)
    return c


def cluster_config(mesh: Mesh, service: str, subset: Mapping[str, str], zone: str | None = None) -> dp.ClusterConfig:
    """The cluster a calling sidecar in `zone` gets for `service` ("ns/name") and `subset`, as
    compiled into its config (and shown by `explain`)."""
    c: dp.ClusterConfig = {
        "name": cluster_name(service, subset),
        "endpoints": [e.config() for e in subset_endpoints(mesh, service, subset)],
        "service": service,
    }
    policy = mesh.policies.get(service)
    spec = policy[1] if policy else None
    if mesh.services.get(service, "http") != "tcp":
        # HTTP/2 between sidecars: one mTLS connection per peer pair carries every request.
        c["protocol"] = (spec.protocol if spec else None) or "http2"
    # Endpoints are the service's sidecars: mTLS, and they must prove to be that service.
    peer_namespace, peer_service = service.split("/", 1)
    c["tls"] = {"peer_ids": [spiffe_id(mesh.trust_domain, peer_namespace, peer_service)]}
    if spec and spec.load_balancer:
        lb = spec.load_balancer
        c["lb"] = _LB_POLICIES[lb.type]
        if lb.hash_on and lb.hash_on.header:
            c["hash_header"] = lb.hash_on.header.lower()
    if spec and spec.connect_timeout_ms:
        c["connect_timeout_ms"] = spec.connect_timeout_ms
    if spec and spec.connection_pool and (limits := circuit_breakers(spec.connection_pool)):
        c["circuit_breakers"] = limits
    add_cluster_policy(c, spec, zone)
    return c


_WithPath = TypeVar("_WithPath", dp.RewriteConfig, dp.RedirectConfig)


def _path(target: _WithPath, p: PathModifier | None) -> _WithPath:
    """`target` with the new path of `p`, if any (a rewrite's or a redirect's)."""
    if p is not None and p.type == "ReplaceFullPath" and p.replace_full_path is not None:
        target["path"] = p.replace_full_path
    elif p is not None and p.type == "ReplacePrefixMatch" and p.replace_prefix_match is not None:
        target["path_prefix"] = p.replace_prefix_match
    return target


def _headers(mod: HeaderModifier) -> dp.HeaderModifier:
    out: dp.HeaderModifier = {}
    if mod.set:
        out["set"] = {h.name.lower(): h.value for h in mod.set}
    if mod.add:
        out["add"] = {h.name.lower(): h.value for h in mod.add}
    if mod.remove:
        out["remove"] = [h.lower() for h in mod.remove]
    return out


_RuleField = Literal["principals", "namespaces", "services", "paths", "methods"]
#: Source fields of a data-plane authorization rule (the caller's identity), then request fields.
SOURCE_FIELDS: tuple[_RuleField, ...] = ("principals", "namespaces", "services")
OPERATION_FIELDS: tuple[_RuleField, ...] = ("paths", "methods")


def authorization(mesh: Mesh, service: str) -> dp.AuthorizationConfig | None:
    """The inbound `authorization` block of `service` ("ns/name"), or None when it has no
    AuthorizationPolicy and the mesh default is allow (nothing to check).

    Each policy rule gives one data-plane rule per (`from` entry, `to` entry) pair, named
    "<ns>/<policy>[<rule index>]"; absent `from`/`to` leave those fields out. The data plane
    evaluates deny rules first, then allows iff an allow rule matches, and falls back to
    `default` only when there is no allow rule: so an ALLOW policy without rules makes the
    default deny. (On a TCP listener, which has no path or method, the data plane lets no ALLOW
    rule that names one match and applies a DENY rule that names one to every connection.)"""
    policies = sorted(mesh.authz.get(service, []), key=lambda p: p[0])
    if not policies and mesh.authz_default != "deny":
        return None
    default: dp.AuthorizationAction = "deny" if mesh.authz_default == "deny" else "allow"
    rules: list[dp.AuthorizationRule] = []
    for name, spec in policies:
        if spec.action == "ALLOW" and not spec.rules:
            default = "deny"
        for index, rule in enumerate(spec.rules):
            sources = [f.source for f in rule.from_] if rule.from_ else [None]
            operations = [t.operation for t in rule.to] if rule.to else [None]
            for source in sources:
                for operation in operations:
                    r: dp.AuthorizationRule = {"name": f"{name}[{index}]", "action": _ACTIONS[spec.action]}
                    for part, fields in ((source, SOURCE_FIELDS), (operation, OPERATION_FIELDS)):
                        for f in fields:
                            if part is not None and (values := getattr(part, f)) is not None:
                                r[f] = list(values)
                    rules.append(r)
    return {"default": default, "rules": rules}


def compile_own(mesh: Mesh, sidecar: SidecarSpec, outbound: Outbound) -> tuple[Own, dp.DataPlaneConfig]:
    """The sidecar's own part and its config's tail (dns, admin, identity), for a caller that has
    its `Outbound` part serialised already (control/fanout.py splices the parts)."""
    compiler = _Compiler(mesh, sidecar)
    return compiler.own_part(), compiler.tail(outbound)


def compile_sidecar(mesh: Mesh, sidecar: SidecarSpec, outbound: Outbound | None = None) -> dp.DataPlaneConfig:
    """The data-plane config for `sidecar`, from `mesh` alone (and its `compile_outbound` part,
    when the caller has it already)."""
    return _Compiler(mesh, sidecar).compile(outbound)
