"""The compiler's egress part: what a sidecar does with calls that leave the
mesh (ExternalServices and the mesh outbound policy), and, for a sidecar
registered ``transparent``, the listeners an iptables redirect reaches.

Egress goes through the sidecar three ways:
- its HTTP proxy port by Host (or absolute-form requests, ``curl -x``): a route
  per host of each ExternalService's HTTP port, to a cluster that originates
  TLS when the ExternalService has ``tls``;
- CONNECT on the same port: a ``connect`` entry per host and HTTPS/TLS/TCP
  port, tunnelled to the ExternalService's TCP cluster;
- transparently: the ``transparent-outbound`` listener hands each connection
  to the unbound listener of its original destination (a service's or an
  ExternalService host's VIP and port); the DNS answerer gives out the VIPs.
Anything else follows the mesh outbound policy (``egress.policy``).

Clusters are ``external/<ns>/<name>/<port>``, with ``/<host>`` after it when
the ExternalService has several exact hosts (each its own DNS name and TLS
server name). A wildcard host has no cluster: its calls go where they ask
(an original-destination cluster for HTTP, the CONNECT target itself).

A caller outside ``allowedServices`` gets ``deny`` routes (403) for its hosts
and ``deny`` VIP listeners (closed; 403 on an HTTP port), so the ExternalService
stays closed to it under ALLOW_ANY too; its CONNECT gets no entry, so only
REGISTRY_ONLY refuses that (the data plane has no denying CONNECT entry).
When two ExternalServices name one host (and port), the first in namespace
and name order decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshctl import dataplane_config as dp
from meshctl.control.kinds.externalservice import ExternalPort, ExternalView
from meshctl.control.vips import allocate

TRANSPARENT_LISTENER = "transparent-outbound"
_POLICIES: dict[str, dp.EgressPolicy] = {"ALLOW_ANY": "allow_any", "REGISTRY_ONLY": "registry_only"}


@dataclass(frozen=True)
class TransparentSpec:
    """A sidecar's transparent-mode ports, as registered."""

    outbound_port: int
    dns_port: int | None = None


def transparent_ports(stored: Mapping[str, Any] | None) -> TransparentSpec | None:
    """The stored registration field (`models.TransparentPorts` as JSON) for the compiler."""
    if not stored:
        return None
    return TransparentSpec(int(stored["outbound_port"]), stored.get("dns_port"))


def is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def vips(services: Iterable[str], externals: Iterable[ExternalView]) -> dict[str, str]:
    """Every service's ("ns/name") and exact external host's VIP (see `meshctl.control.vips`)."""
    hosts = (h for e in externals for h in e.spec.hosts if not is_wildcard(h))
    return allocate([*services, *hosts])


def dns_names(service: str, namespace: str) -> list[str]:
    """The names `service` ("ns/name") goes by for a caller in `namespace`."""
    ns, name = service.split("/", 1)
    return [*([name] if ns == namespace else []), f"{name}.{ns}", f"{name}.{ns}.svc"]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Egress:
    """The egress part of one sidecar's config: `caller` ("ns/name") is its service; the
    clusters it needs are added to `clusters`."""

    def __init__(self, externals: list[ExternalView], policy: str, caller: str, clusters: dict[str, dp.ClusterConfig]):
        self.externals, self.caller, self.clusters = externals, caller, clusters
        self.policy = _POLICIES[policy]

    def cluster(self, ext: ExternalView, port: ExternalPort, host: str) -> str:
        """The cluster calls to `host` on `port` go to (an exact host, or a wildcard's
        original-destination cluster for HTTP)."""
        spec, http = ext.spec, port.protocol == "HTTP"
        exact = [h for h in spec.hosts if not is_wildcard(h)]
        name = f"external/{ext.key}/{port.port}"
        if is_wildcard(host):
            name += "/original-destination"
        elif len(exact) > 1:
            name += f"/{host}"
        if name in self.clusters:
            return name
        c: dp.ClusterConfig = {"name": name}
        if is_wildcard(host):
            c["original_destination"] = True
        elif spec.endpoints is not None:
            c["endpoints"] = [{"address": _address(e.address, e.port or port.target)} for e in spec.endpoints]
        else:
            c["endpoints"] = [{"address": _address(host, port.target)}]
        if http:
            c["protocol"] = "http1"
            if spec.tls is not None:
                c["tls"] = {"server_name": spec.tls.sni or host, "ca": spec.tls.ca_certificates}
        c["service"] = ext.key
        self.clusters[name] = c
        return name

    def _http_port(self, ext: ExternalView) -> ExternalPort | None:
        return next((p for p in ext.spec.ports if p.protocol == "HTTP"), None)

    def _route(self, ext: ExternalView, port: ExternalPort, host: str, *, match: bool) -> dp.RouteConfig:
        """A route for calls to `host` on the HTTP `port` (`match`: by Host, on a shared listener)."""
        r: dp.RouteConfig = {"name": f"external/{ext.key}/{host}"}
        if match:
            r["match"] = {"host": host}
        if ext.allows(self.caller):
            r["backends"] = [{"cluster": self.cluster(ext, port, host)}]
        else:
            r["deny"] = True
        return r

    # === the HTTP proxy port ===

    def proxy_routes(self) -> list[dp.RouteConfig]:
        """One route per host of each ExternalService's HTTP port: exact hosts, then wildcards
        (the longer suffix first)."""
        routes: list[tuple[tuple[int, int], dp.RouteConfig]] = []
        for ext in self.externals:
            if (port := self._http_port(ext)) is not None:
                routes += [((is_wildcard(h), -len(h)), self._route(ext, port, h, match=True)) for h in ext.spec.hosts]
        return [r for _, r in sorted(routes, key=lambda x: x[0])]

    def proxy_egress(self) -> dp.EgressConfig:
        """The policy, and a CONNECT entry per host and HTTPS/TLS/TCP port of the ExternalServices:
        to their endpoints for the ones the caller may reach, refused (`deny`, whatever the
        policy) for the others."""
        connect: list[dp.ConnectRule] = []
        for ext in self.externals:
            allowed = ext.allows(self.caller)
            for port in ext.spec.ports:
                if port.protocol == "HTTP":
                    continue
                for host in ext.spec.hosts:
                    rule: dp.ConnectRule = {"host": host, "port": port.port}
                    if not allowed:
                        rule["deny"] = True
                    elif not is_wildcard(host):
                        rule["cluster"] = self.cluster(ext, port, host)
                    connect.append(rule)
        out: dp.EgressConfig = {"policy": self.policy}
        if connect:
            out["connect"] = connect
        return out

    # === transparent mode ===

    def transparent_listener(self, port: int) -> dp.ListenerConfig:
        return {
            "name": TRANSPARENT_LISTENER,
            "address": f"127.0.0.1:{port}",
            "protocol": "transparent",
            "direction": "outbound",
            "egress": {"policy": self.policy},
        }

    def vip_listeners(self, addresses: Mapping[str, str]) -> list[dp.ListenerConfig]:
        """One unbound listener per exact host and port of the ExternalServices (at its VIP in
        `addresses`): to its cluster (TLS origination on an HTTP port with tls), or denied."""
        out: list[dp.ListenerConfig] = []
        seen: set[tuple[str, int]] = set()
        for ext in self.externals:
            for host in ext.spec.hosts:
                for port in ext.spec.ports:
                    if is_wildcard(host) or (host, port.port) in seen:
                        continue
                    seen.add((host, port.port))
                    listener: dp.ListenerConfig = {
                        "name": f"vip/{host}/{port.port}",
                        "address": f"{addresses[host]}:{port.port}",
                        "bind": False,
                        "direction": "outbound",
                    }
                    if port.protocol == "HTTP":
                        listener |= {"protocol": "http", "routes": [self._route(ext, port, host, match=False)]}
                    elif ext.allows(self.caller):
                        listener |= {"protocol": "tcp", "cluster": self.cluster(ext, port, host)}
                    else:
                        listener |= {"protocol": "tcp", "deny": True}
                    out.append(listener)
        return out

    def dns(self, port: int, services: Iterable[str], namespace: str, addresses: Mapping[str, str]) -> dp.DnsConfig:
        """The DNS answerer: each service's names (`dns_names`) and each exact external host,
        with its VIP (a service's name wins over an external host spelled the same)."""
        records: dict[str, list[str]] = {}
        for service in sorted(services):
            for name in dns_names(service, namespace):
                records.setdefault(name, [addresses[service]])
        for ext in self.externals:
            for host in ext.spec.hosts:
                if not is_wildcard(host):
                    records.setdefault(host, [addresses[host]])
        return {"address": f"127.0.0.1:{port}", "records": records}
