"""Proxy config: an operator asks for a running sidecar's data-plane config
(reader or admin token), and the two calls the sidecar answers with (a
long-poll for requests, a POST of the dump). See control.proxy_config."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control.deps import AnyCaller, EngineDep, HubDep, Reader
from meshctl.control.kinds.common import now
from meshctl.control.kinds.service import Service
from meshctl.control.longpoll import SIDECAR_WAIT_SECONDS, SidecarWait
from meshctl.control.models import Sidecar
from meshctl.control.proxy_config import (
    ANSWER_SECONDS,
    MAX_ANSWER_SECONDS,
    DumpRequests,
    DumpsDep,
    ProxyConfig,
    ProxyConfigReport,
    TooManyWaiting,
)
from meshctl.control.routers.common import NOT_YOURS, RowId
from meshctl.control.routers.sidecars import spec_of

router = APIRouter(prefix="/api/v1/sidecars", tags=["sidecars"], responses=NOT_YOURS)


def _live_sidecar(engine: Engine, sidecar_id: int) -> tuple[str, str]:
    """(namespace, service) of the sidecar; 404 when unknown, 410 when its registration expired."""
    with Session(engine) as session:  # its own: the wait must not hold a request's
        sc = session.get(Sidecar, sidecar_id)
        svc = session.get(Service, sc.service_id) if sc else None
        if sc is None or svc is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"sidecar {sidecar_id} not found")
        if sc.expires_at <= now():
            raise HTTPException(
                status.HTTP_410_GONE,
                detail=f"sidecar {sidecar_id} ({svc.namespace}/{svc.name}) is gone: no heartbeat since "
                f"{sc.last_seen.isoformat(timespec='seconds')}",
            )
        return svc.namespace, svc.name


@router.get(
    "/{sidecar_id}/proxy-config",
    response_model=ProxyConfig,
    responses={
        404: {"description": "No such sidecar"},
        410: {"description": "The sidecar's registration expired"},
        429: {"description": "Too many requests wait on this sidecar"},
        504: {"description": "The sidecar did not answer in time"},
    },
)
async def proxy_config(
    dumps: DumpsDep,
    engine: EngineDep,
    _: Reader,
    sidecar_id: RowId,
    timeout: float = Query(
        default=ANSWER_SECONDS, gt=0, le=MAX_ANSWER_SECONDS, description="Seconds to wait for the sidecar."
    ),
) -> ProxyConfig:
    """The config the sidecar's data plane runs, asked of the sidecar itself (through its
    long-poll here): listeners, routes, clusters, endpoints with their health, and its identity."""
    namespace, service = await run_in_threadpool(_live_sidecar, engine, sidecar_id)
    try:
        report = await dumps.ask(sidecar_id, timeout)
    except TooManyWaiting as e:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(e)) from None
    if report is None:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            detail=f"sidecar {sidecar_id} ({namespace}/{service}) did not answer within {timeout:g}s "
            "(it may have stopped without deregistering, or be too old to answer)",
        )
    return ProxyConfig(sidecar=sidecar_id, namespace=namespace, service=service, **report.model_dump())


# === the sidecars' side ===


@router.get(
    "/{sidecar_id}/config-dumps",
    response_model=DumpRequests,
    responses={204: {"description": "Nobody asked within `wait` seconds"}},
)
async def dump_requests(
    dumps: DumpsDep,
    hub: HubDep,
    engine: EngineDep,
    caller: AnyCaller,
    sidecar_id: RowId,
    wait: SidecarWait = SIDECAR_WAIT_SECONDS,
) -> Response | DumpRequests:
    """Long-poll: the ids of the config dumps operators wait for from this sidecar, as soon as
    there are any. The sidecar POSTs each to `config-dumps/{request_id}`."""
    await spec_of(hub, engine, caller, sidecar_id)  # exists, and the caller may act for it
    requests = await dumps.wait_asked(sidecar_id, wait)
    if requests is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return DumpRequests(requests=requests)


@router.post(
    "/{sidecar_id}/config-dumps/{request_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={410: {"description": "Nobody waits for this dump any more"}},
)
async def dump(
    dumps: DumpsDep,
    hub: HubDep,
    engine: EngineDep,
    caller: AnyCaller,
    sidecar_id: RowId,
    request_id: str,
    data: ProxyConfigReport,
) -> None:
    """A config dump for an operator waiting on it."""
    await spec_of(hub, engine, caller, sidecar_id)
    if not await dumps.answer(sidecar_id, request_id, data):
        raise HTTPException(status.HTTP_410_GONE, detail=f"config dump {request_id} is no longer waited for")
