"""Helpers shared by the resource routers."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from sqlmodel import Session, SQLModel

from meshctl.control import crud


def found(session: Session, model: type[SQLModel], kind: str, namespace: str, name: str) -> Any:
    """The resource, or a 404 naming it."""
    row = crud.get(session, model, namespace=namespace, name=name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind} {namespace}/{name} not found")
    return row
