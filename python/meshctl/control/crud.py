"""Writes and reads of resources, for every kind alike (what differs, the kind
says: see ``kinds.base.Kind``). Each write is one transaction that records a
mesh-wide revision (what changed, before and after) and bumps the mesh
generation that sidecar snapshots are versioned by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, SQLModel, col, select

from meshctl.control import notify
from meshctl.control.errors import Conflict, Invalid, items
from meshctl.control.kinds import registry
from meshctl.control.kinds.base import Kind, Loc, Ref
from meshctl.control.kinds.common import ApplyDocument, ApplyResult, key, now
from meshctl.control.kinds.labels import record as with_labels
from meshctl.control.kinds.registry import KINDS
from meshctl.control.models import MeshState, Revision

# === generation: what sidecar snapshots are versioned by ===


def generation(session: Session) -> int:
    value = session.execute(select(MeshState.generation).where(col(MeshState.id) == 1)).scalar_one_or_none()
    return int(value or 0)


def bump(session: Session) -> int:
    """Raise the generation in this transaction; the caller's commit publishes it.

    One UPDATE ... SET generation = generation + 1: it takes the row's write
    lock, so concurrent writers queue instead of both writing the same number
    (which would let the generation go backwards)."""
    raised = session.execute(
        sa.update(MeshState).where(col(MeshState.id) == 1).values(generation=col(MeshState.generation) + 1)
    )
    if raised.rowcount == 0:  # type: ignore[attr-defined]
        session.add(MeshState(id=1, generation=1))
        session.flush()
    value = int(session.execute(select(MeshState.generation).where(col(MeshState.id) == 1)).scalar_one())
    _raised(session, value)
    return value


def bump_past(session: Session, seen: int) -> bool:
    """Raise the generation only if it is still `seen` (a compare-and-set on the row): of several
    replicas noticing the same change without a write (endpoints expiring), one bumps."""
    still = (col(MeshState.id) == 1, col(MeshState.generation) == seen)
    raised = session.execute(sa.update(MeshState).where(*still).values(generation=seen + 1))
    if raised.rowcount == 0:  # type: ignore[attr-defined]
        return False
    _raised(session, seen + 1)
    return True


def _raised(session: Session, value: int) -> None:
    # This process's watchers are woken after the commit (deps.get_session), every replica's by
    # the announcement, delivered on commit too.
    session.info["generation"] = value
    notify.announce(session, "generation", str(value))


# === revisions ===


def current_state(session: Session) -> dict[str, dict[str, Any]]:
    """Every resource as revisions record it (its spec, with its labels), by kind and "namespace/name"."""
    return {k.name: {key(r): k.snapshot(r) for r in list_all(session, k.table)} for k in KINDS}


@dataclass(frozen=True)
class Authorship:
    """Who makes a write (the caller's token name, `deps.Caller.name`) and why (`--message`),
    as the revision it records keeps them."""

    author: str | None = None
    message: str | None = None


def record_revision(
    session: Session,
    *,
    action: str,
    kind: str,
    name: str,
    changes: list[dict[str, Any]],
    by: Authorship | None = None,
) -> Revision:
    by = by or Authorship()
    revision = Revision(action=action, kind=kind, name=name, changes=changes, author=by.author, message=by.message)
    session.add(revision)
    bump(session)
    return revision


# === reads ===


def get(session: Session, model: type[SQLModel], *, namespace: str, name: str) -> Any:
    m: Any = model
    return session.exec(select(m).where(m.namespace == namespace, m.name == name)).first()


def by_name(row: Any) -> tuple[str, str]:
    """Rows in namespace and name order, by code point on every database (a PostgreSQL collation
    may put `a-b` after `ab`; the compiler's rule order must not depend on the database)."""
    return (row.namespace, row.name)


def list_all(session: Session, model: type[SQLModel], *, namespace: str | None = None) -> list[Any]:
    m: Any = model
    q = select(m)
    if namespace:
        q = q.where(m.namespace == namespace)
    return sorted(session.exec(q).all(), key=by_name)


#: Up to this many documents of a kind, an apply reads their rows one by one, not the whole table.
FEW = 50


def _stored(session: Session, kind: str, names: set[str]) -> dict[str, Any]:
    """The stored rows of `kind` named "ns/name" in `names` (by key): a change of one route in a mesh
    of 10,000 reads one row, not 10,000."""
    table = registry.kind(kind).table
    if len(names) > FEW:
        return {key(r): r for r in list_all(session, table) if key(r) in names}
    rows = (get(session, table, namespace=n.split("/", 1)[0], name=n.split("/", 1)[1]) for n in names)
    return {key(r): r for r in rows if r is not None}


# === references ===


class _Checker:
    """Checks what specs reference against what is stored in the session, each part read once
    and only when needed (so that checking thousands of documents costs thousands of set
    lookups, not queries)."""

    def __init__(self, session: Session):
        self.session = session
        self._targets: dict[str, dict[str, set[str]]] = {}
        self._referrers: dict[str, dict[str, list[tuple[str, Ref]]]] = {}
        self._holders: dict[str, dict[str, str]] = {}

    def targets(self, target: Kind) -> dict[str, set[str]]:
        """Stored resources of a kind: "ns/name" -> the sections references may pick."""
        if target.name not in self._targets:
            rows = list_all(self.session, target.table)
            self._targets[target.name] = {key(r): target.sections(target.recorded(r)) for r in rows}
        return self._targets[target.name]

    def referrers(self, target: Kind) -> dict[str, list[tuple[str, Ref]]]:
        """Stored references to resources of a kind: "ns/name" -> [("HTTPRoute ns/name", reference)],
        in kind, then namespace and name order."""
        if target.name not in self._referrers:
            found: dict[str, list[tuple[str, Ref]]] = {}
            for k in KINDS:
                if target.name in k.refers_to:
                    for row in list_all(self.session, k.table):
                        for ref in k.references(k.parse(row), row.namespace, row.name):
                            if ref.kind == target.name:
                                found.setdefault(ref.target, []).append((f"{k.name} {key(row)}", ref))
            self._referrers[target.name] = found
        return self._referrers[target.name]

    def holders(self, holder: Kind) -> dict[str, str]:
        """For an exclusive kind: referenced "ns/name" -> the resource of the kind that holds it."""
        if holder.name not in self._holders:
            self._holders[holder.name] = {
                ref.target: key(row)
                for row in list_all(self.session, holder.table)
                for ref in holder.held(holder.references(holder.parse(row), row.namespace, row.name))
            }
        return self._holders[holder.name]

    def check(self, k: Kind, spec: Any, namespace: str, name: str, *, at: Loc, name_at: Loc) -> list[dict[str, Any]]:
        """422 items for what `spec` (at `at` in the request) names that does not exist, and for its
        own problems; a Conflict when an exclusive kind's target is taken. `name_at` is where the
        resource's own name was given."""
        errors = []
        refs = k.references(spec, namespace, name)
        for ref in refs:
            target = registry.kind(ref.kind)
            stored = self.targets(target)
            what = f"{ref.kind.lower()} {ref.target}"
            if ref.target not in stored:
                if ref.why:
                    errors.append({"loc": name_at, "msg": f"{what} does not exist: {ref.why}", "type": "reference"})
                else:
                    errors.append(
                        {"loc": [*at, *ref.loc, "name"], "msg": f"{what} does not exist", "type": "reference"}
                    )
            elif ref.section is not None and ref.section not in stored[ref.target]:
                msg = f"{what} has no {target.section_noun} {ref.section!r}"
                errors.append({"loc": [*at, *ref.loc, "sectionName"], "msg": msg, "type": "reference"})
        errors += [{"loc": [*at, *loc], "msg": msg, "type": "value_error"} for loc, msg in k.problems(spec)]
        if k.section_noun is not None:  # what others pick of it must still be there
            sections = k.sections(k.value(spec))
            for who, ref in self.referrers(k).get(f"{namespace}/{name}", []):
                if ref.section is not None and ref.section not in sections:
                    picked = f"{ref.loc[0]}[{ref.loc[1]}].sectionName"
                    msg = f"{who} attaches to {k.section_noun} {ref.section!r} ({picked})"
                    errors.append({"loc": [*at, *k.sections_at], "msg": msg, "type": "reference"})
        if k.exclusive:
            holders = self.holders(k)
            for ref in k.held(refs):
                holder = holders.setdefault(ref.target, f"{namespace}/{name}")
                if holder != f"{namespace}/{name}":
                    raise Conflict(f"{ref.kind.lower()} {ref.target} already has {k.name} {holder}")
        return errors

    def users(self, k: Kind, row: Any) -> list[str]:
        """The resources that reference `row` ("HTTPRoute ns/name"), each once."""
        return list(dict.fromkeys(who for who, _ in self.referrers(k).get(key(row), [])))


# === writes ===


def _check_version(row: Any, noun: str, version: int | None) -> None:
    if version is not None and version != row.resource_version:
        raise Conflict(
            f"{noun} {key(row)} is at resource_version {row.resource_version}, not {version}: read it again and reapply"
        )


def _write(session: Session, k: Kind, row: Any, namespace: str, name: str, value: Any) -> Any:
    """Create or change one resource in the session (`value` as revisions record it, see
    `Kind.snapshot`); no commit, no revision."""
    if row is None:
        row = k.table(namespace=namespace, name=name, **k.stored(value))
    else:
        for column, v in k.stored(value).items():
            setattr(row, column, v)
        row.resource_version += 1
        row.updated_at = now()
    session.add(row)
    return row


def _commit(session: Session, row: Any, *, k: Kind, action: str, before: Any, by: Authorship | None) -> Any:
    session.flush()
    change = {"kind": k.name, "name": key(row), "before": before, "after": k.snapshot(row)}
    record_revision(session, action=action, kind=k.name, name=key(row), changes=[change], by=by)
    session.commit()
    session.refresh(row)
    return row


def create(
    session: Session,
    *,
    kind: Kind,
    namespace: str,
    name: str,
    spec: BaseModel,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    by: Authorship | None = None,
) -> Any:
    if get(session, kind.table, namespace=namespace, name=name):
        raise Conflict(f"{kind.noun} {namespace}/{name} already exists")
    errors = _Checker(session).check(kind, spec, namespace, name, at=["body", "spec"], name_at=["body", "name"])
    if errors:
        raise Invalid(errors)
    row = _write(session, kind, None, namespace, name, with_labels(kind.value(spec), labels, annotations))
    return _commit(session, row, k=kind, action="create", before=None, by=by)


def update(
    session: Session,
    *,
    kind: Kind,
    row: Any,
    spec: BaseModel,
    resource_version: int,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    by: Authorship | None = None,
) -> Any:
    """Replaces a resource's spec; its labels and annotations when given (None: they stay)."""
    _check_version(row, kind.noun, resource_version)
    at: Loc = ["body", "spec"]
    if errors := _Checker(session).check(kind, spec, row.namespace, row.name, at=at, name_at=["path", "name"]):
        raise Invalid(errors)
    before = kind.snapshot(row)
    kept = (row.labels if labels is None else labels, row.annotations if annotations is None else annotations)
    _write(session, kind, row, row.namespace, row.name, with_labels(kind.value(spec), *kept))
    return _commit(session, row, k=kind, action="update", before=before, by=by)


def delete(session: Session, *, kind: Kind, row: Any, by: Authorship | None = None) -> None:
    if users := _Checker(session).users(kind, row):
        raise Conflict(f"{kind.name.lower()} {key(row)} is used by {', '.join(users)}")
    kind.on_delete(session, row)
    before = kind.snapshot(row)
    session.delete(row)
    session.flush()
    change = {"kind": kind.name, "name": key(row), "before": before, "after": None}
    record_revision(session, action="delete", kind=kind.name, name=key(row), changes=[change], by=by)
    session.commit()


# === apply: many documents, one transaction, one revision ===


def _validated(doc: ApplyDocument, at: Loc) -> tuple[Any, list[dict[str, Any]]]:
    k = registry.kind(doc.kind)
    try:
        return k.spec.model_validate(doc.spec), []
    except ValidationError as e:
        problems = [
            {"loc": [*at, "spec", *loc], "msg": msg, "type": "value_error"} for loc, msg in k.partial_problems(doc.spec)
        ]
        return None, items(e.errors(), [*at, "spec"]) + problems


def apply(
    session: Session, *, documents: list[ApplyDocument], dry_run: bool = False, by: Authorship | None = None
) -> list[ApplyResult]:
    """Creates or updates every document (in registry order: services first, so routes may name
    them), all or nothing. Unchanged documents are reported and not rewritten. A dry run writes
    nothing and gives each created or configured result its spec before and after, as revisions
    record them (what ``meshctl diff -f`` shows)."""
    errors: list[dict[str, Any]] = []
    parsed = []
    seen: set[tuple[str, str]] = set()
    for i, doc in enumerate(documents):
        at: Loc = ["body", "documents", i]
        ident = (doc.kind, f"{doc.metadata.namespace}/{doc.metadata.name}")
        if ident in seen:
            errors.append(
                {"loc": [*at, "metadata", "name"], "msg": f"{ident[0]} {ident[1]} is given twice", "type": "duplicate"}
            )
        seen.add(ident)
        spec, errs = _validated(doc, at)
        errors += errs
        parsed.append((i, doc, spec))
    if errors:
        raise Invalid(errors)

    order = [k.name for k in KINDS]
    parsed.sort(key=lambda p: (order.index(p[1].kind), p[0]))
    given = {d.kind for d in documents}
    stored = {
        name: _stored(session, name, {f"{d.metadata.namespace}/{d.metadata.name}" for d in documents if d.kind == name})
        for name in given
    }
    results: dict[int, ApplyResult] = {}
    changes: list[dict[str, Any]] = []
    inserts: dict[str, list[dict[str, Any]]] = {}
    for i, doc, spec in parsed:
        k, meta = registry.kind(doc.kind), doc.metadata
        row = stored[doc.kind].get(f"{meta.namespace}/{meta.name}")
        value = with_labels(k.value(spec), meta.labels, meta.annotations)
        name = f"{meta.namespace}/{meta.name}"
        if row is not None:
            _check_version(row, doc.kind, meta.resource_version)
        before = k.snapshot(row) if row is not None else None
        if row is not None and before == value:
            results[i] = ApplyResult(kind=doc.kind, name=name, action="unchanged")
            continue
        if row is None:  # new rows go in one multi-row INSERT per kind: ORM objects cost ~0.2 ms each
            stamp = now()
            inserts.setdefault(doc.kind, []).append(
                {
                    "namespace": meta.namespace,
                    "name": meta.name,
                    **k.stored(value),
                    "resource_version": 1,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        else:
            _write(session, k, row, meta.namespace, meta.name, value)
        changes.append({"kind": doc.kind, "name": name, "before": before, "after": value})
        results[i] = ApplyResult(kind=doc.kind, name=name, action="created" if row is None else "configured")
        if dry_run:
            results[i].before, results[i].after = before, value
    session.flush()
    for k in KINDS:
        if k.name in inserts:
            session.execute(sa.insert(k.table), inserts[k.name])
    checker = _Checker(session)
    for i, doc, spec in parsed:
        meta = doc.metadata
        where: Loc = ["body", "documents", i]
        at, name_at = [*where, "spec"], [*where, "metadata", "name"]
        errors += checker.check(registry.kind(doc.kind), spec, meta.namespace, meta.name, at=at, name_at=name_at)
    if errors:
        session.rollback()
        raise Invalid(errors)
    if dry_run or not changes:
        session.rollback()
    else:
        what = changes[0]["name"] if len(changes) == 1 else f"{len(changes)} resources"
        record_revision(
            session,
            action="apply",
            kind=changes[0]["kind"] if len(changes) == 1 else "*",
            name=what,
            changes=changes,
            by=by,
        )
        session.commit()
    return [results[i] for i in range(len(documents))]
