"""Apply many documents at once (what ``meshctl apply -f`` sends) and
explain what the mesh would do with a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from meshctl.control import crud, instances, limits
from meshctl.control.deps import Reader, SessionDep, SettingsDep, Writer
from meshctl.control.errors import TooLarge
from meshctl.control.explain import ExplainRequest, Explanation, explain, source_of, unknown_service
from meshctl.control.explain_backend import CallerReport
from meshctl.control.kinds.common import ApplyRequest, ApplyResult, now
from meshctl.control.push import load_mesh
from meshctl.control.routers.common import NO_SERVICE

router = APIRouter(prefix="/api/v1", tags=["apply"])


@router.post("/apply", response_model=list[ApplyResult], response_model_exclude_none=True)
def apply(
    session: SessionDep,
    by: Writer,
    settings: SettingsDep,
    data: ApplyRequest,
    dry_run: Annotated[bool, Query(description="Validate and report what would change; write nothing.")] = False,
) -> list[ApplyResult]:
    """Creates or updates every document, all or nothing, as one revision; unchanged ones are left alone.
    A dry run (`?dry_run=true`, or `dry_run` in the body) writes nothing and reports each created or
    configured resource's spec before and after, as the server would store it (`meshctl diff -f`).
    413 with more documents than the control plane's limit (`apply_max_documents`)."""
    if len(data.documents) > settings.apply_max_documents:
        raise TooLarge(limits.too_many_documents(len(data.documents), settings.apply_max_documents))
    return crud.apply(session, documents=data.documents, dry_run=dry_run or data.dry_run, by=by)


@router.post("/explain", response_model=Explanation, responses=NO_SERVICE)
async def explain_request(settings: SettingsDep, session: SessionDep, _: Reader, data: ExplainRequest) -> Explanation:
    """Which route, rule and match a request from `source` would take, why the others did not, where it
    goes, and whether the receiving service's authorization lets it in; the timeout, retries, fault,
    mirrors, rate limits and each backend's resilience settings that apply to it, and the endpoints the
    caller's sidecars report ejected or unhealthy now. 404 when `source`, or the `destination` given by
    name, is no mesh service (a `host` that names none is the outcome "unknown_service")."""

    def run(s: Session) -> Explanation:
        mesh = load_mesh(s, trust_domain=settings.trust_domain, authz_default=settings.authz_default)
        if problem := unknown_service(mesh, data):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=problem)
        namespace, name = source_of(data).split("/", 1)
        at = now()
        callers = [
            CallerReport(sc.zone, sc.endpoint_health, int((at - sc.last_seen).total_seconds() * 1000))
            for sc in instances.live_sidecars(s, namespace=namespace, name=name)
        ]
        return explain(mesh, data, callers)

    return await run_in_threadpool(run, session)
