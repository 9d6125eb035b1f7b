"""TCPRoute: a Service's connections sent to weighted backends (TCP has
nothing to match on, so one rule)."""

from __future__ import annotations

from typing import Any

from pydantic import Field as PField

from meshctl.control.kinds.base import Kind, Ref, backend_references, parent_references, route_views, spec_family
from meshctl.control.kinds.common import BackendRef, ServiceRef, Spec


class TCPRouteRule(Spec):
    backend_refs: list[BackendRef] = PField(min_length=1)


class TCPRouteSpec(Spec):
    parent_refs: list[ServiceRef] = PField(min_length=1)
    #: TCP has nothing to match on, so a route has exactly one rule.
    rules: list[TCPRouteRule] = PField(min_length=1, max_length=1)


class TCPRouteKind(Kind):
    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        return [*parent_references(spec.parent_refs, namespace), *backend_references(spec.rules, namespace)]

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"tcp_routes": route_views(rows, self)}


KIND = TCPRouteKind(
    "TCPRoute", TCPRouteSpec, spec_family("TCPRoute", TCPRouteSpec, module=__name__), refers_to=("Service",)
)
