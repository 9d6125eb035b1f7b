"""Helpers shared by the resource routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path, status
from sqlmodel import Session

from meshctl.control import crud
from meshctl.control.kinds.base import Kind
from meshctl.control.models import DB_INT_MAX

#: A row's id in a path (sidecar, token, endpoint, revision): within what the database holds.
RowId = Annotated[int, Path(ge=0, le=DB_INT_MAX)]

#: The 403 of the calls a sidecar makes for itself, refused for a token of another service.
NOT_YOURS: dict[int | str, dict[str, Any]] = {403: {"description": "This token may not act for that service"}}
#: The 404 of the routes that look up a service named in their query or body.
NO_SERVICE: dict[int | str, dict[str, Any]] = {404: {"description": "No such service"}}


def found(session: Session, kind: Kind, namespace: str, name: str) -> Any:
    """The resource, or a 404 naming it."""
    row = crud.get(session, kind.table, namespace=namespace, name=name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind.noun} {namespace}/{name} not found")
    return row
