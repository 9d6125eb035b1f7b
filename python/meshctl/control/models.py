"""What is not a resource kind (those are in ``kinds``): endpoints and
sidecars, runtime state that registers itself and expires; the revision log
and the mesh generation; API tokens; and the identity API's shapes.

An endpoint is a registration, not a versioned kind: it belongs to a Service
(deleted with it), is renewed by heartbeats and never recorded in revisions,
so it lives here beside the sidecars that register it (see ``instances``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, UniqueConstraint, text
from sqlalchemy import false as sa_false
from sqlmodel import Field, SQLModel

from meshctl.control.kinds.common import NAME, ZONE, now
from meshctl.control.kinds.healthcheck import AppHealthCheck, Health
from meshctl.control.stats.report import TelemetryReport

#: The largest integer every database's id and version columns hold (PostgreSQL's INTEGER, a signed
#: 32-bit one; SQLite's is 64-bit): ids and versions the API takes are bounded by it, so that a
#: larger one is a 422, not the driver's 500.
DB_INT_MAX = 2**31 - 1

#: An instance id: a hostname-like word of letters, digits, '.', '_', '-' and ':' (at most 128).
INSTANCE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

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
    #: Its app's health as its sidecar last reported it; only None (no check, or no sidecar:
    #: registered through this API) and "healthy" are in snapshots.
    health: Health | None = None


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
    #: Who made it: the name of the token used (None: before revision authors were kept).
    author: str | None = None
    #: Why, as the author said (`--message`).
    message: str | None = None


class RevisionPublic(SQLModel):
    id: int
    created_at: datetime
    action: str
    kind: str
    name: str
    #: Who made it (the token's name); None for revisions from before authors were kept.
    author: str | None = None
    #: Why, as the author said (`--message`), or None.
    message: str | None = None


class RevisionDetail(RevisionPublic):
    #: Every resource's spec at this revision, by kind and "namespace/name".
    state: dict[str, dict[str, Any]]


class Change(SQLModel):
    kind: str
    name: str
    change: Literal["added", "removed", "changed"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class RollbackResult(RevisionPublic):
    """A rollback's answer: the revision it recorded, or, when the mesh already was as asked
    (`recorded` false, no `changes`), the latest revision, unchanged."""

    recorded: bool
    #: What the rollback changed, each resource with its spec before and after.
    changes: list[Change]


class MeshState(SQLModel, table=True):
    """One row: the generation that every config or endpoint-set change bumps.
    Sidecar snapshots carry it as their version."""

    id: int = Field(default=1, primary_key=True)
    generation: int = 0


class Replica(SQLModel, table=True):
    """A control-plane process serving from this database, and when it last said so (PostgreSQL
    only: see control/replicas.py)."""

    id: str = Field(primary_key=True, max_length=32)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(default_factory=now)
    seen_at: datetime = Field(default_factory=now)


# === Sidecars: runtime state, reported by the sidecars themselves ===

#: At most this many endpoints in one sidecar's `endpoint_health` (it sends the first ones).
MAX_ENDPOINT_HEALTH = 256


class EndpointHealth(BaseModel):
    """Why the data plane takes an endpoint out of balancing (as its stats say)."""

    #: Outlier detection has it ejected ...
    ejected: bool = False
    #: ... for this much longer.
    ejected_for_ms: int | None = PField(default=None, ge=0, le=10**10)
    #: "failing": its active health checks fail; None when the cluster has none.
    health_check: Literal["passing", "failing"] | None = None


#: cluster -> endpoint (host:port) -> its health: the endpoints a sidecar's data plane has out.
EndpointHealthReport = dict[
    Annotated[str, PField(min_length=1, max_length=512)],
    dict[Annotated[str, PField(min_length=1, max_length=300)], EndpointHealth],
]


class TransparentPorts(SQLModel):
    """A sidecar in transparent mode (`meshctl run --transparent`): iptables redirects its app's
    outbound TCP to `outbound_port` (and its DNS queries to `dns_port`, when it answers them)."""

    model_config = {"extra": "forbid"}

    outbound_port: int = Field(ge=1, le=65535)
    dns_port: int | None = Field(default=None, ge=1, le=65535)


class SidecarRegister(SQLModel):
    """What a sidecar says about itself; PUT again to heartbeat (within `ttl_seconds`)."""

    namespace: str = Field(default="default", schema_extra={"pattern": NAME})
    service: str = Field(schema_extra={"pattern": NAME})
    #: Where other sidecars reach this one (its inbound listener); a gateway's listeners bind it.
    address: str = Field(min_length=1, max_length=253)
    #: Which instance this is, unique in its service and stable across its restarts: the key of its
    #: registration. A gateway sends one by default (`meshctl gateway --instance-id`), so that two
    #: instances bound to 0.0.0.0 on different hosts are two; without one (older members, sidecars
    #: not given `--instance-id`), the instance is "address:inbound_port".
    instance: str | None = Field(default=None, schema_extra={"pattern": INSTANCE})
    #: An ingress gateway (`meshctl gateway`): it serves the Gateway of its service's name, has no
    #: inbound listener nor app, and is no endpoint of its service (nobody routes to it).
    gateway: bool = False
    #: Required, except for a gateway (which has none: 0).
    inbound_port: int = Field(default=0, ge=0, le=65535, schema_extra={"validate_default": True})
    app_port: int = Field(default=0, ge=0, le=65535, schema_extra={"validate_default": True})
    labels: dict[str, str] = Field(default_factory=dict)
    #: Where it runs (e.g. us-east-1a): its endpoint's `zone` label, and the zone its calls prefer
    #: (locality). A `zone` label says the same.
    zone: str | None = Field(default=None, max_length=63, schema_extra={"pattern": ZONE, "validate_default": True})
    weight: int = Field(default=1, ge=1, le=10_000)
    #: Local outbound ports by upstream service ("name" or "namespace/name").
    upstreams: dict[str, int] = Field(default_factory=dict)
    #: A local port that routes to any mesh service by Host header.
    http_proxy_port: int | None = Field(default=None, ge=1, le=65535)
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    #: Transparent mode: it gets the `transparent-outbound` listener, a listener per VIP:port and,
    #: with a DNS port, the DNS answerer (None: not transparent).
    transparent: TransparentPorts | None = None
    ttl_seconds: int = Field(default=30, ge=1, le=3600)
    #: When the SVID it serves with expires (None: it has none yet).
    svid_expires_at: datetime | None = None
    #: The endpoints its data plane has out of balancing now, by cluster (only those: an empty
    #: mapping when all are healthy; None from a sidecar that does not report it). `explain` shows
    #: them for the calls of its service.
    endpoint_health: EndpointHealthReport | None = None
    #: Its data plane's counters per edge since it started (`DataPlane.telemetry()`, the busiest
    #: `MAX_EDGES`), for the live views; None from a sidecar whose data plane is not running yet, or
    #: one older than telemetry. Not stored: the stats store keeps deltas in memory.
    telemetry: TelemetryReport | None = None
    #: Its meshctl and data-plane versions (`meshctl.versions.agent()`); None from an older sidecar.
    version: str | None = Field(default=None, max_length=200)
    #: Its app's health, as its probe says (`sidecar.health`): only an instance whose health is
    #: None (no check configured) or "healthy" is an endpoint in snapshots.
    health: Health | None = None

    @field_validator("endpoint_health")
    @classmethod
    def _bounded(cls, value: EndpointHealthReport | None) -> EndpointHealthReport | None:
        if value is not None and (n := sum(len(e) for e in value.values())) > MAX_ENDPOINT_HEALTH:
            raise ValueError(f"{n} endpoints: at most {MAX_ENDPOINT_HEALTH}")
        return value

    @field_validator("inbound_port", "app_port")
    @classmethod
    def _ports(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("gateway") and value:
            raise ValueError("a gateway has no inbound or app port: leave it out")
        if not info.data.get("gateway") and not value:
            raise ValueError("required (only a gateway has none)")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None, info: ValidationInfo) -> str | None:
        label = (info.data.get("labels") or {}).get("zone")
        if label is not None and value is not None and label != value:
            raise ValueError(f"differs from the zone label ({label!r}): give one")
        if label is not None and not re.fullmatch(ZONE, label):
            raise ValueError(f"the zone label {label!r} is no zone: letters, digits, '-', '_' and '.'")
        return value or label

    def endpoint_labels(self) -> dict[str, str]:
        """Its endpoint's labels: `labels`, with the zone."""
        return {**self.labels, "zone": self.zone} if self.zone else self.labels

    def health_report(self) -> dict[str, Any] | None:
        """`endpoint_health` as stored (JSON), without the unset fields."""
        if self.endpoint_health is None:
            return None
        return {
            cluster: {address: h.model_dump(exclude_defaults=True) for address, h in endpoints.items()}
            for cluster, endpoints in self.endpoint_health.items()
        }


class Sidecar(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("service_id", "instance", name="uq_sidecar_instance"),
        # One sidecar per endpoint; gateways (no endpoint, port 0) may share an address.
        Index(
            "ix_sidecar_endpoint",
            "service_id",
            "address",
            "inbound_port",
            unique=True,
            sqlite_where=text("NOT gateway"),
            postgresql_where=text("NOT gateway"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(sa_column=Column(Integer, ForeignKey("service.id", ondelete="CASCADE"), nullable=False))
    #: `SidecarRegister.instance`, or "address:inbound_port" when it sent none (see `instances.instance_key`).
    instance: str = Field(max_length=128)
    address: str
    inbound_port: int
    app_port: int
    upstreams: dict[str, int] = Field(default_factory=dict, sa_type=JSON)
    http_proxy_port: int | None = None
    admin_port: int | None = None
    gateway: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    zone: str | None = Field(default=None, max_length=63)
    last_seen: datetime = Field(default_factory=now)
    expires_at: datetime = Field(default_factory=now)
    acked_version: int | None = None
    nacked_version: int | None = None
    last_error: str | None = None
    svid_expires_at: datetime | None = None
    #: As of its last heartbeat (see `SidecarRegister.endpoint_health`).
    endpoint_health: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: The join token it registered with (no foreign key: a revoked token's row is deleted,
    #: and its sidecars are then the ones whose token is gone).
    token_id: int | None = None
    #: The meshctl and data-plane versions it reported.
    version: str | None = None
    #: `TransparentPorts` as registered (None: not transparent).
    transparent: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: Its app's health as of its last heartbeat (see `SidecarRegister.health`).
    health: str | None = Field(default=None, max_length=16)


class SidecarPublic(SQLModel):
    id: int
    namespace: str
    service: str
    #: Its instance id (see `SidecarRegister.instance`).
    instance: str
    address: str
    inbound_port: int
    app_port: int
    upstreams: dict[str, int]
    http_proxy_port: int | None
    admin_port: int | None
    gateway: bool
    zone: str | None
    last_seen: datetime
    live: bool
    acked_version: int | None
    nacked_version: int | None
    last_error: str | None
    #: When its SVID expires, as of its last heartbeat: one near its end has failed to renew.
    svid_expires_at: datetime | None
    #: The endpoints its data plane has out of balancing, as of its last heartbeat (None: not reported).
    endpoint_health: dict[str, Any] | None = None
    #: The mesh generation now; a sidecar whose acked version is lower is behind.
    mesh_generation: int
    #: The token it registered with was revoked: it can no longer heartbeat nor renew its SVID
    #: (false when unknown: registered before tokens were recorded).
    token_revoked: bool = False
    #: The join token it registered with has expired: it keeps working (an expired join token
    #: serves the sidecars that joined with it), but no new instance can join with that token.
    token_expired: bool = False
    #: Its meshctl and data-plane versions as it reported them (None: not reported).
    version: str | None = None
    #: Its transparent-mode ports (None: not transparent).
    transparent: dict[str, Any] | None = None
    #: Its app's health as it last reported it (None: no check configured).
    health: Health | None = None
    #: Its service's health check: what it probes its app with, unless its flags say otherwise.
    health_check: AppHealthCheck | None = None


class VersionInfo(SQLModel):
    """What the control plane runs (``GET /api/v1/version``)."""

    meshctl: str
    #: The API's version: its paths' prefix.
    api: str
    #: Its data plane's (the `meshctl._core` extension's) version.
    data_plane: str
    python: str


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

    version: int = Field(ge=0, le=DB_INT_MAX)
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
    #: Shown in `token list` and as the author of the revisions it makes (None: unnamed).
    name: str | None = None
    #: After this it is refused (None: never expires).
    expires_at: datetime | None = None


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


class ServingCa(SQLModel):
    """How clients trust the API's HTTPS certificate (``GET /api/v1/ca/serving``, no token)."""

    #: Whether the control plane serves HTTPS.
    tls: bool
    #: The CA certificate (PEM) its serving certificate verifies against; null when it serves plain
    #: HTTP, or an operator's certificate whose chain names no CA (use the system store or --ca-file).
    ca_pem: str | None
    #: The pin for `--ca-hash`: "sha256:" + hex SHA-256 of the CA's DER SubjectPublicKeyInfo.
    ca_hash: str | None


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


#: A token's display name: the revision log's author (e.g. ci-deploy, alice@example.com).
TOKEN_NAME = r"^[A-Za-z0-9][-A-Za-z0-9_.@+:]{0,62}$"
#: A join token's service, "namespace/name".
SERVICE_KEY = NAME.removesuffix("$") + "/" + NAME.removeprefix("^")


class TokenCreate(SQLModel):
    """A new API token: a join token for one service's sidecars, or an admin or read-only one.
    Rotating one is creating its successor, switching to it, then revoking the old one."""

    model_config = {"extra": "forbid"}

    role: Literal["join", "admin", "reader"] = "join"
    #: Required for a join token ("namespace/name" of an existing service); refused for the others.
    service: str | None = Field(default=None, schema_extra={"pattern": SERVICE_KEY})
    name: str | None = Field(default=None, schema_extra={"pattern": TOKEN_NAME})
    expires_in_seconds: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * 86_400,
        description="Refused after this many seconds; 0: never; null or absent: the role's default "
        "(24 hours for a join token, never for admin and reader).",
    )


class TokenInfo(SQLModel):
    """A token as listed: never the token itself, nor its hash."""

    id: int
    name: str | None
    role: str
    #: A join token's service ("namespace/name"); null for admin and reader tokens.
    service: str | None
    created_at: datetime
    #: Null: never expires.
    expires_at: datetime | None
    #: Past `expires_at`: refused (its sidecars show `token_revoked`).
    expired: bool


class TokenIssued(TokenInfo):
    """Shown once, when created; only its hash is kept."""

    token: str


class JoinTokenInfo(SQLModel):
    id: int
    service: str
    created_at: datetime


class JoinToken(JoinTokenInfo):
    """Shown once, when issued; only its hash is kept."""

    token: str
