"""What telemetry adds to a sidecar's data-plane config: the ``telemetry``
section (who the proxy is, for metrics labels, spans and access logs, and how
it traces) and the listeners' ``access_log``, from the Telemetry resources
that reach its service (see ``kinds.telemetry`` for the precedence).

Functions of the compiler's inputs alone, called by the compiler (they import
nothing of it). The sidecar fills in what only it knows: without a
collector here, its own control plane's ``/v1/traces`` and a token file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshctl import dataplane_config as dp
from meshctl.control.kinds.telemetry import DEFAULT_SAMPLING_PERCENT, AccessLog, TelemetryView


@dataclass(frozen=True)
class Settings:
    """A service's telemetry settings, each from the narrowest Telemetry that sets it."""

    sample_percent: float = DEFAULT_SAMPLING_PERCENT
    #: None: the sidecar sends spans to its control plane.
    collector: str | None = None
    #: The roots an https `collector` chains to (set with it, by the same Telemetry).
    collector_ca_file: str | None = None
    #: None: no access logs.
    access_log: AccessLog | None = None


def _reach(view: TelemetryView) -> int:
    """How narrow a Telemetry is: 1 names services, 0 is about the whole mesh."""
    return 0 if view.targets is None else 1


def settings(telemetry: Iterable[TelemetryView], service: str) -> Settings:
    """The settings of `service` ("ns/name"): per field, the narrowest Telemetry that reaches it
    and sets the field; between equally narrow ones the older, then the first by namespace/name."""
    reaching = [t for t in telemetry if t.targets is None or service in t.targets]
    # Widest first, and within a reach the winner last: each later one overrides what it sets.
    ordered = sorted(sorted(reaching, key=lambda t: (t.created_at, t.key), reverse=True), key=_reach)
    sample, collector, ca_file, access_log = DEFAULT_SAMPLING_PERCENT, None, None, None
    for t in ordered:
        tracing = t.spec.tracing
        if tracing is not None and tracing.sampling_percent is not None:
            sample = tracing.sampling_percent
        if tracing is not None and tracing.collector is not None:
            collector, ca_file = tracing.collector, tracing.ca_file
        if t.spec.access_log is not None:
            access_log = t.spec.access_log
    if access_log is not None and access_log.disabled:
        access_log = None
    return Settings(sample, collector, ca_file, access_log)


def workload(service: str, address: str) -> str:
    """A sidecar's instance id, "<service>-<ip>:<inbound port>" (IPv6 in brackets; a gateway's port
    is 0): stable across its restarts, and unique, as the control plane keeps one sidecar per
    service, address and inbound port."""
    return f"{service}-{address}"


def telemetry(
    views: Iterable[TelemetryView], namespace: str, service: str, address: str
) -> tuple[dp.TelemetryConfig, dp.AccessLogConfig | None]:
    """The `telemetry` section of a sidecar of `service` whose inbound address (a gateway's:
    with port 0) is `address` ("ip:port"), and every listener's `access_log` (None: none)."""
    s = settings(views, f"{namespace}/{service}")
    tracing: dp.TracingConfig = {"sample_percent": s.sample_percent}
    if s.collector is not None:
        tracing["collector"] = s.collector
    if s.collector_ca_file is not None:
        tracing["ca_file"] = s.collector_ca_file
    section: dp.TelemetryConfig = {"service": service, "namespace": namespace, "workload": workload(service, address)}
    log: dp.AccessLogConfig | None = None
    if s.access_log is not None:
        log = {"path": s.access_log.path, "format": s.access_log.format}
    return section | {"tracing": tracing}, log


def with_access_log(listeners: list[dp.ListenerConfig], log: dp.AccessLogConfig | None) -> list[dp.ListenerConfig]:
    """`listeners`, each writing `log` when there is one (copies: the outbound ones are shared
    with sidecars of other services, whose settings may differ)."""
    if log is None:
        return listeners
    return [listener | {"access_log": log} for listener in listeners]
