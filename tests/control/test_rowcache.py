"""Mesh loads through the row cache (control/rowcache.py) read only the rows
changed since the last load, and compile to exactly what a load of every row
compiles to, through creates, updates, deletes, a rollback and a resource
deleted and made again under its name. On a real database: an SQLite file, or
PostgreSQL in the suite's PostgreSQL pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

import pg
from meshctl.control import crud, history
from meshctl.control.compiler import SidecarSpec, compile_sidecar
from meshctl.control.db import make_engine, migrate
from meshctl.control.kinds.common import ApplyDocument
from meshctl.control.kinds.registry import BY_NAME
from meshctl.control.push import load_mesh
from meshctl.control.rowcache import RowCache
from meshproc import http_route, service

CALLER = SidecarSpec("default", "web", "127.0.0.1", 15001, 9001, upstreams=(("api", 16001), ("db", 16002)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = pg.database("rows") if pg.on_postgres() else f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def split(v2: int) -> dict[str, Any]:
    refs = [
        {"name": "api", "subset": {"v": "1"}, "weight": 100 - v2},
        {"name": "api", "subset": {"v": "2"}, "weight": v2},
    ]
    return http_route("api-split", "api", {"backendRefs": refs})


def apply(engine: Engine, *documents: dict[str, Any]) -> None:
    with Session(engine) as session:
        crud.apply(session, documents=[ApplyDocument.model_validate(d) for d in documents])


def delete(engine: Engine, kind: str, name: str) -> None:
    with Session(engine) as session:
        k = BY_NAME[kind]
        crud.delete(session, kind=k, row=crud.get(session, k.table, namespace="default", name=name))


def compiled(engine: Engine, rows: RowCache | None) -> bytes:
    with Session(engine) as session:
        return orjson.dumps(compile_sidecar(load_mesh(session, rows=rows), CALLER), option=orjson.OPT_SORT_KEYS)


def test_a_cached_load_compiles_as_a_full_one_and_reads_only_what_changed(engine: Engine) -> None:
    rows = RowCache()

    def check(read: int) -> None:
        rows.read = 0
        assert compiled(engine, rows) == compiled(engine, None)
        assert rows.read == read

    apply(engine, service("web"), service("api"), service("db"), split(0))
    check(read=4)  # the first load reads every row
    check(read=0)  # nothing changed
    apply(engine, split(30))
    check(read=1)
    apply(engine, {**service("db"), "metadata": {"name": "db", "labels": {"tier": "data"}}})
    check(read=1)
    delete(engine, "HTTPRoute", "api-split")
    check(read=0)  # a row gone: nothing to read, the kind loaded again without it
    assert b"api-split" not in compiled(engine, rows)
    apply(engine, split(70))  # made again under the same name: a new row
    check(read=1)
    with Session(engine) as session:
        first = history.list_revisions(session)[0]
        history.rollback(session, revision=first)  # routes back to 0 % on v2, labels off
    check(read=2)
    assert b'"weight":100' in compiled(engine, rows)
