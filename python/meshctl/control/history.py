"""The revision log read back: the state at any revision (today's state with
later changes undone), differences between two, and rollback to one."""

from __future__ import annotations

from typing import Any, cast

from sqlmodel import Session, col, select

from meshctl.control.crud import current_state, record_revision
from meshctl.control.kinds.common import key, now
from meshctl.control.kinds.registry import KINDS
from meshctl.control.models import Change, Revision


def list_revisions(session: Session) -> list[Revision]:
    return list(session.exec(select(Revision).order_by(col(Revision.id))).all())


def get_revision(session: Session, *, revision: int) -> Revision | None:
    return session.get(Revision, revision)


def state_at(session: Session, *, revision: int) -> dict[str, dict[str, Any]]:
    """Every resource's spec right after `revision`: today's state with later changes undone."""
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


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = []
    for kind in (k.name for k in KINDS):
        a, b = before.get(kind, {}), after.get(kind, {})
        for name in sorted(a.keys() | b.keys()):
            if name not in a:
                changes.append(Change(kind=kind, name=name, change="added", after={"spec": b[name]}))
            elif name not in b:
                changes.append(Change(kind=kind, name=name, change="removed", before={"spec": a[name]}))
            elif a[name] != b[name]:
                changes.append(
                    Change(kind=kind, name=name, change="changed", before={"spec": a[name]}, after={"spec": b[name]})
                )
    return changes


def rollback(session: Session, *, revision: Revision) -> Revision:
    """Makes the resources exactly what they were at `revision`, as one new revision."""
    assert revision.id is not None
    target = state_at(session, revision=revision.id)
    changes: list[dict[str, Any]] = []
    for k in KINDS:
        kind, model = k.name, cast(Any, k.table)
        wanted = target.get(kind, {})
        for row in session.exec(select(model)).all():
            name, spec = key(row), k.recorded(row)
            if name not in wanted:
                changes.append({"kind": kind, "name": name, "before": spec, "after": None})
                session.delete(row)
            elif spec != wanted[name]:
                changes.append({"kind": kind, "name": name, "before": spec, "after": wanted[name]})
                for column, value in k.columns(wanted[name]).items():
                    setattr(row, column, value)
                row.resource_version += 1
                row.updated_at = now()
                session.add(row)
        session.flush()
        present = {key(r) for r in session.exec(select(model)).all()}
        for name in sorted(wanted.keys() - present):
            namespace, short = name.split("/", 1)
            changes.append({"kind": kind, "name": name, "before": None, "after": wanted[name]})
            session.add(model(namespace=namespace, name=short, **k.columns(wanted[name])))
    if not changes:  # already there: nothing to record
        session.rollback()
        return list_revisions(session)[-1]
    record_revision(session, action="rollback", kind="Revision", name=str(revision.id), changes=changes)
    session.commit()
    return list_revisions(session)[-1]
