"""Endpoints of a service: register (and heartbeat) with PUT, list the live ones, deregister."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from meshctl.control import instances
from meshctl.control.deps import Admin, Reader, SessionDep
from meshctl.control.kinds.service import KIND as SERVICE
from meshctl.control.models import Endpoint, EndpointPublic, EndpointRegister
from meshctl.control.routers.common import RowId, found

router = APIRouter(prefix="/api/v1/services/{namespace}/{name}/endpoints", tags=["endpoints"])


@router.put("", response_model=EndpointPublic)
def register(session: SessionDep, _: Admin, namespace: str, name: str, data: EndpointRegister) -> Endpoint:
    svc = found(session, SERVICE, namespace, name)
    return instances.register_endpoint(session, svc=svc, data=data)


@router.get("", response_model=list[EndpointPublic])
def list_endpoints(
    session: SessionDep, _: Reader, namespace: str, name: str, include_expired: bool = False
) -> list[EndpointPublic]:
    """The live endpoints (with `include_expired`, all), each with its app's health as its sidecar
    reports it: one whose health is "unknown" or "unhealthy" is listed but in no snapshot."""
    svc = found(session, SERVICE, namespace, name)
    health = instances.endpoint_health(session, svc=svc)
    return [
        EndpointPublic.model_validate({**ep.model_dump(), "health": health.get((ep.address, ep.port))})
        for ep in instances.list_endpoints(session, svc=svc, include_expired=include_expired)
    ]


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def deregister(session: SessionDep, _: Admin, namespace: str, name: str, endpoint_id: RowId) -> None:
    svc = found(session, SERVICE, namespace, name)
    if not instances.delete_endpoint(session, svc=svc, endpoint_id=endpoint_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"endpoint {endpoint_id} of {namespace}/{name} not found")
