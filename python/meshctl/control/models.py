"""Mesh resources as SQLModel families (Base / Create / Update / table /
Public). Every write bumps a mesh-wide revision (see ``crud``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label, as Kubernetes names are


def now() -> datetime:
    return datetime.now(UTC)


class ServicePort(BaseModel):
    name: str = PField(default="http", pattern=NAME)
    port: int = PField(ge=1, le=65535)
    protocol: Literal["http", "http2", "grpc", "tcp"] = "http"


# === Service ===


class ServiceBase(SQLModel):
    name: str = Field(max_length=63, schema_extra={"pattern": NAME})
    namespace: str = Field(default="default", max_length=63, schema_extra={"pattern": NAME})


class ServiceCreate(ServiceBase):
    ports: list[ServicePort] = PField(default_factory=list)


class ServiceUpdate(SQLModel):
    ports: list[ServicePort]
    #: The version the change is based on; a stale one is refused with 409.
    resource_version: int


class Service(ServiceBase, table=True):
    __table_args__ = (UniqueConstraint("namespace", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ports: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    resource_version: int = 1
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class ServicePublic(ServiceBase):
    ports: list[ServicePort]
    resource_version: int
    created_at: datetime
    updated_at: datetime


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


# === API tokens ===


class ApiToken(SQLModel, table=True):
    """Only a hash is stored; the token itself lives in a 0600 file or with its holder."""

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(index=True)  # admin | reader
    token_sha256: str = Field(unique=True)
    created_at: datetime = Field(default_factory=now)
