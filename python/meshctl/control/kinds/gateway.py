"""Gateway (shaped like the Gateway API's): the mesh's edge. Its instances
(``meshctl gateway``) join as the Service of its name; HTTPRoutes attach to it,
or to one of its listeners by name (sectionName)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field as PField
from pydantic import ValidationError

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

    def problems(self) -> list[tuple[Loc, str]]:
        """What is wrong across listeners, each with the field it is about (relative to the spec)."""
        return listener_problems([(i, item, ALL_FIELDS) for i, item in enumerate(self.listeners)])


ALL_FIELDS = frozenset(GatewayListener.model_fields)
#: Valid values standing in for a listener's fields that are not, so that the rest validate.
_STAND_INS: dict[str, Any] = {"name": "x", "port": 1, "protocol": "HTTP", "hostname": None, "tls": None}


def partial_listener(item: Any) -> tuple[GatewayListener, frozenset[str]] | None:
    """A listener as given, with the fields that do not validate replaced by stand-ins, and the
    names of the fields that do (None: not even that)."""
    try:
        return GatewayListener.model_validate(item), ALL_FIELDS
    except ValidationError as e:
        if not isinstance(item, dict):
            return None
        bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        kept = {k: v for k, v in item.items() if k not in bad}
        try:
            listener = GatewayListener.model_validate(kept | {k: _STAND_INS[k] for k in bad & _STAND_INS.keys()})
        except ValidationError:
            return None
        return listener, ALL_FIELDS - bad


def listener_problems(listeners: list[tuple[int, GatewayListener, frozenset[str]]]) -> list[tuple[Loc, str]]:
    """What is wrong across listeners (each with its index in the spec and the fields of it that
    are valid: `partial_listener`), each with the field it is about (relative to the spec). A check
    that needs a field a listener has wrong skips that listener: one bad field hides nothing else."""
    out: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    by_port: dict[int, list[tuple[GatewayListener, frozenset[str]]]] = {}
    for i, listener, valid in listeners:
        at: Loc = ["listeners", i]
        if "name" in valid:
            if listener.name in names:
                used = f"listener name {listener.name!r} is used by listeners[{names[listener.name]}]"
                out.append(([*at, "name"], used))
            names.setdefault(listener.name, i)
        if {"protocol", "tls"} <= valid:
            if listener.protocol == "HTTPS" and listener.tls is None:
                out.append(([*at, "tls"], "an HTTPS listener needs tls.certificateRefs"))
            if listener.protocol == "HTTP" and listener.tls is not None:
                out.append(([*at, "tls"], "an HTTP listener takes no tls (use protocol HTTPS)"))
        if not {"port", "protocol"} <= valid:
            continue
        for other, other_valid in by_port.get(listener.port, []):
            if other.protocol != listener.protocol:
                msg = f"port {listener.port} is {other.protocol} (listener {other.name!r}): one protocol per port"
                out.append(([*at, "protocol"], msg))
            elif "hostname" in valid and "hostname" in other_valid and other.hostname == listener.hostname:
                what = f"hostname {listener.hostname!r}" if listener.hostname else "no hostname"
                msg = f"listener {other.name!r} serves port {listener.port} with {what} already"
                out.append(([*at, "hostname"], msg))
        by_port.setdefault(listener.port, []).append((listener, valid))
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

    def partial_problems(self, value: Any) -> list[tuple[Loc, str]]:
        # A listener with a bad protocol (or any other bad field) still has its other problems found.
        listeners = value.get("listeners") if isinstance(value, dict) else None
        if not isinstance(listeners, list):
            return []
        seen = [(i, partial_listener(item)) for i, item in enumerate(listeners)]
        return listener_problems([(i, *view) for i, view in seen if view is not None])

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"gateways": {key(g): self.parse(g) for g in rows}}


KIND = GatewayKind("Gateway", GatewaySpec, spec_family("Gateway", GatewaySpec, module=__name__), refers_to=("Service",))
