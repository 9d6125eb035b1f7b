"""The stored resources as the last mesh load read them, kept for the next load.

A control plane compiles its sidecars' snapshots from the whole mesh each time
the generation moves; at 10,000 routes, reading every row again (an ORM object
and three JSON columns each) took a second on SQLite and 1.5-3 s on
PostgreSQL, for a change of one route. A load through this cache reads every
row's key, ``(id, resource_version, created_at)``, and only the rows whose key
is new; a kind none of whose rows changed keeps what ``Kind.load`` made of
them, and a kind with a changed row parses only the changed rows' specs again.

Every write of a resource raises its ``resource_version`` (``crud._write``,
``history.rollback``); a row deleted and written again gets a new id, or on
SQLite possibly the same id, with a new ``created_at``. So an unchanged key
means an unchanged row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from meshctl.control.crud import by_name
from meshctl.control.kinds.base import ROW_SPECS, Kind

#: Changed rows are read by id, this many per query (under every database's parameter limit).
CHUNK = 500

Key = tuple[int, datetime]


@dataclass
class _Held:
    """One kind's rows as last read, by id, and what `Kind.load` made of them."""

    rows: dict[int, tuple[Key, Any]] = field(default_factory=dict)
    part: dict[str, Any] | None = None
    #: id(row) -> (row, its parsed spec), for the rows held (see `Kind.parse`).
    specs: dict[int, tuple[Any, Any]] = field(default_factory=dict)


class RowCache:
    """Each kind's rows and loaded part, between loads (one per control-plane process; used from
    one thread at a time: the mesh loads are serialised by the hub)."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        #: Rows read in full by the last `part` calls (the bench and tests read it).
        self.read = 0

    def part(self, session: Session, kind: Kind) -> dict[str, Any]:
        """`kind.load(rows)` of the kind's rows as `session` sees them, reading only changed rows."""
        table: Any = kind.table
        keys = session.execute(sa.select(table.id, table.resource_version, table.created_at)).all()
        held = self._held.setdefault(kind.name, _Held())
        changed = [i for i, version, created in keys if _key(held, i) != (version, created)]
        if not changed and len(keys) == len(held.rows) and held.part is not None:
            return held.part
        live = {i for i, _, _ in keys}
        rows = {i: entry for i, entry in held.rows.items() if i in live}
        for start in range(0, len(changed), CHUNK):
            for row in session.exec(select(table).where(col(table.id).in_(changed[start : start + CHUNK]))).all():
                rows[row.id] = ((row.resource_version, row.created_at), row)
        self.read += len(changed)
        held.rows = rows
        kept = {id(row) for _, row in rows.values()}
        held.specs = {i: entry for i, entry in held.specs.items() if i in kept}
        token = ROW_SPECS.set(held.specs)  # a row unchanged since the last load is not parsed again
        try:
            held.part = kind.load(sorted((row for _, row in rows.values()), key=by_name))
        finally:
            ROW_SPECS.reset(token)
        return held.part


def _key(held: _Held, row_id: int) -> Key | None:
    entry = held.rows.get(row_id)
    return entry[0] if entry is not None else None
