"""API tokens (admin only): create (shown once), list (never the tokens nor
their hashes), revoke. Join tokens of one service are also reachable under
``/api/v1/services/{namespace}/{name}/join-tokens``, through the same code."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from meshctl.control import tokens
from meshctl.control.deps import Admin, SessionDep, TokenCacheDep
from meshctl.control.kinds.common import now
from meshctl.control.models import TokenCreate, TokenInfo, TokenIssued
from meshctl.control.routers.common import RowId

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])

_LAST_ADMIN: dict[int | str, dict[str, Any]] = {
    409: {"description": "The last live admin token: create another one first"}
}


@router.get("", response_model=list[TokenInfo])
def list_tokens(
    session: SessionDep,
    _: Admin,
    role: Literal["join", "admin", "reader"] | None = None,
    service: str | None = Query(default=None, description='A join token\'s service, "namespace/name".'),
) -> list[TokenInfo]:
    at = now()
    return [tokens.info(t, at) for t in tokens.list_tokens(session, role=role, service=service)]


@router.post("", response_model=TokenIssued, status_code=status.HTTP_201_CREATED)
def create_token(session: SessionDep, _: Admin, data: TokenCreate) -> TokenIssued:
    """A new token, shown this once; only its hash is kept. To rotate one, create its successor,
    switch its holders to it, then revoke the old one."""
    row, token = tokens.create(session, data=data)
    return TokenIssued(**tokens.info(row).model_dump(), token=token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_LAST_ADMIN)
def revoke_token(token_cache: TokenCacheDep, session: SessionDep, _: Admin, token_id: RowId) -> None:
    """Refused at once by this server and by every other replica on its PostgreSQL database (they are
    told at once). Sidecars already watching keep their stream but can no longer heartbeat nor renew
    their SVID. The last live admin token cannot be revoked (409)."""
    if not tokens.revoke(session, token_id=token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"token {token_id} not found")
    token_cache.clear()
