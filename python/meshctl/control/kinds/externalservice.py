"""ExternalService (like Istio's ServiceEntry): a destination outside the mesh
that the sidecars know by name, so that egress to it is routed, counted and
allowed or denied per calling service.

``hosts`` are exact names, or ``*.suffix`` wildcards (reachable only through a
sidecar's HTTP proxy port, by Host or CONNECT: a wildcard has no VIP nor DNS
record). ``ports`` say what is spoken on each port: ``HTTP`` is routed by the
sidecar (and, with ``tls``, the sidecar originates TLS to the server, checking
its certificate against ``tls.caCertificates`` and the host name or
``tls.sni``); ``HTTPS``, ``TLS`` and ``TCP`` pass through as bytes (CONNECT, or
a VIP in transparent mode). ``targetPort`` is the server's port (default: the
port). ``endpoints`` are static addresses for the hosts; without them each
host is resolved by DNS. ``allowedServices`` lists the services that may call
it ("name" in the ExternalService's namespace, or "namespace/name"); absent,
every service may. Callers not listed get a 403 (HTTP) or a closed
connection, under either mesh outbound policy.

Cross-field rules (422 naming the field): ``tls`` needs an HTTP port; at most
one HTTP port (the proxy routes HTTP by host alone); port numbers are unique;
a wildcard host takes no ``endpoints``, no ``tls`` and no ``targetPort`` (its
calls go where the client asked); an endpoint's ``port`` only with one port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cryptography import x509
from pydantic import AfterValidator
from pydantic import Field as PField

from meshctl.control.kinds.base import Kind, Loc, spec_family
from meshctl.control.kinds.common import HOSTNAME, NAME, Hostname, Spec

Port = Annotated[int, PField(ge=1, le=65535)]


def _pem(value: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError as e:
        raise ValueError(f"not PEM certificates: {e}") from None
    if not certificates:
        raise ValueError("no certificate in it")
    return value


#: PEM certificates (one or more), each parseable.
PemCertificates = Annotated[str, PField(min_length=1, max_length=256 * 1024), AfterValidator(_pem)]
#: Who may call: "name" (in the ExternalService's namespace) or "namespace/name".
_LABEL = NAME.removeprefix("^").removesuffix("$")
ServiceName = Annotated[str, PField(pattern=f"^{_LABEL}(/{_LABEL})?$")]


class ExternalPort(Spec):
    port: Port
    protocol: Literal["HTTP", "HTTPS", "TLS", "TCP"]
    #: The server's port; default: `port`.
    target_port: Port | None = None

    @property
    def target(self) -> int:
        return self.target_port or self.port


class ExternalTls(Spec):
    """TLS the sidecar originates on the HTTP port: the server's certificate must chain to
    `caCertificates` and name `sni` (default: the host called)."""

    ca_certificates: PemCertificates
    sni: str | None = PField(default=None, min_length=1, max_length=253, pattern=HOSTNAME)


class ExternalEndpoint(Spec):
    #: An IP address or a DNS name.
    address: str = PField(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$")
    #: Default: the port's targetPort (only with one port).
    port: Port | None = None


class ExternalServiceSpec(Spec):
    hosts: list[Hostname] = PField(min_length=1, max_length=100)
    ports: list[ExternalPort] = PField(min_length=1, max_length=20)
    tls: ExternalTls | None = None
    endpoints: list[ExternalEndpoint] | None = PField(default=None, min_length=1, max_length=100)
    allowed_services: list[ServiceName] | None = PField(default=None, max_length=1000)

    def problems(self) -> list[tuple[Loc, str]]:
        out: list[tuple[Loc, str]] = []
        http = [i for i, p in enumerate(self.ports) if p.protocol == "HTTP"]
        if self.tls is not None and not http:
            out.append((["tls"], "TLS origination is for an HTTP port: add one, or leave tls out"))
        out += [
            (["ports", i, "protocol"], "one HTTP port per ExternalService (HTTP is routed by host)") for i in http[1:]
        ]
        seen: set[int] = set()
        for i, p in enumerate(self.ports):
            if p.port in seen:
                out.append((["ports", i, "port"], f"port {p.port} is given twice"))
            seen.add(p.port)
        wildcard = [i for i, h in enumerate(self.hosts) if h.startswith("*.")]
        for i in wildcard:
            host = self.hosts[i]
            if self.endpoints is not None:
                out.append((["hosts", i], f"{host}: a wildcard host has no endpoints (calls go where they ask)"))
            if self.tls is not None:
                out.append((["hosts", i], f"{host}: TLS origination needs exact hosts"))
        if wildcard:
            out += [
                (["ports", i, "targetPort"], "a wildcard host's calls go to the port asked: no targetPort")
                for i, p in enumerate(self.ports)
                if p.target_port not in (None, p.port)
            ]
        if len(self.ports) > 1:
            out += [
                (["endpoints", i, "port"], "with several ports, endpoints take each port's targetPort")
                for i, e in enumerate(self.endpoints or [])
                if e.port is not None
            ]
        return out


@dataclass(frozen=True)
class ExternalView:
    """A stored ExternalService as the compiler reads it."""

    namespace: str
    name: str
    spec: ExternalServiceSpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def allows(self, service: str) -> bool:
        """Whether `service` ("ns/name") may call it."""
        allowed = self.spec.allowed_services
        return allowed is None or service in {a if "/" in a else f"{self.namespace}/{a}" for a in allowed}


class ExternalServiceKind(Kind):
    def problems(self, spec: Any) -> list[tuple[Loc, str]]:
        return spec.problems()  # type: ignore[no-any-return]

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"external_services": [ExternalView(r.namespace, r.name, self.parse(r)) for r in rows]}


KIND = ExternalServiceKind(
    "ExternalService",
    ExternalServiceSpec,
    spec_family("ExternalService", ExternalServiceSpec, module=__name__),
)
