"""Service: a named set of ports that sidecars join as. Unlike the other kinds
it is stored as columns (ports, mtls) rather than a spec, has its own REST API
(join tokens and endpoints hang off it), and takes its join tokens with it
when deleted. Its `healthCheck` (``kinds.healthcheck``, migration 0014) is what
its sidecars probe their app with."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, Session

from meshctl.control import notify
from meshctl.control.kinds.base import Family, Kind
from meshctl.control.kinds.common import BODY, NAME, Labelled, NamespacedName, Relabelled, Versioned, VersionInfo, key
from meshctl.control.kinds.healthcheck import AppHealthCheck
from meshctl.control.security import join_tokens


class ServicePort(BaseModel):
    model_config = BODY
    name: str = PField(default="http", pattern=NAME)
    port: int = PField(ge=1, le=65535)
    protocol: Literal["http", "http2", "grpc", "tcp"] = "http"


#: How a service's sidecars take inbound connections: STRICT only mTLS from mesh identities,
#: PERMISSIVE also plaintext (whose callers have no identity, so no source rule matches them).
MtlsMode = Literal["STRICT", "PERMISSIVE"]


class ServiceBase(NamespacedName):
    pass


class ServiceCreate(ServiceBase, Labelled):
    model_config = BODY
    ports: list[ServicePort] = PField(default_factory=list)
    mtls: MtlsMode = "STRICT"
    #: How its sidecars probe their app (None: they do not, unless their flags say so).
    health_check: AppHealthCheck | None = None


class ServiceUpdate(Relabelled):
    """Replaces the service's spec: an `mtls` left out is STRICT again, a `health_check` left out
    is none (labels and annotations left out stay as they are)."""

    model_config = BODY
    ports: list[ServicePort]
    mtls: MtlsMode = "STRICT"
    health_check: AppHealthCheck | None = None
    #: The version the change is based on; a stale one is refused with 409.
    resource_version: int


class Service(ServiceBase, Versioned, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ports: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mtls: str = Field(default="STRICT", max_length=16, sa_column_kwargs={"server_default": "STRICT"})
    #: `AppHealthCheck.stored()`, or None.
    health_check: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ServicePublic(ServiceBase, VersionInfo):
    ports: list[ServicePort]
    mtls: MtlsMode
    health_check: AppHealthCheck | None = None


class ServiceSpec(BaseModel):
    """A Service document's spec in `apply`; an unknown field is refused (422 naming it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    ports: list[ServicePort] = []
    mtls: MtlsMode = "STRICT"
    health_check: AppHealthCheck | None = PField(default=None, alias="healthCheck")


class ServiceKind(Kind):
    spec_api = False

    @property
    def noun(self) -> str:
        return "service"

    # A service without a health check is recorded as before 0014: no `healthCheck` key.

    def recorded(self, row: Any) -> Any:
        check = {"healthCheck": row.health_check} if row.health_check else {}
        return {"ports": row.ports, "mtls": row.mtls, **check}

    def value(self, spec: Any) -> Any:
        check = {"healthCheck": spec.health_check.stored()} if spec.health_check else {}
        return {"ports": [p.model_dump() for p in spec.ports], "mtls": spec.mtls, **check}

    def columns(self, value: Any) -> dict[str, Any]:
        return {"ports": value["ports"], "mtls": value.get("mtls", "STRICT"), "health_check": value.get("healthCheck")}

    def on_delete(self, session: Session, row: Any) -> None:
        tokens = join_tokens(session, service=key(row))
        for token in tokens:
            session.delete(token)  # its sidecars' tokens go with it
        if tokens:
            notify.announce(session, "tokens")  # and every replica forgets its checks of them

    def load(self, rows: list[Any]) -> dict[str, Any]:
        return {
            "services": {key(s): s.ports[0]["protocol"] if s.ports else "http" for s in rows},
            "mtls": {key(s): s.mtls for s in rows},
            "service_ports": {key(s): [(p["port"], p["protocol"]) for p in s.ports] for s in rows},
        }


KIND = ServiceKind(
    "Service",
    ServiceSpec,
    Family(create=ServiceCreate, update=ServiceUpdate, table=Service, public=ServicePublic),
)
