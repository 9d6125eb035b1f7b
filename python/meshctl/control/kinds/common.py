"""What the kinds share: name and header patterns, the columns of every stored
resource, the spec base and references to services, and the documents
``apply`` takes (kind, metadata, spec)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic import Field as PField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from meshctl.control.kinds import NAMES
from meshctl.control.kinds.labels import Annotations, Labels

if TYPE_CHECKING:
    from sqlmodel._compat import SQLModelConfig

NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label, as Kubernetes names are
ZONE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"  # a Kubernetes label value (us-east-1a)
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # an RFC 9110 token
HEADER_VALUE = r"^[\x20-\x7e]*$"  # visible ASCII and spaces, as the data plane accepts
HOSTNAME = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
#: A Gateway API hostname: lower-case DNS labels, optionally behind one leading `*.` wildcard label.
GATEWAY_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"


def now() -> datetime:
    return datetime.now(UTC)


def key(row: Any) -> str:
    """A resource's "namespace/name"."""
    return f"{row.namespace}/{row.name}"


# === columns of every stored resource ===


#: Request bodies (create and update) refuse fields they do not know, as specs do: 422 naming them.
BODY: SQLModelConfig = {"extra": "forbid"}


class NamespacedName(SQLModel):
    """Every versioned resource is named within a namespace."""

    name: str = Field(max_length=63, schema_extra={"pattern": NAME})
    namespace: str = Field(default="default", max_length=63, schema_extra={"pattern": NAME})


def _metadata_column() -> Any:
    # sa_type rather than sa_column: each table needs a Column of its own.
    return Field(default_factory=dict, sa_type=JSON, nullable=False, sa_column_kwargs={"server_default": "{}"})


class Versioned(SQLModel):
    """Columns of every stored, versioned resource."""

    resource_version: int = 1
    #: See `kinds.labels` (migration 0013 added them).
    labels: dict[str, str] = _metadata_column()
    annotations: dict[str, str] = _metadata_column()
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class VersionInfo(SQLModel):
    """What the API always reports of a stored resource."""

    resource_version: int
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Labelled(SQLModel):
    """What a create body says besides the spec: the resource's labels and annotations."""

    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)


class Relabelled(SQLModel):
    """What an update body says besides the spec: labels and annotations replace the stored
    ones when given; left out (null), the stored ones stay."""

    labels: Labels | None = None
    annotations: Annotations | None = None


class SpecRow(NamespacedName, Versioned):
    """The columns of a kind stored as its spec (every kind but Service)."""

    id: int | None = Field(default=None, primary_key=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


# === spec building blocks (shaped like the Kubernetes Gateway API) ===


class Spec(BaseModel):
    """Specs use the Gateway API's camelCase names (snake_case is accepted too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ServiceRef(Spec):
    name: str = PField(pattern=NAME)
    namespace: str | None = PField(default=None, pattern=NAME)


class ServiceTarget(ServiceRef):
    """A Service a policy is about, with its kind written out as Linkerd's and Istio's
    references write theirs."""

    kind: Literal["Service"] = "Service"


class BackendRef(ServiceRef):
    port: int | None = PField(default=None, ge=1, le=65535)
    weight: int = PField(default=1, ge=0, le=10_000)
    #: A label subset of the service's endpoints (e.g. {"version": "v2"}).
    subset: dict[str, str] = PField(default_factory=dict)


def _hostname(value: str) -> str:
    if re.fullmatch(r"[0-9.]+", value.removeprefix("*.")):
        raise ValueError("a hostname is a DNS name, not an IP address")
    return value


#: A host name as the Gateway API writes it (lower case; `*.example.com` covers every name under example.com).
Hostname = Annotated[str, PField(min_length=1, max_length=253, pattern=GATEWAY_HOSTNAME), AfterValidator(_hostname)]


@dataclass(frozen=True)
class RouteView:
    """A stored route as the compiler reads it: its spec parsed."""

    namespace: str
    name: str
    created_at: datetime
    spec: Any  # HTTPRouteSpec | TCPRouteSpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# === apply: documents as users write them (kind, metadata, spec) ===

if TYPE_CHECKING:
    KindName = str
else:
    #: One of the registry's kinds (the OpenAPI document lists them).
    KindName = Literal[NAMES]


class Metadata(Spec):
    """A document's metadata. Anything else in it is refused (422 naming the field), as in specs."""

    name: str = PField(pattern=NAME, max_length=63)
    namespace: str = PField(default="default", pattern=NAME, max_length=63)
    #: When given, the write is refused (409) unless the stored resource is at this version.
    resource_version: int | None = None
    #: Kept with the resource and shown by `get` (`get -l` selects on them); a document
    #: without them applies none (the document is the whole resource, as its spec is).
    labels: Labels = PField(default_factory=dict)
    annotations: Annotations = PField(default_factory=dict)


class ApplyDocument(Spec):
    """One document as users write them; an unknown top-level field is refused (422 naming it)."""

    #: Taken and ignored (manifests written for Kubernetes tooling carry one).
    api_version: str | None = None
    kind: KindName
    metadata: Metadata
    spec: dict[str, Any] = PField(default_factory=dict)


class ApplyRequest(Spec):
    #: As many as fit in the API's request-size limit, up to `Settings.apply_max_documents` (413 past it).
    documents: list[ApplyDocument]
    #: Validate and report, write nothing.
    dry_run: bool = False


class ApplyResult(SQLModel):
    kind: str
    name: str
    action: Literal["created", "configured", "unchanged"]
    #: On a dry run, for a resource created or configured: its stored spec (None: there is none)
    #: and the spec apply would store, defaults filled in, as revisions record them (with a
    #: `metadata: {labels, annotations}` entry when it has any: see `kinds.labels`).
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
