"""Control-plane settings: flags and ``MESHCTL_*`` environment variables,
built lazily so that importing the package reads nothing."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshctl.control import limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHCTL_", extra="ignore")

    data_dir: Path = Path("~/.meshctl").expanduser()
    #: Any SQLAlchemy URL; an SQLite file in the data dir when unset.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 15010
    #: The SPIFFE trust domain: identities are spiffe://<trust_domain>/ns/<namespace>/sa/<service>.
    trust_domain: str = Field(default="cluster.local", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    #: How long an SVID lives unless the sidecar asks for less (one minute at the least).
    svid_ttl_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    #: What a sidecar does with a request that no AuthorizationPolicy decides: allow, or deny
    #: (then only what ALLOW policies allow gets through, mesh-wide).
    authz_default: Literal["allow", "deny"] = "allow"
    #: Egress from the sidecars' HTTP proxy and transparent listeners to a destination no Service
    #: or ExternalService claims: ALLOW_ANY lets it through, REGISTRY_ONLY refuses it (403 / closed).
    outbound_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    #: The trace store keeps a trace this long after its last span ended ...
    trace_retention_seconds: int = Field(default=86_400, ge=60)
    #: ... and at most this many spans (the traces of the oldest to arrive go first).
    trace_max_spans: int = Field(default=100_000, ge=1)
    #: The largest OTLP export request taken, compressed and decompressed (413 past it).
    otlp_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: The largest body of an /api/ request (413 past it, before it is read); see control.limits.
    max_request_bytes: int = Field(default=limits.MAX_REQUEST_BYTES, ge=64 * 1024)
    #: The most documents one apply takes (413 past it).
    apply_max_documents: int = Field(default=limits.MAX_DOCUMENTS, ge=1)
    #: How often the generation is read from the database besides the announcements of replicas
    #: on PostgreSQL (their fallback), and expired endpoints are looked for.
    generation_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    #: HTTPS even on a loopback address (elsewhere it is the default).
    tls: bool = False
    #: An operator's serving certificate chain (leaf first) and key, instead of one from our CA.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: More names (DNS or IP) for our serving certificate, beside the bind address and loopback.
    tls_sans: list[str] = Field(default_factory=list)
    #: Plain HTTP on an address other than loopback (tokens travel in clear; a warning).
    insecure_http: bool = False
    #: The file with the key-encryption key that seals the CA's keys in the database (see
    #: control/ca/sealing.py); every replica needs the same one. Default: ``<data-dir>/ca-kek``.
    ca_kek_file: Path | None = None

    @property
    def serves_tls(self) -> bool:
        """HTTPS unless bound to loopback (then on request) or plain HTTP is asked for."""
        from meshctl.trust import is_loopback

        if self.tls or self.tls_cert is not None:
            return True
        return not self.insecure_http and not is_loopback(self.host)

    @property
    def kek_path(self) -> Path:
        return self.ca_kek_file or self.data_dir / "ca-kek"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'mesh.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
