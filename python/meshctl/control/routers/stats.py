"""Live views, from the sidecars' heartbeats (see ``meshctl.control.stats``):
golden metrics per service, route or edge over a window, a service's series
for charts, and the mesh's edges. The read-only token is enough."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import Session

from meshctl.control import crud
from meshctl.control.deps import Reader, SessionDep, StatsDep
from meshctl.control.errors import Invalid
from meshctl.control.kinds.common import NAME, key
from meshctl.control.kinds.service import Service
from meshctl.control.routers.common import NO_SERVICE
from meshctl.control.stats import views
from meshctl.control.stats.store import BIN_SECONDS, RETENTION_SECONDS
from meshctl.control.stats.views import Edges, Series, StatKind, StatRow, Stats

router = APIRouter(prefix="/api/v1", tags=["stats"])

_WINDOW = f"Seconds back from now ({BIN_SECONDS} to {RETENTION_SECONDS}; counted in {BIN_SECONDS} s bins)."
Window = Annotated[int, Query(ge=BIN_SECONDS, le=RETENTION_SECONDS, description=_WINDOW)]


def _known(session: Session, namespace: str, name: str) -> str:
    """ "namespace/name" of the service, or a 404 naming it."""
    if crud.get(session, Service, namespace=namespace, name=name) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"service {namespace}/{name} not found")
    return f"{namespace}/{name}"


def _in(namespace: str | None, *services: str | None) -> bool:
    return namespace is None or any(s is not None and s.startswith(f"{namespace}/") for s in services)


@router.get("/stats", response_model=Stats, responses=NO_SERVICE)
def stats(
    session: SessionDep,
    store: StatsDep,
    _: Reader,
    kind: StatKind = "service",
    window: Window = 60,
    namespace: Annotated[str | None, Query(pattern=NAME, description="Only this namespace.")] = None,
    name: Annotated[
        str | None,
        Query(
            pattern=NAME,
            description="Only this service (in `namespace`, default `default`): its numbers, "
            "the routes of calls to it, or the edges from and to it.",
        ),
    ] = None,
) -> Stats:
    """Requests, rps, success rate and p50/p95/p99 latency per service, route or edge over the last
    `window` seconds. Services are counted by their own sidecars (every caller), routes by the callers'."""
    service = None if name is None else _known(session, namespace or "default", name)
    w = store.window(window)
    rows: list[StatRow]
    if kind == "service":
        services = [service] if service else [key(s) for s in crud.list_all(session, Service, namespace=namespace)]
        rows = views.service_rows(w, services)
    elif kind == "route":
        rows = [r for r in views.route_rows(w, service) if _in(namespace, r.service)]
    else:
        rows = [r for r in views.edge_rows(w, service) if _in(namespace, r.source, r.destination)]
    return Stats(kind=kind, window_seconds=window, rows=rows)


@router.get("/stats/series", response_model=Series, responses=NO_SERVICE)
def series(
    session: SessionDep,
    store: StatsDep,
    _: Reader,
    service: Annotated[str, Query(pattern=f"^{NAME[1:-1]}/{NAME[1:-1]}$", description='"namespace/name"')],
    window: Window = RETENTION_SECONDS,
    step: Annotated[int, Query(ge=BIN_SECONDS, le=RETENTION_SECONDS, description="Seconds per point.")] = 60,
) -> Series:
    """A service's rps, success rate and latency quantiles per `step` seconds over the last `window`
    (at most one hour), oldest first: the dashboard's charts."""
    bad = []
    if step % BIN_SECONDS:
        bad.append({"loc": ["query", "step"], "msg": f"must be a multiple of {BIN_SECONDS}", "type": "value_error"})
    if window < step:
        bad.append({"loc": ["query", "window"], "msg": f"must be at least step ({step})", "type": "value_error"})
    if bad:
        raise Invalid(bad)
    namespace, name = service.split("/")
    return views.series(store.steps(window, step), _known(session, namespace, name), step)


@router.get("/edges", response_model=Edges)
def edges(store: StatsDep, _: Reader, window: Window = 60) -> Edges:
    """Who calls whom over the last `window` seconds, with mTLS or not, by protocol: the calls each
    service's sidecars saw come in, and the calls to services without (reporting) sidecars."""
    return views.edges(store.window(window), window)
