"""HTTPRoute (shaped like the Gateway API's): rules matching requests to a
Service's callers, or at a Gateway's listeners, and sending them to backends
(weighted, optionally a label subset) after filters; with timeouts, retries,
request mirrors and faults (``routeresilience``)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field as PField
from pydantic import ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from meshctl import _core
from meshctl.control.kinds.base import Kind, Ref, backend_references, parent_references, route_views, spec_family
from meshctl.control.kinds.common import (
    HEADER_NAME,
    HEADER_VALUE,
    HOSTNAME,
    NAME,
    BackendRef,
    Hostname,
    ServiceRef,
    Spec,
)
from meshctl.control.kinds.routeresilience import HTTPFault, HTTPRouteRetry, HTTPRouteTimeouts, RequestMirror

#: Headers a modifier may not touch: framing and connection management belong to the proxy,
#: whose own list this is (the data plane refuses the same ones).
RESERVED_HEADERS = frozenset(_core.PROXY_OWNED_HEADERS)


class PathMatch(Spec):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = PField(default="/", min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> PathMatch:
        if self.type == "RegularExpression":
            _regex(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f"{self.type} path '{self.value}' must start with '/'")
        return self


def _regex(value: str) -> str:
    # The data plane's engine decides (Python's `re` takes look-arounds the proxy refuses).
    if (error := _core.regex_error(value)) is not None:
        raise ValueError(f"invalid regular expression: {error}")
    return value


class NameValue(Spec):
    name: str = PField(pattern=HEADER_NAME)
    value: str


class HeaderMatch(Spec):
    """A header's value, matched exactly or by a regular expression anchored at both ends (the
    data plane's `header_regex`); with several values of the header, any one may match."""

    #: Exact when left out (and then left out of the stored spec, as it always was).
    type: Literal["Exact", "RegularExpression"] | None = None
    name: str = PField(pattern=HEADER_NAME)
    value: str

    @field_validator("value")
    @classmethod
    def _valid(cls, value: str, info: ValidationInfo) -> str:
        return _regex(value) if info.data.get("type") == "RegularExpression" else value


class QueryParamMatch(NameValue):
    """A query parameter's value, matched exactly (the data plane has no query regex)."""

    #: Exact when left out.
    type: Literal["Exact"] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        if value == "RegularExpression":
            raise ValueError("RegularExpression query parameter matches are not supported: use Exact")
        return value


class RouteMatch(Spec):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = PField(default_factory=list)
    query_params: list[QueryParamMatch] = PField(default_factory=list)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = None


class HeaderValue(NameValue):
    value: str = PField(pattern=HEADER_VALUE, max_length=8192)


class HeaderModifier(Spec):
    set: list[HeaderValue] = PField(default_factory=list)
    add: list[HeaderValue] = PField(default_factory=list)
    remove: list[str] = PField(default_factory=list)

    @model_validator(mode="after")
    def _allowed(self) -> HeaderModifier:
        for what, names in (
            ("set", [h.name for h in self.set]),
            ("add", [h.name for h in self.add]),
            ("remove", self.remove),
        ):
            lower = [n.lower() for n in names]
            if bad := sorted(RESERVED_HEADERS.intersection(lower)):
                raise ValueError(f"{what}: {', '.join(bad)} cannot be modified (use URLRewrite hostname for host)")
            if len(set(lower)) != len(lower):
                raise ValueError(f"{what}: a header is named twice")
            if not all(re.match(HEADER_NAME, n) for n in names):
                raise ValueError(f"{what}: not a valid header name")
        return self


class PathModifier(Spec):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = PField(default=None, pattern=r"^/")
    replace_prefix_match: str | None = PField(default=None, pattern=r"^/")

    @model_validator(mode="after")
    def _one(self) -> PathModifier:
        wanted = "replace_full_path" if self.type == "ReplaceFullPath" else "replace_prefix_match"
        if getattr(self, wanted) is None:
            raise ValueError(f"type {self.type} needs {to_camel(wanted)}")
        return self


class RequestRedirect(Spec):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = PField(default=None, max_length=253, pattern=HOSTNAME)
    port: int | None = PField(default=None, ge=1, le=65535)
    path: PathModifier | None = None
    status_code: Literal[301, 302, 303, 307, 308] = 302

    @model_validator(mode="after")
    def _goes_somewhere(self) -> RequestRedirect:
        if (self.scheme, self.hostname, self.port, self.path) == (None, None, None, None):
            raise ValueError("a redirect must change the scheme, hostname, port or path (else it loops)")
        return self


class URLRewrite(Spec):
    hostname: str | None = PField(default=None, max_length=253, pattern=HOSTNAME)
    path: PathModifier | None = None


FILTER_FIELDS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "RequestMirror": "request_mirror",
}
#: The filters a rule may have several of (the Gateway API allows one of each other type).
REPEATABLE = frozenset({"RequestMirror"})


class RouteFilter(Spec):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror"]
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> RouteFilter:
        wanted = FILTER_FIELDS[self.type]
        given = [f for f in FILTER_FIELDS.values() if getattr(self, f) is not None]
        if given != [wanted]:
            raise ValueError(f"a {self.type} filter takes exactly its {to_camel(wanted)} field")
        return self


class HTTPRouteRule(Spec):
    matches: list[RouteMatch] = PField(default_factory=lambda: [RouteMatch()])
    backend_refs: list[BackendRef] = PField(default_factory=list)
    filters: list[RouteFilter] = PField(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    #: meshctl's extension (Istio's shape): the Gateway API has no fault injection.
    fault: HTTPFault | None = None
    #: meshctl's extension: a request body over this many bytes gets 413 from the sidecar or
    #: gateway (by Content-Length before anything is forwarded, or while it streams).
    max_request_bytes: int | None = PField(default=None, ge=0)

    def filter(self, kind: str) -> Any:
        """The filter of that type, if the rule has one (the Gateway API allows one of each)."""
        return next((getattr(f, FILTER_FIELDS[kind]) for f in self.filters if f.type == kind), None)

    @property
    def mirrors(self) -> list[tuple[int, RequestMirror]]:
        """(filter index, filter) of each RequestMirror filter, in order."""
        return [(i, f.request_mirror) for i, f in enumerate(self.filters) if f.request_mirror is not None]

    @field_validator("timeouts", "retry", "fault", "max_request_bytes")
    @classmethod
    def _forwarding(cls, value: Any, info: ValidationInfo) -> Any:
        # The data plane refuses these on a redirect too: such a rule forwards nothing.
        if value is not None and any(f.type == "RequestRedirect" for f in info.data.get("filters", [])):
            raise ValueError("not with a RequestRedirect filter: the rule answers by itself and forwards nothing")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HTTPRouteRule:
        kinds = [f.type for f in self.filters]
        for kind in set(kinds) - REPEATABLE:
            if kinds.count(kind) > 1:
                raise ValueError(f"at most one {kind} filter per rule")
        redirect, rewrite = self.filter("RequestRedirect"), self.filter("URLRewrite")
        if redirect and rewrite:
            raise ValueError("RequestRedirect and URLRewrite cannot be used together")
        if redirect and self.mirrors:
            raise ValueError("RequestMirror and RequestRedirect cannot be used together: nothing is forwarded")
        if redirect and self.backend_refs:
            raise ValueError("a rule with a RequestRedirect answers itself: give no backendRefs")
        if not redirect and not self.backend_refs:
            raise ValueError("a rule needs at least one backendRef (or a RequestRedirect filter)")
        path = (redirect or rewrite).path if (redirect or rewrite) else None
        prefix_only = any(m.path is None or m.path.type != "PathPrefix" for m in self.matches)
        if path and path.type == "ReplacePrefixMatch" and prefix_only:
            raise ValueError("ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
        return self


class ParentRef(ServiceRef):
    """What an HTTPRoute attaches to: a Service (its callers' sidecars use the rules) or a
    Gateway (its listeners serve them at the edge)."""

    #: Service when left out.
    kind: Literal["Service", "Gateway"] | None = None
    #: A listener of the Gateway (by name); all of its listeners when left out.
    section_name: str | None = PField(default=None, pattern=NAME, max_length=63)

    @model_validator(mode="after")
    def _section_for_gateways(self) -> ParentRef:
        if self.section_name is not None and self.kind != "Gateway":
            raise ValueError("sectionName names a Gateway listener: only for kind Gateway")
        return self

    @property
    def is_gateway(self) -> bool:
        return self.kind == "Gateway"


class HTTPRouteSpec(Spec):
    parent_refs: list[ParentRef] = PField(min_length=1)
    #: The Host names the route serves on a Gateway (intersected with each listener's hostname);
    #: ignored for Service parents, whose callers name the service.
    hostnames: list[Hostname] | None = PField(default=None, max_length=16)
    rules: list[HTTPRouteRule] = PField(min_length=1)


# === the kind ===


def mirror_references(rules: list[HTTPRouteRule], namespace: str) -> list[Ref]:
    """The services RequestMirror filters copy requests to."""
    return [
        Ref(["rules", r, "filters", f, "requestMirror", "backendRef"], "Service", to.namespace or namespace, to.name)
        for r, rule in enumerate(rules)
        for f, mirror in rule.mirrors
        for to in [mirror.backend_ref]
    ]


class HTTPRouteKind(Kind):
    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        # Services first (parents, then backends), then Gateways: the order errors are reported in.
        return [
            *parent_references(spec.parent_refs, namespace),
            *backend_references(spec.rules, namespace),
            *mirror_references(spec.rules, namespace),
            *(
                Ref(["parentRefs", i], "Gateway", p.namespace or namespace, p.name, section=p.section_name)
                for i, p in enumerate(spec.parent_refs)
                if p.is_gateway
            ),
        ]

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {"http_routes": route_views(rows, self)}


KIND = HTTPRouteKind(
    "HTTPRoute",
    HTTPRouteSpec,
    spec_family("HTTPRoute", HTTPRouteSpec, module=__name__),
    refers_to=("Service", "Gateway"),
)
