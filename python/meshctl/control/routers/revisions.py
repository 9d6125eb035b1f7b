"""The mesh's revision log: every change in order, any two compared, any one restored."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session

from meshctl.control import history
from meshctl.control.deps import Reader, SessionDep, Writer
from meshctl.control.models import Change, Revision, RevisionDetail, RevisionPublic, RollbackResult
from meshctl.control.routers.common import RowId

router = APIRouter(prefix="/api/v1/revisions", tags=["revisions"])


def _revision(session: Session, revision: int) -> Revision:
    rev = history.get_revision(session, revision=revision)
    if rev is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"revision {revision} not found")
    return rev


@router.get("", response_model=list[RevisionPublic])
def list_revisions(session: SessionDep, _: Reader) -> list[Revision]:
    return history.list_revisions(session)


@router.get("/{revision}", response_model=RevisionDetail)
def read_revision(session: SessionDep, _: Reader, revision: RowId) -> RevisionDetail:
    rev = _revision(session, revision)
    return RevisionDetail.model_validate({**rev.model_dump(), "state": history.state_at(session, revision=revision)})


@router.get("/{before}/diff/{after}", response_model=list[Change])
def diff_revisions(session: SessionDep, _: Reader, before: RowId, after: RowId) -> list[Change]:
    """What changed from `before` to `after`; revision 0 is the empty mesh before the first change."""
    for rev in (before, after):
        if rev != 0:
            _revision(session, rev)
    return history.diff(history.state_at(session, revision=before), history.state_at(session, revision=after))


@router.post("/{revision}/rollback", response_model=RollbackResult)
def rollback(session: SessionDep, by: Writer, revision: RowId) -> RollbackResult:
    """Restores every resource to its state at `revision`, recorded as a new revision with what it
    changed; when every resource already is as it was then, records nothing (`recorded` false) and
    answers with the latest revision."""
    return history.rollback(session, revision=_revision(session, revision), by=by)
