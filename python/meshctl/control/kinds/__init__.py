"""Resource kinds: every versioned kind users ``apply``, one module each.

This file is the registry: one entry per kind, in the order apply writes them
(services first, so that the others may name them). It imports nothing, so
the CLI reads kind names, aliases and API paths here without loading pydantic
or SQLModel. ``registry`` loads the kinds themselves (``base.Kind``: spec
models, table, references, how the compiler reads the rows), which crud, the
routers, apply, history and push iterate.

Adding a kind: its module here (defining ``KIND``), one entry below, and a
migration for its table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    #: As documents spell it: "HTTPRoute".
    name: str
    #: Its collection in the API: /api/v1/<plural>.
    plural: str
    #: What the CLI takes for it (besides the name in any case).
    aliases: tuple[str, ...]
    #: The module of this package that defines it.
    module: str


REGISTRY = (
    Entry("Service", "services", ("service", "services", "svc"), "service"),
    Entry("Gateway", "gateways", ("gateway", "gateways", "gw"), "gateway"),
    Entry("HTTPRoute", "httproutes", ("httproute", "httproutes"), "httproute"),
    Entry("TCPRoute", "tcproutes", ("tcproute", "tcproutes"), "tcproute"),
    Entry("TrafficPolicy", "trafficpolicies", ("trafficpolicy", "trafficpolicies"), "trafficpolicy"),
    Entry(
        "AuthorizationPolicy",
        "authorizationpolicies",
        ("authorizationpolicy", "authorizationpolicies", "authz"),
        "authorizationpolicy",
    ),
    Entry(
        "RateLimitPolicy",
        "ratelimitpolicies",
        ("ratelimitpolicy", "ratelimitpolicies", "ratelimit"),
        "ratelimitpolicy",
    ),
    Entry("Telemetry", "telemetries", ("telemetry", "telemetries"), "telemetry"),
    Entry(
        "ExternalService",
        "externalservices",
        ("externalservice", "externalservices", "se", "serviceentry"),
        "externalservice",
    ),
)
NAMES = tuple(e.name for e in REGISTRY)
BY_NAME = {e.name: e for e in REGISTRY}
