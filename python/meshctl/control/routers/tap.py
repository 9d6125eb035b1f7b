"""Tap: an operator's live stream of request metadata from the sidecars of a
service (admin token only), and the two calls the sidecars relay it with
(a long-poll for the open sessions, a POST of events). See control.tap."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control import crud
from meshctl.control.deps import AnyCaller, EngineDep, HubDep, TapsDep
from meshctl.control.kinds.service import Service
from meshctl.control.longpoll import SIDECAR_WAIT_SECONDS, SidecarWait
from meshctl.control.routers.common import NOT_YOURS, RowId
from meshctl.control.routers.sidecars import spec_of
from meshctl.control.tap import (
    MAX_LIMIT,
    MAX_SECONDS,
    TapBatch,
    TapEnd,
    TapEvent,
    TapFilter,
    TapSessions,
    TooManySessions,
)

router = APIRouter(prefix="/api/v1/tap", tags=["tap"])
sidecar_router = APIRouter(prefix="/api/v1/sidecars", tags=["tap"], responses=NOT_YOURS)


def require_tapper(caller: AnyCaller) -> str:
    """Tap shows live traffic: the admin token only (a reader token sees config, not requests)."""
    if caller.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"tap needs the admin token, not a {caller.role} token")
    return caller.role


Tapper = Annotated[str, Depends(require_tapper)]


def _service_exists(engine: Engine, namespace: str, name: str) -> bool:
    with Session(engine) as session:  # its own: the stream must not hold a request's
        return crud.get(session, Service, namespace=namespace, name=name) is not None


_NDJSON = {
    "application/x-ndjson": {
        "schema": {
            "description": 'One TapEvent per line, blank lines while idle, then one {"end": TapEnd} line.',
            "oneOf": [
                TapEvent.model_json_schema(),
                {"type": "object", "properties": {"end": TapEnd.model_json_schema()}, "required": ["end"]},
            ],
        }
    }
}


@router.get(
    "/{namespace}/{service}",
    response_class=StreamingResponse,
    responses={
        200: {"content": _NDJSON, "description": "Events as they happen, until the limit or the time"},
        403: {"description": "Not the admin token"},
        404: {"description": "No such service"},
        429: {"description": "Too many taps open on this service"},
    },
)
async def tap(
    taps: TapsDep,
    engine: EngineDep,
    _: Tapper,
    namespace: str,
    service: str,
    method: str | None = Query(default=None, pattern=r"^[A-Za-z]{1,16}$", description="Only this method."),
    path: str | None = Query(default=None, pattern=r"^/", max_length=1024, description="Only paths with this prefix."),
    status_: int | None = Query(default=None, alias="status", ge=100, le=599, description="Only this status."),
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT, description="End after this many events."),
    seconds: float = Query(default=30.0, gt=0, le=MAX_SECONDS, description="End after this long."),
) -> StreamingResponse:
    """Live request metadata from every live sidecar of the service (those joining meanwhile too),
    as NDJSON: one event per line, then one `{"end": {...}}` line saying why it ended and how
    many events were dropped (a client reading slower than traffic loses events, never slows it).
    Request headers are redacted to an allow-list."""
    if not await run_in_threadpool(_service_exists, engine, namespace, service):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"service {namespace}/{service} not found")
    try:
        session = taps.open(
            service=f"{namespace}/{service}",
            filter=TapFilter(method=method.upper() if method else None, path=path, status=status_),
            limit=limit,
            seconds=seconds,
        )
    except TooManySessions as e:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(e)) from None
    return StreamingResponse(taps.stream(session), media_type="application/x-ndjson")


# === the sidecars' side ===


@sidecar_router.get(
    "/{sidecar_id}/tap",
    response_model=TapSessions,
    responses={204: {"description": "The open sessions did not change within `wait` seconds"}},
)
async def tap_sessions(
    taps: TapsDep,
    hub: HubDep,
    engine: EngineDep,
    caller: AnyCaller,
    sidecar_id: RowId,
    known: str = Query(default="", max_length=4096, description="Comma-separated ids of the sessions it has."),
    wait: SidecarWait = SIDECAR_WAIT_SECONDS,
) -> Response | TapSessions:
    """Long-poll: the open tap sessions of the sidecar's service, as soon as they differ from `known`
    (one opened or ended). The sidecar taps its data plane for each and closes taps not listed."""
    spec = await spec_of(hub, engine, caller, sidecar_id)
    sessions = await taps.wait_change(spec.key, {k for k in known.split(",") if k}, wait)
    if sessions is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return TapSessions(sessions=sessions)


@sidecar_router.post(
    "/{sidecar_id}/tap/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={410: {"description": "The session ended: close the tap"}},
)
async def tap_events(
    taps: TapsDep, hub: HubDep, engine: EngineDep, caller: AnyCaller, sidecar_id: RowId, session_id: str, data: TapBatch
) -> None:
    """Events for an open session; never waits for the operator (what does not fit is dropped, counted)."""
    spec = await spec_of(hub, engine, caller, sidecar_id)
    session = taps.get(session_id)
    if session is None or session.service != spec.key:
        raise HTTPException(status.HTTP_410_GONE, detail=f"tap session {session_id} ended")
    await taps.deliver(session, sidecar=sidecar_id, batch=data)
