"""Mesh loads through the row cache (control/rowcache.py) read only the rows
changed since the last load, and compile to exactly what a load of every row
compiles to (each taking what still holds of the last load's compiled routes,
control/compile_memo.py), through creates, updates, deletes, a rollback and a resource
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
from meshctl.control.compiler import EndpointView, SidecarSpec, compile_sidecar
from meshctl.control.db import make_engine, migrate
from meshctl.control.kinds.common import ApplyDocument
from meshctl.control.kinds.registry import BY_NAME
from meshctl.control.push import load_mesh
from meshctl.control.rowcache import RowCache
from meshproc import http_route, service

LEAST_REQUEST = {"targetRef": {"name": "api"}, "loadBalancer": {"type": "LeastRequest"}}
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


class Chain:
    """Meshes loaded one after another as the push hub loads them: through one row cache, each
    taking what still holds of the last one's compiled routes (`Mesh.earlier`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.rows, self.last = engine, RowCache(), None

    def compiled(self, endpoints: dict[str, list[EndpointView]] | None = None) -> bytes:
        with Session(self.engine) as session:
            mesh = load_mesh(session, rows=self.rows)
        if endpoints is not None:
            mesh.endpoints = endpoints
        if self.last is not None:
            mesh.earlier = self.last.service_routes
        self.last = mesh
        return orjson.dumps(compile_sidecar(mesh, CALLER), option=orjson.OPT_SORT_KEYS)


def fresh(engine: Engine, endpoints: dict[str, list[EndpointView]] | None = None) -> bytes:
    with Session(engine) as session:
        mesh = load_mesh(session)
    if endpoints is not None:
        mesh.endpoints = endpoints
    return orjson.dumps(compile_sidecar(mesh, CALLER), option=orjson.OPT_SORT_KEYS)


def test_a_cached_load_compiles_as_a_full_one_and_reads_only_what_changed(engine: Engine) -> None:
    chain = Chain(engine)

    def check(read: int, endpoints: dict[str, list[EndpointView]] | None = None) -> bytes:
        chain.rows.read = 0
        got = chain.compiled(endpoints)
        assert got == fresh(engine, endpoints)
        assert chain.rows.read == read
        return got

    apply(engine, service("web"), service("api"), service("db"), split(0))
    check(read=4)  # the first load reads every row
    check(read=0)  # nothing changed
    apply(engine, split(30))
    check(read=1)
    apply(engine, {**service("db"), "metadata": {"name": "db", "labels": {"tier": "data"}}})
    check(read=1)
    # Endpoints are no rows of a kind: a new one changes the clusters, so the routes compile again.
    v2 = {"default/api": [EndpointView("127.0.0.1", 19002, labels={"v": "2"})]}
    assert b"19002" in check(read=0, endpoints=v2)
    assert b"19002" not in check(read=0)
    delete(engine, "HTTPRoute", "api-split")
    assert b"api-split" not in check(read=0)  # a row gone: nothing to read, the kind loaded again without it
    apply(engine, split(70))  # made again under the same name: a new row
    check(read=1)
    apply(engine, {"kind": "TrafficPolicy", "metadata": {"name": "api-lb"}, "spec": LEAST_REQUEST})
    assert b"least_request" in check(read=1)  # a policy of a backend: its clusters, then the routes, anew
    with Session(engine) as session:
        first = history.list_revisions(session)[0]
        history.rollback(session, revision=first)  # routes back to 0 % on v2, labels and policy gone
    assert b'"weight":100' in check(read=2)


def test_an_unchanged_row_keeps_its_view_and_spec_from_one_load_to_the_next(engine: Engine) -> None:
    chain = Chain(engine)
    other = http_route("db-route", "db", {"backendRefs": [{"name": "db"}]})
    apply(engine, service("web"), service("api"), service("db"), split(0), other)
    chain.compiled()
    assert chain.last is not None
    before = {v.key: v for v in chain.last.http_routes}
    apply(engine, split(30))
    chain.compiled()
    after = {v.key: v for v in chain.last.http_routes}
    assert after["default/db-route"] is before["default/db-route"]  # not made again
    changed = after["default/api-split"]
    assert changed is not before["default/api-split"] and changed.spec is not before["default/api-split"].spec
    # Outside the row cache nothing is kept: a plain load makes its own views.
    with Session(engine) as session:
        plain = {v.key: v for v in load_mesh(session).http_routes}
    assert plain["default/db-route"] is not after["default/db-route"]
    assert plain["default/db-route"] == after["default/db-route"]
