"""Services: create, list, read, update (with resource_version), delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from meshctl.control import crud, tokens
from meshctl.control.deps import Admin, Reader, SessionDep, TokenCacheDep, Writer
from meshctl.control.kinds.common import key
from meshctl.control.kinds.service import KIND, Service, ServiceCreate, ServicePublic, ServiceSpec, ServiceUpdate
from meshctl.control.models import JoinToken, JoinTokenInfo, TokenCreate
from meshctl.control.routers.common import RowId, found

router = APIRouter(prefix="/api/v1/services", tags=["services"])


@router.get("", response_model=list[ServicePublic])
def list_services(session: SessionDep, _: Reader, namespace: str | None = None) -> list[Service]:
    return crud.list_all(session, Service, namespace=namespace)


@router.post("", response_model=ServicePublic, status_code=status.HTTP_201_CREATED)
def create_service(session: SessionDep, by: Writer, data: ServiceCreate) -> Service:
    spec = ServiceSpec(ports=data.ports, mtls=data.mtls, healthCheck=data.health_check)
    return crud.create(  # type: ignore[no-any-return]
        session,
        kind=KIND,
        namespace=data.namespace,
        name=data.name,
        spec=spec,
        labels=data.labels,
        annotations=data.annotations,
        by=by,
    )


@router.get("/{namespace}/{name}", response_model=ServicePublic)
def read_service(session: SessionDep, _: Reader, namespace: str, name: str) -> Service:
    return found(session, KIND, namespace, name)  # type: ignore[no-any-return]


@router.put("/{namespace}/{name}", response_model=ServicePublic)
def update_service(session: SessionDep, by: Writer, namespace: str, name: str, data: ServiceUpdate) -> Service:
    svc = found(session, KIND, namespace, name)
    spec = ServiceSpec(ports=data.ports, mtls=data.mtls, healthCheck=data.health_check)
    return crud.update(  # type: ignore[no-any-return]
        session,
        kind=KIND,
        row=svc,
        spec=spec,
        resource_version=data.resource_version,
        labels=data.labels,
        annotations=data.annotations,
        by=by,
    )


@router.delete("/{namespace}/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_service(session: SessionDep, by: Writer, namespace: str, name: str) -> None:
    crud.delete(session, kind=KIND, row=found(session, KIND, namespace, name), by=by)


@router.post("/{namespace}/{name}/join-tokens", response_model=JoinToken, status_code=status.HTTP_201_CREATED)
def issue_token(session: SessionDep, _: Admin, namespace: str, name: str) -> JoinToken:
    """A token for this service's sidecars only: they may register and watch as it, nothing more.
    It is shown this once; only its hash is kept. It never expires, as before: `POST /api/v1/tokens`
    makes join tokens with a name and an expiry (24 hours unless asked otherwise)."""
    svc = found(session, KIND, namespace, name)
    row, token = tokens.create(session, data=TokenCreate(role="join", service=key(svc), expires_in_seconds=0))
    assert row.id is not None and row.scope is not None
    return JoinToken(id=row.id, service=row.scope, created_at=row.created_at, token=token)


@router.get("/{namespace}/{name}/join-tokens", response_model=list[JoinTokenInfo])
def list_tokens(session: SessionDep, _: Admin, namespace: str, name: str) -> list[JoinTokenInfo]:
    """The service's join tokens (never the tokens themselves); `GET /api/v1/tokens` shows more."""
    svc = found(session, KIND, namespace, name)
    return [
        JoinTokenInfo(id=t.id, service=key(svc), created_at=t.created_at)
        for t in tokens.list_tokens(session, role="join", service=key(svc))
        if t.id is not None
    ]


@router.delete("/{namespace}/{name}/join-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(
    token_cache: TokenCacheDep, session: SessionDep, _: Admin, namespace: str, name: str, token_id: RowId
) -> None:
    """Revoke a join token (as `DELETE /api/v1/tokens/{id}` does, for this service's only)."""
    svc = found(session, KIND, namespace, name)
    if not tokens.revoke(session, token_id=token_id, role="join", service=key(svc)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"join token {token_id} of {key(svc)} not found")
    token_cache.clear()
