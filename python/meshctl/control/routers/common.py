"""Helpers shared by the resource routers."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from sqlmodel import Session

from meshctl.control import crud
from meshctl.control.kinds.base import Kind


def found(session: Session, kind: Kind, namespace: str, name: str) -> Any:
    """The resource, or a 404 naming it."""
    row = crud.get(session, kind.table, namespace=namespace, name=name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind.noun} {namespace}/{name} not found")
    return row
