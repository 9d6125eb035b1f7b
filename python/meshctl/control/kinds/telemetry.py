"""Telemetry (in the spirit of Istio's Telemetry API): how much the sidecars of
some services trace, where their spans go, and whether they write access logs.

``targetRefs`` names the services it is about; without it, it is about every
service in the mesh. A service takes each setting (``tracing.samplingPercent``,
``tracing.collector``, ``accessLog``) from the narrowest Telemetry that sets
it: one naming the service beats a mesh-wide one; between two of the same
reach the older wins, then the namespace/name that sorts first (as the
Gateway API settles conflicting routes). So a mesh-wide Telemetry may set the
collector and a service's own only its sampling rate. Unset everywhere,
sampling is 1 % (Istio's default), spans go to the control plane's own trace
store, and access logs are off; ``accessLog: {disabled: true}`` turns off
what a wider Telemetry turned on.

A sidecar's access logs cover all of its listeners (inbound, outbound and a
gateway's), and the path is on the sidecar's host: the operator's
``--access-log`` flag overrides it there. Services named in ``targetRefs``
count as references: they cannot be deleted while a Telemetry names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, model_validator
from pydantic import Field as PField

from meshctl.control.kinds.base import Kind, Loc, Ref, spec_family
from meshctl.control.kinds.common import ServiceTarget, Spec, key

#: Istio's default sampling: a hundredth of new traces.
DEFAULT_SAMPLING_PERCENT = 1.0


def _collector(value: str) -> str:
    try:
        url = urlsplit(value)
        host = url.hostname
        url.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not host:
        raise ValueError("an OTLP/HTTP URL: http:// or https://, a host, and the path (e.g. /v1/traces)")
    if url.username is not None or url.password is not None:
        raise ValueError("credentials do not go in the URL")
    if url.fragment or any(c.isspace() for c in value):
        raise ValueError("a URL without a fragment or spaces")
    return value


def _log_path(value: str) -> str:
    if value != "-" and not value.startswith("/"):
        raise ValueError('an absolute file path on the sidecar\'s host, or "-" for stderr')
    if "\0" in value:
        raise ValueError("a path has no NUL character")
    return value


#: An OTLP/HTTP traces URL ("http://collector:4318/v1/traces").
CollectorUrl = Annotated[str, PField(min_length=1, max_length=2048), AfterValidator(_collector)]
LogPath = Annotated[str, PField(min_length=1, max_length=4096), AfterValidator(_log_path)]


class Tracing(Spec):
    """Spans from the sidecars: `samplingPercent` of new traces (0-100; 1 when no Telemetry
    sets it), sent to `collector` (the control plane's own trace store when none does)."""

    sampling_percent: float | None = PField(default=None, ge=0, le=100)
    collector: CollectorUrl | None = None
    #: The PEM roots an https collector's certificate chains to, a file on the sidecars' hosts:
    #: needed with an https collector (the data plane trusts no system store), refused otherwise.
    ca_file: LogPath | None = None

    @model_validator(mode="after")
    def _ca_with_https(self) -> Tracing:
        https = self.collector is not None and self.collector.startswith("https://")
        if https and self.ca_file is None:
            raise ValueError("an https:// collector needs caFile (the PEM roots its certificate chains to)")
        if self.ca_file is not None and not https:
            raise ValueError("caFile is only for an https:// collector")
        if self.ca_file == "-":
            raise ValueError("caFile: an absolute file path on the sidecar's host")
        return self


class AccessLog(Spec):
    """One line per request (per connection on tcp) on every listener of the sidecars: JSON
    objects or text lines, to a file on their host or to their stderr ("-")."""

    format: Literal["json", "text"] = "json"
    path: LogPath = "-"
    #: Off, though a wider Telemetry turns them on.
    disabled: bool = False


class TelemetrySpec(Spec):
    """What the sidecars of `targetRefs` (absent: every service) trace and log; at least one
    of `tracing` and `accessLog`."""

    target_refs: list[ServiceTarget] | None = PField(default=None, min_length=1, max_length=100)
    tracing: Tracing | None = None
    access_log: AccessLog | None = None

    @model_validator(mode="after")
    def _something(self) -> TelemetrySpec:
        if self.tracing is None and self.access_log is None:
            raise ValueError("a telemetry resource needs tracing or accessLog")
        return self


@dataclass(frozen=True)
class TelemetryView:
    """A stored Telemetry as the compiler reads it."""

    key: str
    created_at: datetime
    #: The services it is about ("ns/name"); None: every one.
    targets: frozenset[str] | None
    spec: TelemetrySpec


class TelemetryKind(Kind):
    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        return [
            Ref(["targetRefs", i], "Service", t.namespace or namespace, t.name)
            for i, t in enumerate(spec.target_refs or [])
        ]

    def problems(self, spec: Any) -> list[tuple[Loc, str]]:
        # Named twice, a service would be as narrow twice: say so rather than keep one silently.
        out: list[tuple[Loc, str]] = []
        seen: dict[tuple[str | None, str], int] = {}
        for i, target in enumerate(spec.target_refs or []):
            who = (target.namespace, target.name)
            if who in seen:
                out.append((["targetRefs", i, "name"], f"service {target.name} is already targetRefs[{seen[who]}]"))
            seen.setdefault(who, i)
        return out

    def load(self, rows: list[Any]) -> dict[str, Any]:
        views = []
        for row in rows:
            spec = self.parse(row)
            targets = (
                None
                if spec.target_refs is None
                else frozenset(f"{t.namespace or row.namespace}/{t.name}" for t in spec.target_refs)
            )
            views.append(TelemetryView(key(row), row.created_at, targets, spec))
        return {"telemetry": views}


KIND = TelemetryKind(
    "Telemetry",
    TelemetrySpec,
    spec_family("Telemetry", TelemetrySpec, module=__name__),
    refers_to=("Service",),
)
