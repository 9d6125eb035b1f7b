"""Gateway (shaped like the Gateway API's): the mesh's edge. Its instances
(``meshctl gateway``) join as the Service of its name; HTTPRoutes attach to it,
or to one of its listeners by name (sectionName)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field as PField

from meshctl.control.kinds.base import Kind, Loc, Ref, spec_family
from meshctl.control.kinds.common import NAME, Hostname, Spec, key


class CertificateRef(Spec):
    """A certificate in the gateway process's --cert-dir: `<name>.pem` (the chain, leaf first)
    and `<name>.key`. Keys stay with the gateway; the control plane only knows the name."""

    name: str = PField(pattern=NAME, max_length=63)


class GatewayTLS(Spec):
    #: TLS ends at the gateway (the only mode).
    mode: Literal["Terminate"] = "Terminate"
    certificate_refs: list[CertificateRef] = PField(min_length=1, max_length=1)


class GatewayListener(Spec):
    name: str = PField(pattern=NAME, max_length=63)
    port: int = PField(ge=1, le=65535)
    protocol: Literal["HTTPS", "HTTP"]
    #: The Host (and for HTTPS the SNI name) served; any host when left out.
    hostname: Hostname | None = None
    #: HTTPS only, and required there.
    tls: GatewayTLS | None = None


class GatewaySpec(Spec):
    listeners: list[GatewayListener] = PField(min_length=1, max_length=64)

    def problems(self) -> list[tuple[list[str | int], str]]:
        """What is wrong across listeners, each with the field it is about (relative to the spec)."""
        out: list[tuple[list[str | int], str]] = []
        names: dict[str, int] = {}
        by_port: dict[int, list[int]] = {}
        for i, listener in enumerate(self.listeners):
            at: list[str | int] = ["listeners", i]
            if listener.name in names:
                out.append(
                    ([*at, "name"], f"listener name {listener.name!r} is used by listener {names[listener.name]}")
                )
            names.setdefault(listener.name, i)
            if listener.protocol == "HTTPS" and listener.tls is None:
                out.append(([*at, "tls"], "an HTTPS listener needs tls.certificateRefs"))
            if listener.protocol == "HTTP" and listener.tls is not None:
                out.append(([*at, "tls"], "an HTTP listener takes no tls (use protocol HTTPS)"))
            for j in by_port.get(listener.port, []):
                other = self.listeners[j]
                if other.protocol != listener.protocol:
                    msg = f"port {listener.port} is {other.protocol} (listener {other.name!r}): one protocol per port"
                    out.append(([*at, "protocol"], msg))
                elif other.hostname == listener.hostname:
                    what = f"hostname {listener.hostname!r}" if listener.hostname else "no hostname"
                    msg = f"listener {other.name!r} serves port {listener.port} with {what} already"
                    out.append(([*at, "hostname"], msg))
            by_port.setdefault(listener.port, []).append(i)
        return out


class GatewayKind(Kind):
    section_noun = "listener"
    sections_at = ("listeners",)

    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        why = "a Gateway's instances join as the Service of its name"
        return [Ref(["metadata", "name"], "Service", namespace, name, why=why)]

    def sections(self, value: Any) -> set[str]:
        return {item["name"] for item in value.get("listeners", [])}

    def problems(self, spec: Any) -> list[tuple[Loc, str]]:
        return spec.problems()  # type: ignore[no-any-return]

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"gateways": {key(g): self.parse(g) for g in rows}}


KIND = GatewayKind("Gateway", GatewaySpec, spec_family("Gateway", GatewaySpec, module=__name__), refers_to=("Service",))
