"""Prometheus: the control plane's own ``/metrics``, and the targets of the
whole mesh in the ``http_sd_configs`` format, so that one scrape stanza
(``meshctl prometheus-config``) finds every sidecar.

Both need a token that may read the mesh, and the read-only one is enough
(our rule: the API is behind tokens; metrics name services and addresses). A
join token is refused: a sidecar has no business reading the fleet. Prometheus
sends the token with ``authorization: {credentials_file: ...}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from meshctl.control.deps import MetricsDep, Reader, SessionDep
from meshctl.control.scrape_targets import TargetGroup, control_plane_target, mesh_targets

metrics_router = APIRouter(tags=["prometheus"])
router = APIRouter(prefix="/api/v1/prometheus", tags=["prometheus"])

_EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The Prometheus text format, or OpenMetrics when the Accept header asks for it",
        "content": {"text/plain": {}, "application/openmetrics-text": {}},
    }
}


@metrics_router.get("/metrics", response_class=Response, responses=_EXPOSITION)
def metrics(request: Request, metrics: MetricsDep, session: SessionDep, _: Reader) -> Response:
    """The control plane's metrics (names in control/metrics.py)."""
    metrics.refresh(session)
    body, content_type = metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.get("/targets", response_model=list[TargetGroup])
def targets(request: Request, session: SessionDep, _: Reader) -> list[TargetGroup]:
    """Every live sidecar and gateway with an admin port, and this control plane (at the address
    the caller reached it on), as http_sd target groups (see control/scrape_targets.py for the
    labels and the limit of loopback admin ports)."""
    groups = [control_plane_target(request.url.netloc, request.url.scheme), *mesh_targets(session)]
    return [TargetGroup.model_validate(g) for g in groups]
