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
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from meshctl.control.crud import by_name
from meshctl.control.kinds.base import ROW_MEMO, Kind

#: Changed rows are read by id, this many per query (under every database's parameter limit).
CHUNK = 500

Key = tuple[int, datetime]


@dataclass
class _Held:
    """One kind's rows as last read, by id, and what `Kind.load` made of them."""

    #: id -> (key, row, its order: `crud.by_name`, read once rather than at every sort).
    rows: dict[int, tuple[Key, Any, tuple[str, str]]] = field(default_factory=dict)
    part: dict[str, Any] | None = None
    #: What a load made of each row held, kept for the next (see `kinds.base.per_row`).
    memo: dict[tuple[str, int], tuple[Any, Any]] = field(default_factory=dict)


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
        # Core, not the ORM: three columns of every row, at 10,000 rows a third of the ORM's time.
        keys = session.connection().execute(sa.select(table.id, table.resource_version, table.created_at)).all()
        held = self._held.setdefault(kind.name, _Held())
        changed = [i for i, version, created in keys if _key(held, i) != (version, created)]
        if not changed and len(keys) == len(held.rows) and held.part is not None:
            return held.part
        live = {i for i, _, _ in keys}
        rows = {i: entry for i, entry in held.rows.items() if i in live}
        for start in range(0, len(changed), CHUNK):
            for row in session.exec(select(table).where(col(table.id).in_(changed[start : start + CHUNK]))).all():
                rows[row.id] = ((row.resource_version, row.created_at), row, by_name(row))
        self.read += len(changed)
        held.rows = rows
        kept = {id(row) for _, row, _ in rows.values()}
        held.memo = {k: entry for k, entry in held.memo.items() if k[1] in kept}
        token = ROW_MEMO.set(held.memo)  # a row unchanged since the last load is not parsed again
        try:
            held.part = kind.load([row for _, row, _ in sorted(rows.values(), key=itemgetter(2))])
        finally:
            ROW_MEMO.reset(token)
        return held.part


def _key(held: _Held, row_id: int) -> Key | None:
    entry = held.rows.get(row_id)
    return entry[0] if entry is not None else None
