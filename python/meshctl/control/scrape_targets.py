"""Where Prometheus scrapes the mesh: the target groups of its ``http_sd_configs``
format (``[{"targets": ["host:port"], "labels": {...}}]``), one per live sidecar
and gateway that registered an admin port, and one for the control plane.

Addresses. A sidecar's target is its registered address (where its peers
reach it) with its admin port. The admin listener binds 127.0.0.1 today, so
that target answers only a Prometheus on the sidecar's own host: one on
another host sees it down (``up == 0``), which is visible, where scraping
127.0.0.1 instead would silently read whatever listens on the Prometheus
host. A gateway registered on an unspecified address (0.0.0.0, ::) is
scraped on its host's loopback, the same limit.

Labels: ``mesh_namespace``, ``mesh_service``, ``mesh_workload`` (the
instance id the data plane puts in its own ``workload`` label),
``mesh_gateway`` ("true"/"false"), ``mesh_component`` ("sidecar", "gateway"
or "control-plane": ``meshctl prometheus-config`` scrapes the control plane
in a job of its own and drops its group here, so it is not scraped twice),
and ``__metrics_path__``.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, SQLModel

from meshctl.control import instances
from meshctl.control.compiler import EndpointView
from meshctl.control.kinds.common import now

METRICS_PATH = "/metrics"


class TargetGroup(SQLModel):
    """One group of Prometheus's http_sd format."""

    targets: list[str]
    labels: dict[str, str]


_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def workload(service: str, address: str, inbound_port: int) -> str:
    """The instance id the compiler gives the data plane as its `telemetry.workload`."""
    return f"{service}-{EndpointView(address, inbound_port).host_port}"


def mesh_targets(session: Session) -> list[dict[str, Any]]:
    """A target group per live sidecar and gateway with an admin port, in a stable order."""
    groups = []
    at = now()
    for sc, svc in instances.list_sidecars(session):
        if sc.admin_port is None or sc.expires_at <= at:
            continue
        groups.append(
            {
                "targets": [EndpointView(_UNSPECIFIED.get(sc.address, sc.address), sc.admin_port).host_port],
                "labels": {
                    "__metrics_path__": METRICS_PATH,
                    "mesh_component": "gateway" if sc.gateway else "sidecar",
                    "mesh_namespace": svc.namespace,
                    "mesh_service": svc.name,
                    "mesh_workload": workload(svc.name, sc.address, sc.inbound_port),
                    "mesh_gateway": "true" if sc.gateway else "false",
                },
            }
        )
    return groups


def control_plane_target(netloc: str, scheme: str) -> dict[str, Any]:
    """The control plane, at the address its caller reached it on."""
    labels = {"__metrics_path__": METRICS_PATH, "__scheme__": scheme, "mesh_component": "control-plane"}
    return {"targets": [netloc], "labels": labels}
