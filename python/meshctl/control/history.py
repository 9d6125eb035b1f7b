"""The revision log read back: the state at any revision (today's state with
later changes undone), differences between two, and rollback to one."""

from __future__ import annotations

from typing import Any, cast

from sqlmodel import Session, col, select

from meshctl.control.crud import Authorship, current_state, record_revision
from meshctl.control.kinds.common import key, now
from meshctl.control.kinds.registry import KINDS
from meshctl.control.models import Change, Revision, RollbackResult


def list_revisions(session: Session) -> list[Revision]:
    return list(session.exec(select(Revision).order_by(col(Revision.id))).all())


def get_revision(session: Session, *, revision: int) -> Revision | None:
    return session.get(Revision, revision)


def state_at(session: Session, *, revision: int) -> dict[str, dict[str, Any]]:
    """Every resource's spec (with its labels: see `kinds.labels`) right after `revision`: today's
    state with later changes undone."""
    state = current_state(session)
    later = session.exec(select(Revision).where(col(Revision.id) > revision).order_by(col(Revision.id).desc()))
    for rev in later.all():
        for c in reversed(rev.changes):
            specs = state.setdefault(c["kind"], {})
            if c["before"] is None:
                specs.pop(c["name"], None)
            else:
                specs[c["name"]] = c["before"]
    return state


def latest_revision(session: Session) -> Revision | None:
    return session.exec(select(Revision).order_by(col(Revision.id).desc()).limit(1)).first()


def change(kind: str, name: str, before: Any, after: Any) -> Change:
    """One resource's change between two specs (None: absent)."""
    if before is None:
        return Change(kind=kind, name=name, change="added", after={"spec": after})
    if after is None:
        return Change(kind=kind, name=name, change="removed", before={"spec": before})
    return Change(kind=kind, name=name, change="changed", before={"spec": before}, after={"spec": after})


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = []
    for kind in (k.name for k in KINDS):
        a, b = before.get(kind, {}), after.get(kind, {})
        for name in sorted(a.keys() | b.keys()):
            if a.get(name) != b.get(name):
                changes.append(change(kind, name, a.get(name), b.get(name)))
    return changes


def rollback(session: Session, *, revision: Revision, by: Authorship | None = None) -> RollbackResult:
    """Makes the resources exactly what they were at `revision`, as one new revision; when they
    already are, records nothing and answers with the latest revision, `recorded` false."""
    assert revision.id is not None
    target = state_at(session, revision=revision.id)
    changes: list[dict[str, Any]] = []
    for k in KINDS:
        kind, model = k.name, cast(Any, k.table)
        wanted = target.get(kind, {})
        for row in session.exec(select(model)).all():
            name, spec = key(row), k.snapshot(row)  # labels too: a rollback restores them
            if name not in wanted:
                changes.append({"kind": kind, "name": name, "before": spec, "after": None})
                session.delete(row)
            elif spec != wanted[name]:
                changes.append({"kind": kind, "name": name, "before": spec, "after": wanted[name]})
                for column, value in k.stored(wanted[name]).items():
                    setattr(row, column, value)
                row.resource_version += 1
                row.updated_at = now()
                session.add(row)
        session.flush()
        present = {key(r) for r in session.exec(select(model)).all()}
        for name in sorted(wanted.keys() - present):
            namespace, short = name.split("/", 1)
            changes.append({"kind": kind, "name": name, "before": None, "after": wanted[name]})
            session.add(model(namespace=namespace, name=short, **k.stored(wanted[name])))
    if not changes:  # already there: nothing to record
        session.rollback()
        latest = latest_revision(session)
        assert latest is not None  # `revision` is one
        return RollbackResult.model_validate({**latest.model_dump(), "recorded": False, "changes": []})
    new = record_revision(session, action="rollback", kind="Revision", name=str(revision.id), changes=changes, by=by)
    session.commit()
    session.refresh(new)
    done = [change(c["kind"], c["name"], c["before"], c["after"]) for c in changes]
    return RollbackResult.model_validate({**new.model_dump(), "recorded": True, "changes": done})
