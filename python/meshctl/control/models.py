"""Mesh resources as SQLModel families (Base / Create / Update / table /
Public). Every write bumps a mesh-wide revision (see ``crud``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON, Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label, as Kubernetes names are


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


class ServiceBase(NamespacedName):
    pass


class ServiceCreate(ServiceBase):
    ports: list[ServicePort] = PField(default_factory=list)


class ServiceUpdate(SQLModel):
    ports: list[ServicePort]
    #: The version the change is based on; a stale one is refused with 409.
    resource_version: int


class Service(ServiceBase, Versioned, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ports: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ServicePublic(ServiceBase, VersionInfo):
    ports: list[ServicePort]


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


# === HTTPRoute (shaped like the Kubernetes Gateway API) ===


class Spec(BaseModel):
    """Route specs use the Gateway API's camelCase names (snake_case is accepted too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ServiceRef(Spec):
    name: str = PField(pattern=NAME)
    namespace: str | None = PField(default=None, pattern=NAME)


class PathMatch(Spec):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = PField(default="/", min_length=1)


class NameValue(Spec):
    name: str = PField(min_length=1)
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


class HeaderModifier(Spec):
    set: list[NameValue] = PField(default_factory=list)
    add: list[NameValue] = PField(default_factory=list)
    remove: list[str] = PField(default_factory=list)


class RouteFilter(Spec):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"]
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: dict[str, Any] | None = None
    url_rewrite: dict[str, Any] | None = None


class RouteRule(Spec):
    matches: list[RouteMatch] = PField(default_factory=lambda: [RouteMatch()])
    backend_refs: list[BackendRef] = PField(min_length=1)
    filters: list[RouteFilter] = PField(default_factory=list)


class HTTPRouteSpec(Spec):
    parent_refs: list[ServiceRef] = PField(min_length=1)
    rules: list[RouteRule] = PField(min_length=1)


class HTTPRouteBase(NamespacedName):
    pass


class HTTPRouteCreate(HTTPRouteBase):
    spec: HTTPRouteSpec


class HTTPRouteUpdate(SQLModel):
    spec: HTTPRouteSpec
    resource_version: int


class HTTPRoute(HTTPRouteBase, Versioned, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class HTTPRoutePublic(HTTPRouteBase, VersionInfo):
    spec: HTTPRouteSpec


# === Revision ===


class Revision(SQLModel, table=True):
    """One change to the mesh, with the whole resource set after it."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=now)
    action: str
    kind: str
    name: str
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class RevisionPublic(SQLModel):
    id: int
    created_at: datetime
    action: str
    kind: str
    name: str


class RevisionDetail(RevisionPublic):
    state: dict[str, Any]


class Change(SQLModel):
    kind: str
    name: str
    change: Literal["added", "removed", "changed"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


# === API tokens ===


class ApiToken(SQLModel, table=True):
    """Only a hash is stored; the token itself lives in a 0600 file or with its holder."""

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(index=True)  # admin | reader
    token_sha256: str = Field(unique=True)
    created_at: datetime = Field(default_factory=now)
