"""The mesh's health check (``meshctl check``): every server-side check of
``analysis.codes`` at once, for any reader."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control.analysis import run, sidecars
from meshctl.control.analysis.report import CheckReport
from meshctl.control.ca import CertificateAuthority
from meshctl.control.deps import CaDep, EngineDep, Reader, SettingsDep
from meshctl.control.models import Sidecar
from meshctl.control.settings import Settings

router = APIRouter(prefix="/api/v1/check", tags=["check"])

#: How often behind sidecars are looked at again while the grace runs (ACKs land every 0.2 s).
POLL_SECONDS = 0.25


def _lagging(engine: Engine) -> dict[int, int]:
    with Session(engine) as session:
        return sidecars.lagging(session)


def _still_behind(engine: Engine, wanted: dict[int, int]) -> dict[int, int]:
    """Of `wanted` (id -> generation), the sidecars that have not ACKed it yet and are not gone."""
    with Session(engine) as session:
        rows = {i: session.get(Sidecar, i) for i in wanted}
        return {
            i: g
            for i, g in wanted.items()
            if (sc := rows[i]) is not None and (sc.acked_version is None or sc.acked_version < g)
        }


def _analyse(
    engine: Engine, ca: CertificateAuthority, settings: Settings, behind: set[int], grace: float
) -> CheckReport:
    with Session(engine) as session:
        return run.analyse(session, ca=ca, settings=settings, stayed_behind=behind, grace=grace)


@router.get("", response_model=CheckReport)
async def check(
    engine: EngineDep,
    ca: CaDep,
    settings: SettingsDep,
    _: Reader,
    grace: float = Query(
        default=5.0,
        ge=0,
        le=60,
        description="Seconds a sidecar behind the mesh generation gets to catch up before it is reported.",
    ),
) -> CheckReport:
    """What is wrong or at risk in the mesh: sidecars (sync, versions, revoked join tokens), SVIDs
    and the CA, routes (shadowed rules, backends without endpoints) and resources (dangling
    references, PERMISSIVE services). Each finding has a code, a severity, the resource, a message
    and a hint; `checks` lists every check that ran (one without findings passed)."""
    # Without a session held: the wait may last the whole grace.
    behind = await run_in_threadpool(_lagging, engine)
    deadline = time.monotonic() + grace
    while behind and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        behind = await run_in_threadpool(_still_behind, engine, behind)
    return await run_in_threadpool(_analyse, engine, ca, settings, set(behind), grace)
