"""Mesh resources as SQLModel families (Base / Create / Update / table /
Public). Every write bumps a mesh-wide revision (see ``crud``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
from pydantic import Field as PField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON, Column, ForeignKey, Integer, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlmodel import Field, SQLModel

NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label, as Kubernetes names are
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # an RFC 9110 token
HEADER_VALUE = r"^[\x20-\x7e]*$"  # visible ASCII and spaces, as the data plane accepts
HOSTNAME = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
#: A Gateway API hostname: lower-case DNS labels, optionally behind one leading `*.` wildcard label.
GATEWAY_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
#: Headers a modifier may not touch: framing and connection management belong to the proxy.
RESERVED_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
}


def now() -> datetime:
    return datetime.now(UTC)


class ServicePort(BaseModel):
    name: str = PField(default="http", pattern=NAME)
    port: int = PField(ge=1, le=65535)
    protocol: Literal["http", "http2", "grpc", "tcp"] = "http"


class NamespacedName(SQLModel):
    """Every versioned resource is named within a namespace."""

    name: str = Field(max_length=63, schema_extra={"pattern": NAME})
    namespace: str = Field(default="default", max_length=63, schema_extra={"pattern": NAME})


class Versioned(SQLModel):
    """Columns of every stored, versioned resource."""

    resource_version: int = 1
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class VersionInfo(SQLModel):
    """What the API always reports of a stored resource."""

    resource_version: int
    created_at: datetime
    updated_at: datetime


# === Service ===


#: How a service's sidecars take inbound connections: STRICT only mTLS from mesh identities,
#: PERMISSIVE also plaintext (whose callers have no identity, so no source rule matches them).
MtlsMode = Literal["STRICT", "PERMISSIVE"]


class ServiceBase(NamespacedName):
    pass


class ServiceCreate(ServiceBase):
    ports: list[ServicePort] = PField(default_factory=list)
    mtls: MtlsMode = "STRICT"


class ServiceUpdate(SQLModel):
    """Replaces the service's spec: an `mtls` left out is STRICT again."""

    ports: list[ServicePort]
    mtls: MtlsMode = "STRICT"
    #: The version the change is based on; a stale one is refused with 409.
    resource_version: int


class Service(ServiceBase, Versioned, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ports: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mtls: str = Field(default="STRICT", max_length=16, sa_column_kwargs={"server_default": "STRICT"})


class ServicePublic(ServiceBase, VersionInfo):
    ports: list[ServicePort]
    mtls: MtlsMode


# === Endpoint: one running instance of a service ===


class EndpointRegister(SQLModel):
    """Registration and heartbeat in one: PUT it again before `ttl_seconds` run out."""

    address: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=1, le=10_000)
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_seconds: int = Field(default=30, ge=1, le=3600)


class Endpoint(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("service_id", "address", "port"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(sa_column=Column(Integer, ForeignKey("service.id", ondelete="CASCADE"), nullable=False))
    address: str
    port: int
    weight: int = 1
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime
    created_at: datetime = Field(default_factory=now)

    def refresh(self, data: EndpointRegister) -> None:
        self.weight, self.labels = data.weight, data.labels
        self.expires_at = now() + timedelta(seconds=data.ttl_seconds)


class EndpointPublic(SQLModel):
    id: int
    address: str
    port: int
    weight: int
    labels: dict[str, str]
    expires_at: datetime


# === Route and policy specs (shaped like the Kubernetes Gateway API) ===


class Spec(BaseModel):
    """Specs use the Gateway API's camelCase names (snake_case is accepted too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ServiceRef(Spec):
    name: str = PField(pattern=NAME)
    namespace: str | None = PField(default=None, pattern=NAME)


class PathMatch(Spec):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = PField(default="/", min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> PathMatch:
        if self.type == "RegularExpression":
            try:
                re.compile(self.value)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from e
        elif not self.value.startswith("/"):
            raise ValueError(f"{self.type} path '{self.value}' must start with '/'")
        return self


class NameValue(Spec):
    name: str = PField(pattern=HEADER_NAME)
    value: str


class RouteMatch(Spec):
    path: PathMatch | None = None
    headers: list[NameValue] = PField(default_factory=list)
    query_params: list[NameValue] = PField(default_factory=list)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = None


class BackendRef(ServiceRef):
    port: int | None = PField(default=None, ge=1, le=65535)
    weight: int = PField(default=1, ge=0, le=10_000)
    #: A label subset of the service's endpoints (e.g. {"version": "v2"}).
    subset: dict[str, str] = PField(default_factory=dict)


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
}


class RouteFilter(Spec):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"]
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None

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

    def filter(self, kind: str) -> Any:
        """The filter of that type, if the rule has one (the Gateway API allows one of each)."""
        return next((getattr(f, FILTER_FIELDS[kind]) for f in self.filters if f.type == kind), None)

    @model_validator(mode="after")
    def _consistent(self) -> HTTPRouteRule:
        kinds = [f.type for f in self.filters]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                raise ValueError(f"at most one {kind} filter per rule")
        redirect, rewrite = self.filter("RequestRedirect"), self.filter("URLRewrite")
        if redirect and rewrite:
            raise ValueError("RequestRedirect and URLRewrite cannot be used together")
        if redirect and self.backend_refs:
            raise ValueError("a rule with a RequestRedirect answers itself: give no backendRefs")
        if not redirect and not self.backend_refs:
            raise ValueError("a rule needs at least one backendRef (or a RequestRedirect filter)")
        path = (redirect or rewrite).path if (redirect or rewrite) else None
        prefix_only = any(m.path is None or m.path.type != "PathPrefix" for m in self.matches)
        if path and path.type == "ReplacePrefixMatch" and prefix_only:
            raise ValueError("ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
        return self


def _hostname(value: str) -> str:
    if re.fullmatch(r"[0-9.]+", value.removeprefix("*.")):
        raise ValueError("a hostname is a DNS name, not an IP address")
    return value


#: A host name as the Gateway API writes it (lower case; `*.example.com` covers every name under example.com).
Hostname = Annotated[str, PField(min_length=1, max_length=253, pattern=GATEWAY_HOSTNAME), AfterValidator(_hostname)]


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


class TCPRouteRule(Spec):
    backend_refs: list[BackendRef] = PField(min_length=1)


class TCPRouteSpec(Spec):
    parent_refs: list[ServiceRef] = PField(min_length=1)
    #: TCP has nothing to match on, so a route has exactly one rule.
    rules: list[TCPRouteRule] = PField(min_length=1, max_length=1)


class HashOn(Spec):
    header: str | None = PField(default=None, pattern=HEADER_NAME)
    source_ip: bool = False

    @model_validator(mode="after")
    def _one(self) -> HashOn:
        if (self.header is None) == (not self.source_ip):
            raise ValueError("hash on either a header or sourceIp")
        return self


class LoadBalancer(Spec):
    type: Literal["RoundRobin", "LeastRequest", "Random", "RingHash"] = "RoundRobin"
    hash_on: HashOn | None = None

    @model_validator(mode="after")
    def _hash_only_for_ring(self) -> LoadBalancer:
        if self.hash_on and self.type != "RingHash":
            raise ValueError("hashOn is only used with type RingHash")
        return self


class TrafficPolicySpec(Spec):
    """How callers reach one service (like Istio's DestinationRule)."""

    target_ref: ServiceRef
    load_balancer: LoadBalancer | None = None
    #: The protocol between sidecars; by default http2 for http2/grpc ports, http1 otherwise.
    protocol: Literal["http1", "http2"] | None = None
    connect_timeout_ms: int | None = PField(default=None, ge=1, le=60_000)


# === AuthorizationPolicy (shaped like Istio's): who may call a service, and what ===
#
# Patterns are exact strings in which '*' matches any run of characters ('/' included), so
# "/admin/*" covers "/admin/a/b" (not "/admin") and "spiffe://*/ns/ops/sa/*" any trust domain.


def _principal(value: str) -> str:
    if not value.startswith(("spiffe://", "*")):
        raise ValueError("a principal is a SPIFFE ID pattern: it starts with 'spiffe://' (or '*')")
    return value


def _path_pattern(value: str) -> str:
    if not value.startswith(("/", "*")):
        raise ValueError("a path pattern starts with '/' or '*'")
    if "?" in value or "#" in value:
        raise ValueError("paths are matched without the query: leave out '?' and '#'")
    return value


def _method(value: str) -> str:
    if value != value.upper():
        raise ValueError(f"methods match exactly and are upper-case: write {value.upper()!r}")
    if "*" in value:
        raise ValueError("methods match exactly: leave methods out to match any method")
    return value


#: Visible ASCII: what a SPIFFE ID or a request path carries.
_VISIBLE = r"^[\x21-\x7e]+$"
Principal = Annotated[str, PField(min_length=1, max_length=2048, pattern=_VISIBLE), AfterValidator(_principal)]
#: A namespace or service (the ns and sa of a SPIFFE ID): a DNS label, '*' allowed anywhere.
NamePattern = Annotated[str, PField(min_length=1, max_length=63, pattern=r"^[-a-z0-9*]+$")]
PathPattern = Annotated[str, PField(min_length=1, max_length=2048, pattern=_VISIBLE), AfterValidator(_path_pattern)]
#: An upper-case HTTP token (RFC 9110), matched exactly.
Method = Annotated[str, PField(min_length=1, max_length=32, pattern=HEADER_NAME), AfterValidator(_method)]


class AuthorizationSource(Spec):
    """Who calls: every list given must match (each is any-of). Only callers with a mesh
    identity (mTLS) can match; a plaintext caller in PERMISSIVE mode matches no source."""

    principals: list[Principal] | None = PField(default=None, min_length=1)
    namespaces: list[NamePattern] | None = PField(default=None, min_length=1)
    services: list[NamePattern] | None = PField(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> AuthorizationSource:
        if self.principals is None and self.namespaces is None and self.services is None:
            raise ValueError("a source needs principals, namespaces or services (leave out `from` to match any caller)")
        return self


class AuthorizationOperation(Spec):
    """What is called: every list given must match (each is any-of)."""

    paths: list[PathPattern] | None = PField(default=None, min_length=1)
    methods: list[Method] | None = PField(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> AuthorizationOperation:
        if self.paths is None and self.methods is None:
            raise ValueError("an operation needs paths or methods (leave out `to` to match any request)")
        return self


class AuthorizationFrom(Spec):
    source: AuthorizationSource


class AuthorizationTo(Spec):
    operation: AuthorizationOperation


class AuthorizationRule(Spec):
    """Matches a request that matches any `from` entry and any `to` entry; a rule without
    `from` matches any caller, one without `to` any request (so `{}` matches everything)."""

    from_: list[AuthorizationFrom] | None = PField(default=None, alias="from", min_length=1)
    to: list[AuthorizationTo] | None = PField(default=None, min_length=1)


class AuthorizationPolicySpec(Spec):
    """Who may call one service (like Istio's AuthorizationPolicy). DENY policies are
    evaluated first; once a service has an ALLOW policy, only what one allows gets through."""

    target_ref: ServiceRef
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    #: A policy matches a request matching any rule; an ALLOW policy without rules allows nothing.
    rules: list[AuthorizationRule] = PField(default_factory=list, max_length=1000)


# === Gateway (shaped like the Gateway API's): the mesh's edge ===


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


# === Spec resources: one table per kind, all shaped alike ===


class SpecRow(NamespacedName, Versioned):
    id: int | None = Field(default=None, primary_key=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class HTTPRouteCreate(NamespacedName):
    spec: HTTPRouteSpec


class HTTPRouteUpdate(SQLModel):
    spec: HTTPRouteSpec
    resource_version: int


class HTTPRoute(SpecRow, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)


class HTTPRoutePublic(NamespacedName, VersionInfo):
    spec: HTTPRouteSpec


class TCPRouteCreate(NamespacedName):
    spec: TCPRouteSpec


class TCPRouteUpdate(SQLModel):
    spec: TCPRouteSpec
    resource_version: int


class TCPRoute(SpecRow, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)


class TCPRoutePublic(NamespacedName, VersionInfo):
    spec: TCPRouteSpec


class TrafficPolicyCreate(NamespacedName):
    spec: TrafficPolicySpec


class TrafficPolicyUpdate(SQLModel):
    spec: TrafficPolicySpec
    resource_version: int


class TrafficPolicy(SpecRow, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)


class TrafficPolicyPublic(NamespacedName, VersionInfo):
    spec: TrafficPolicySpec


class AuthorizationPolicyCreate(NamespacedName):
    spec: AuthorizationPolicySpec


class AuthorizationPolicyUpdate(SQLModel):
    spec: AuthorizationPolicySpec
    resource_version: int


class AuthorizationPolicy(SpecRow, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)


class AuthorizationPolicyPublic(NamespacedName, VersionInfo):
    spec: AuthorizationPolicySpec


class GatewayCreate(NamespacedName):
    spec: GatewaySpec


class GatewayUpdate(SQLModel):
    spec: GatewaySpec
    resource_version: int


class Gateway(SpecRow, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)


class GatewayPublic(NamespacedName, VersionInfo):
    spec: GatewaySpec


# === apply: documents as users write them (kind, metadata, spec) ===

KIND = Literal["Service", "Gateway", "HTTPRoute", "TCPRoute", "TrafficPolicy", "AuthorizationPolicy"]


class Metadata(Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    name: str = PField(pattern=NAME, max_length=63)
    namespace: str = PField(default="default", pattern=NAME, max_length=63)
    #: When given, the write is refused (409) unless the stored resource is at this version.
    resource_version: int | None = None


class ApplyDocument(Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    kind: KIND
    metadata: Metadata
    spec: dict[str, Any] = PField(default_factory=dict)


class ApplyRequest(Spec):
    documents: list[ApplyDocument] = PField(max_length=100_000)
    #: Validate and report, write nothing.
    dry_run: bool = False


class ApplyResult(SQLModel):
    kind: str
    name: str
    action: Literal["created", "configured", "unchanged"]


# === Revision ===


class Revision(SQLModel, table=True):
    """One change to the mesh: what each touched resource was before and after.
    The state at any revision is the current state with later changes undone."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=now)
    action: str
    kind: str
    name: str
    #: [{"kind", "name" ("ns/name"), "before", "after"}]; a spec, or null when absent.
    changes: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)


class RevisionPublic(SQLModel):
    id: int
    created_at: datetime
    action: str
    kind: str
    name: str


class RevisionDetail(RevisionPublic):
    #: Every resource's spec at this revision, by kind and "namespace/name".
    state: dict[str, dict[str, Any]]


class Change(SQLModel):
    kind: str
    name: str
    change: Literal["added", "removed", "changed"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class MeshState(SQLModel, table=True):
    """One row: the generation that every config or endpoint-set change bumps.
    Sidecar snapshots carry it as their version."""

    id: int = Field(default=1, primary_key=True)
    generation: int = 0


# === Sidecars: runtime state, reported by the sidecars themselves ===


class SidecarRegister(SQLModel):
    """What a sidecar says about itself; PUT again to heartbeat (within `ttl_seconds`)."""

    namespace: str = Field(default="default", schema_extra={"pattern": NAME})
    service: str = Field(schema_extra={"pattern": NAME})
    #: Where other sidecars reach this one (its inbound listener); a gateway's listeners bind it.
    address: str = Field(min_length=1, max_length=253)
    #: An ingress gateway (`meshctl gateway`): it serves the Gateway of its service's name, has no
    #: inbound listener nor app, and is no endpoint of its service (nobody routes to it).
    gateway: bool = False
    #: Required, except for a gateway (which has none: 0).
    inbound_port: int = Field(default=0, ge=0, le=65535, schema_extra={"validate_default": True})
    app_port: int = Field(default=0, ge=0, le=65535, schema_extra={"validate_default": True})
    labels: dict[str, str] = Field(default_factory=dict)
    weight: int = Field(default=1, ge=1, le=10_000)
    #: Local outbound ports by upstream service ("name" or "namespace/name").
    upstreams: dict[str, int] = Field(default_factory=dict)
    #: A local port that routes to any mesh service by Host header.
    http_proxy_port: int | None = Field(default=None, ge=1, le=65535)
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    ttl_seconds: int = Field(default=30, ge=1, le=3600)
    #: When the SVID it serves with expires (None: it has none yet).
    svid_expires_at: datetime | None = None

    @field_validator("inbound_port", "app_port")
    @classmethod
    def _ports(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("gateway") and value:
            raise ValueError("a gateway has no inbound or app port: leave it out")
        if not info.data.get("gateway") and not value:
            raise ValueError("required (only a gateway has none)")
        return value


class Sidecar(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("service_id", "address", "inbound_port"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(sa_column=Column(Integer, ForeignKey("service.id", ondelete="CASCADE"), nullable=False))
    address: str
    inbound_port: int
    app_port: int
    upstreams: dict[str, int] = Field(default_factory=dict, sa_type=JSON)
    http_proxy_port: int | None = None
    admin_port: int | None = None
    gateway: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    last_seen: datetime = Field(default_factory=now)
    expires_at: datetime = Field(default_factory=now)
    acked_version: int | None = None
    nacked_version: int | None = None
    last_error: str | None = None
    svid_expires_at: datetime | None = None


class SidecarPublic(SQLModel):
    id: int
    namespace: str
    service: str
    address: str
    inbound_port: int
    app_port: int
    upstreams: dict[str, int]
    http_proxy_port: int | None
    admin_port: int | None
    gateway: bool
    last_seen: datetime
    live: bool
    acked_version: int | None
    nacked_version: int | None
    last_error: str | None
    #: When its SVID expires, as of its last heartbeat: one near its end has failed to renew.
    svid_expires_at: datetime | None
    #: The mesh generation now; a sidecar whose acked version is lower is behind.
    mesh_generation: int


class MeshStatus(SQLModel):
    """The mesh at a glance."""

    #: What sidecar snapshots are versioned by.
    generation: int
    #: The latest revision (0 before the first change).
    revision: int
    services: int
    sidecars: int
    live_sidecars: int
    #: Live sidecars whose ACKed version is the generation.
    in_sync: int


class SidecarReport(SQLModel):
    """ACK (no error) or NACK (with the data plane's error) of one snapshot version."""

    version: int = Field(ge=0)
    error: str | None = Field(default=None, max_length=8192)


class Snapshot(SQLModel):
    version: int
    config: dict[str, Any]


# === API tokens ===


class ApiToken(SQLModel, table=True):
    """Only a hash is stored; the token itself lives in a 0600 file or with its holder."""

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(index=True)  # admin | reader | join
    #: For join tokens: the one service ("namespace/name") its sidecars may join as.
    scope: str | None = None
    token_sha256: str = Field(unique=True)
    created_at: datetime = Field(default_factory=now)


class SvidRequest(SQLModel):
    """A sidecar's certificate request: its key never leaves it."""

    csr: str = Field(min_length=1, max_length=16_384, description="PEM certificate request")
    #: Shorter than the control plane's default if wanted; one minute at the least.
    ttl_seconds: int | None = Field(default=None, ge=60, le=30 * 86_400)


class Svid(SQLModel):
    spiffe_id: str
    #: The leaf, then the issuer and any intermediates above it (never the root), PEM.
    certificate_chain: str
    expires_at: datetime


class TrustBundle(SQLModel):
    trust_domain: str
    #: PEM roots; during a root rotation the old and the new.
    roots: list[str]
    #: Changes exactly when `roots` does ("sha256:...").
    digest: str


class CaRoot(SQLModel):
    """A root of the trust bundle: its fingerprint and names, never a key."""

    fingerprint: str
    subject: str
    not_after: datetime
    #: "current", or "next" during a rotation.
    role: Literal["current", "next"]
    #: Whether SVIDs are now issued under this root.
    issuing: bool


class CaIssuer(SQLModel):
    """The certificate that signs SVIDs now."""

    fingerprint: str
    subject: str
    not_after: datetime
    root_fingerprint: str


class RotationStatus(SQLModel):
    """A root rotation: `bundled` (the bundle holds both roots, the old issuer signs), then
    `activated` (the new issuer signs); finishing drops the old root and returns to `idle`."""

    trust_domain: str
    phase: Literal["idle", "bundled", "activated"]
    #: The trust bundle, in order.
    roots: list[CaRoot]
    issuer: CaIssuer
    bundle_digest: str
    #: The mesh generation that first carried this bundle to sidecars (null: before any rotation).
    bundle_generation: int | None
    #: Live sidecars that have not ACKed `bundle_generation` yet: activating waits for them.
    sidecars_pending: int
    started_at: datetime | None
    activated_at: datetime | None
    #: After this no SVID from the outgoing issuer is valid, and finishing is safe (null when idle).
    finish_safe_after: datetime | None


class JoinTokenInfo(SQLModel):
    id: int
    service: str
    created_at: datetime


class JoinToken(JoinTokenInfo):
    """Shown once, when issued; only its hash is kept."""

    token: str
