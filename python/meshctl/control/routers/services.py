"""Services: create, list, read, update (with resource_version), delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from meshctl.control import crud
from meshctl.control.deps import Admin, Reader, SessionDep
from meshctl.control.models import Service, ServiceCreate, ServicePublic, ServiceUpdate

router = APIRouter(prefix="/api/v1/services", tags=["services"])


def _found(session: SessionDep, namespace: str, name: str) -> Service:
    svc = crud.get_service(session, namespace=namespace, name=name)
    if svc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"service {namespace}/{name} not found")
    return svc


@router.get("", response_model=list[ServicePublic])
def list_services(session: SessionDep, _: Reader, namespace: str | None = None) -> list[Service]:
    return crud.list_services(session, namespace=namespace)


@router.post("", response_model=ServicePublic, status_code=status.HTTP_201_CREATED)
def create_service(session: SessionDep, _: Admin, data: ServiceCreate) -> Service:
    try:
        return crud.create_service(session, data=data)
    except crud.Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(e)) from None


@router.get("/{namespace}/{name}", response_model=ServicePublic)
def read_service(session: SessionDep, _: Reader, namespace: str, name: str) -> Service:
    return _found(session, namespace, name)


@router.put("/{namespace}/{name}", response_model=ServicePublic)
def update_service(session: SessionDep, _: Admin, namespace: str, name: str, data: ServiceUpdate) -> Service:
    svc = _found(session, namespace, name)
    try:
        return crud.update_service(session, svc=svc, data=data)
    except crud.Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(e)) from None


@router.delete("/{namespace}/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_service(session: SessionDep, _: Admin, namespace: str, name: str) -> None:
    crud.delete_service(session, svc=_found(session, namespace, name))
