"""Sidecars: register (and heartbeat), long-poll for their snapshot, report
ACK or NACK, deregister; and the mesh-wide status of them all."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control import crud, history, instances, tokens
from meshctl.control.compiler import SidecarSpec
from meshctl.control.deps import AnyCaller, Caller, EngineDep, HubDep, Reader, SessionDep, StatsDep
from meshctl.control.errors import Invalid
from meshctl.control.kinds.common import key, now
from meshctl.control.kinds.service import Service
from meshctl.control.models import (
    MeshStatus,
    Sidecar,
    SidecarPublic,
    SidecarRegister,
    SidecarReport,
    Snapshot,
)
from meshctl.control.push import Hub, sidecar_spec
from meshctl.control.routers.common import NOT_YOURS, RowId

router = APIRouter(prefix="/api/v1/sidecars", tags=["sidecars"], responses=NOT_YOURS)
mesh_router = APIRouter(prefix="/api/v1/mesh", tags=["sidecars"])


def _public(sc: Sidecar, svc: Service, generation: int, token_states: dict[int, bool]) -> SidecarPublic:
    """`token_states`: the sidecars' tokens that still exist, and whether each has expired (see
    `tokens.states`)."""
    return SidecarPublic.model_validate(
        {
            **sc.model_dump(),
            "namespace": svc.namespace,
            "service": svc.name,
            "live": sc.expires_at > now(),
            "mesh_generation": generation,
            "token_revoked": sc.token_id is not None and sc.token_id not in token_states,
            "token_expired": sc.token_id is not None and token_states.get(sc.token_id, False),
            "health_check": svc.health_check,
        }
    )


def _publics(session: Session, rows: list[tuple[Sidecar, Service]]) -> list[SidecarPublic]:
    generation = crud.generation(session)
    states = tokens.states(session, {sc.token_id for sc, _ in rows if sc.token_id is not None})
    return [_public(sc, svc, generation, states) for sc, svc in rows]


def _owned(session: Session, caller: Caller, sidecar_id: int) -> tuple[Sidecar, Service]:
    """The sidecar, if the caller may act for it (admin, a join token of its service, or the
    expired join token it registered with)."""
    sc = session.get(Sidecar, sidecar_id)
    svc = session.get(Service, sc.service_id) if sc else None
    if sc is None or svc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"sidecar {sidecar_id} not found")
    _may_act(caller, key(svc), sc.token_id)
    return sc, svc


def _may_act(caller: Caller, service: str, token_id: int | None) -> None:
    if caller.may_act_for(service, token_id):
        return
    if caller.joined_only:
        raise caller.expired()
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this token cannot act for {service}")


@router.put("", response_model=SidecarPublic)
def register(
    hub: HubDep, session: SessionDep, stats: StatsDep, caller: AnyCaller, data: SidecarRegister
) -> SidecarPublic:
    """Registers the sidecar and its endpoint; PUT the same again within the TTL to heartbeat. An
    expired join token heartbeats (and re-registers, restarting) only the instances (service and
    instance id, see `instances.find_registered`) that registered with it: it joins no new one (401)."""
    name = f"{data.namespace}/{data.service}"
    if not caller.may_act_as(name) and not caller.joined_only:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this token cannot join as {name}")
    svc = crud.get(session, Service, namespace=data.namespace, name=data.service)
    if caller.joined_only:
        known = None
        if svc is not None:
            known = instances.find_registered(session, svc=svc, data=data)
        if known is None or not caller.may_act_for(name, known.token_id):
            raise caller.expired()
    if svc is None:
        raise Invalid([{"loc": ["body", "service"], "msg": f"service {name} does not exist", "type": "reference"}])
    sc = instances.register_sidecar(session, svc=svc, data=data, token_id=caller.id)
    assert sc.id is not None
    hub.registered(session, sc.id, (sidecar_spec(sc, svc), name, sc.token_id))
    stats.ingest(sidecar=sc.id, service=name, report=data.telemetry)
    return _publics(session, [(sc, svc)])[0]


@mesh_router.get("", response_model=MeshStatus)
def mesh_status(session: SessionDep, _: Reader) -> MeshStatus:
    generation = crud.generation(session)
    revisions = history.list_revisions(session)
    rows = _publics(session, instances.list_sidecars(session))
    return MeshStatus(
        generation=generation,
        revision=revisions[-1].id if revisions and revisions[-1].id else 0,
        services=len(crud.list_all(session, Service)),
        sidecars=len(rows),
        live_sidecars=sum(r.live for r in rows),
        in_sync=sum(r.live and r.acked_version == generation for r in rows),
    )


@router.get("", response_model=list[SidecarPublic])
def list_sidecars(session: SessionDep, _: Reader, namespace: str | None = None) -> list[SidecarPublic]:
    return _publics(session, instances.list_sidecars(session, namespace=namespace))


def _load_spec(engine: Engine, caller: Caller, sidecar_id: int) -> tuple[SidecarSpec, str, int | None]:
    with Session(engine) as session:
        sc, svc = _owned(session, caller, sidecar_id)
        return sidecar_spec(sc, svc), key(svc), sc.token_id


async def spec_of(hub: Hub, engine: Engine, caller: Caller, sidecar_id: int) -> SidecarSpec:
    """The sidecar as it registered, if the caller may act for it (cached: long-polls read no database)."""
    known = hub.sidecars.get(sidecar_id)
    if known is None or (caller.joined_only and known[2] != caller.id):
        # (an expired token not the cached one: the row may say otherwise, registered through another server)
        known = await run_in_threadpool(_load_spec, engine, caller, sidecar_id)
        hub.sidecars[sidecar_id] = known
    _may_act(caller, known[1], known[2])
    return known[0]


@router.get(
    "/{sidecar_id}/snapshot",
    response_model=Snapshot,
    responses={304: {"description": "Nothing newer than `version` within `wait` seconds"}},
)
async def watch(
    hub: HubDep,
    engine: EngineDep,
    caller: AnyCaller,
    sidecar_id: RowId,
    version: int = Query(default=-1, description="The version the sidecar holds; only a newer one is sent."),
    wait: float = Query(default=30.0, ge=0, le=300, description="Seconds to hold the request open."),
) -> Response:
    """Long-poll: answers as soon as the sidecar's own snapshot is newer than `version` (a change
    that leaves its config as it was does not answer). NACKs go to `status`."""
    spec = await spec_of(hub, engine, caller, sidecar_id)
    with hub.metrics.watching("long_poll"):
        found = await hub.next_snapshot(sidecar_id, spec, version, wait, time.monotonic())
    if found is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED)
    return Response(found[1], media_type="application/json")


#: A blank line this often on an idle stream: both ends notice a dead peer, middleboxes keep it open.
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/{sidecar_id}/watch",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One snapshot per line"}},
)
async def watch_stream(
    hub: HubDep,
    engine: EngineDep,
    caller: AnyCaller,
    sidecar_id: RowId,
    version: int = Query(default=-1, description="The version the sidecar holds; only newer ones are sent."),
) -> StreamingResponse:
    """A stream of snapshots, one JSON object per line, each newer than the last; blank lines keep it
    alive. One request per sidecar, however many changes: what sidecars use. ACK/NACK go to `status`."""
    spec = await spec_of(hub, engine, caller, sidecar_id)

    async def lines() -> AsyncIterator[bytes]:
        held, since = version, time.monotonic()
        with hub.metrics.watching("stream"):
            while not hub.closing:
                found = await hub.next_snapshot(sidecar_id, spec, held, KEEPALIVE_SECONDS, since)
                if found is None:
                    yield b"\n"
                    continue
                held, body = found
                yield body + b"\n"
                since = time.monotonic()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/{sidecar_id}/status", status_code=status.HTTP_204_NO_CONTENT)
async def report(hub: HubDep, engine: EngineDep, caller: AnyCaller, sidecar_id: RowId, data: SidecarReport) -> None:
    """ACK (no error) or NACK (the data plane's error) of the snapshot `version`. ACKs are written
    in batches (see `meshctl status` a moment later); NACKs at once."""
    await spec_of(hub, engine, caller, sidecar_id)  # exists, and the caller may act for it
    if data.error is None:
        hub.note_ack(sidecar_id, data.version)
        return
    # (the generation it stands for: the refused config may be a newer generation's as well)
    report = data.model_copy(update={"version": hub.note_nack(sidecar_id, data.version, data.error)})

    def write() -> None:
        with Session(engine) as session:
            sc, _ = _owned(session, caller, sidecar_id)
            instances.report(session, sidecar=sc, data=report)

    await run_in_threadpool(write)


@router.delete("/{sidecar_id}", status_code=status.HTTP_204_NO_CONTENT)
def deregister(hub: HubDep, session: SessionDep, caller: AnyCaller, sidecar_id: RowId) -> None:
    """A sidecar leaving cleanly takes its endpoint with it at once, not after its TTL. One leaving
    with an expired join token keeps its row (not live): that instance may come back with it."""
    sc, svc = _owned(session, caller, sidecar_id)
    instances.deregister_sidecar(session, sidecar=sc, svc=svc, keep=caller.joined_only)
    hub.drop_snapshot(sidecar_id)
    if not caller.joined_only:
        hub.forget(session, sidecar_id)
    hub.metrics.forget(sidecar_id)
