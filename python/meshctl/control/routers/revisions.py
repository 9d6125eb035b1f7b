"""The mesh's revision log: every change, in order."""

from __future__ import annotations

from fastapi import APIRouter

from meshctl.control import crud
from meshctl.control.deps import Reader, SessionDep
from meshctl.control.models import Revision, RevisionPublic

router = APIRouter(prefix="/api/v1/revisions", tags=["revisions"])


@router.get("", response_model=list[RevisionPublic])
def list_revisions(session: SessionDep, _: Reader) -> list[Revision]:
    return crud.list_revisions(session)
