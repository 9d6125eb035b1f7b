"""kill -9 of the control plane during 100 concurrent applies, three times on
the same database (SQLite file, or PostgreSQL in the suite's PostgreSQL pass),
each time at another moment (after the round's first committed revision, after
about 40, after about 75), then:

- on SQLite, ``PRAGMA integrity_check`` is ``ok`` (and ``foreign_key_check``
  finds nothing);
- every apply is whole or absent: its three documents (a Service, an HTTPRoute
  on it, an AuthorizationPolicy for it) are all stored and exactly one revision
  records exactly those three changes, or none is stored and no revision names
  any of them (a revision is one ``revision`` row whose JSON ``changes`` list the
  resources, written in the same transaction as the resources' rows and the
  generation bump: see crud.apply and crud.record_revision);
- every apply that was answered 200 is there (an answered commit survives);
- the mesh generation rose by exactly the revisions the round committed;
- a control plane restarted on the file serves what is stored (the generation
  and latest revision it reports are the file's), and an apply works (one more
  revision, the generation one higher, the resource readable).
The killed round's requests fail as they may (reset, refused); none hangs:
each has a 60 s timeout and the round waits for them with a deadline."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshproc import ControlPlane, http_route, service

APPLIES = 100
#: After how many of the round's revisions are committed the control plane is killed.
KILL_AFTER = (1, 40, 75)


def documents(tag: str) -> list[dict[str, Any]]:
    """One apply's change: a Service, a route on it and a policy for it (three tables, one revision)."""
    policy = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"a-{tag}"},
        "spec": {"action": "ALLOW", "rules": [], "targetRef": {"name": f"s-{tag}"}},
    }
    route = http_route(f"r-{tag}", f"s-{tag}", {"backendRefs": [{"name": f"s-{tag}"}]})
    return [service(f"s-{tag}"), route, policy]


NAMES = {
    "Service": ("service", "s"),
    "HTTPRoute": ("httproute", "r"),
    "AuthorizationPolicy": ("authorizationpolicy", "a"),
}


def revisions(cp: ControlPlane) -> int:
    return int(cp.sql("SELECT count(*) FROM revision")[0][0])


def apply_all(cp: ControlPlane, round_: int) -> tuple[dict[int, int | str], list[Any]]:
    """Start the round's applies at once (a thread each); answers by apply: status, or the error."""
    answers: dict[int, int | str] = {}
    start = threading.Barrier(APPLIES)

    def one(i: int) -> None:
        start.wait(30)
        try:
            r = httpx.post(
                f"{cp.url}/api/v1/apply", json={"documents": documents(f"{round_}-{i}")}, headers=cp.admin, timeout=60
            )
            answers[i] = r.status_code
        except httpx.HTTPError as e:
            answers[i] = type(e).__name__

    pool = ThreadPoolExecutor(APPLIES)
    futures = [pool.submit(one, i) for i in range(APPLIES)]
    pool.shutdown(wait=False)
    return answers, futures


def check_whole(cp: ControlPlane, round_: int, answers: dict[int, int | str]) -> int:
    """Every apply of the round whole or absent, every answered one there; the count there."""
    stored = {
        kind: {r[0] for r in cp.sql(f"SELECT name FROM {table} WHERE name LIKE '{prefix}-{round_}-%'")}
        for kind, (table, prefix) in NAMES.items()
    }
    recorded: dict[str, list[tuple[int, set[str]]]] = {}
    for rev_id, changes in cp.sql("SELECT id, changes FROM revision"):
        changes = json.loads(changes) if isinstance(changes, str) else changes  # (PostgreSQL: parsed)
        named = {f"{c['kind']}:{c['name'].split('/', 1)[1]}" for c in changes}
        for name in named:
            recorded.setdefault(name, []).append((rev_id, named))
    whole = 0
    for i in range(APPLIES):
        tag = f"{round_}-{i}"
        mine = {f"{kind}:{prefix}-{tag}" for kind, (_, prefix) in NAMES.items()}
        present = {f"{kind}:{prefix}-{tag}" for kind, (_, prefix) in NAMES.items() if f"{prefix}-{tag}" in stored[kind]}
        revs = {rev for name in mine for rev, _ in recorded.get(name, [])}
        if present:
            assert present == mine, f"apply {tag}: only {sorted(present)} stored"
            assert len(revs) == 1, f"apply {tag}: recorded by revisions {sorted(revs)}"
            [(_, named)] = {(r, frozenset(n)) for name in mine for r, n in recorded[name]}
            assert named == mine, f"apply {tag}: its revision records {sorted(named)}"
            whole += 1
        else:
            assert not revs, f"apply {tag}: nothing stored, yet revisions {sorted(revs)} record it"
            assert answers.get(i) != 200, f"apply {tag} was answered 200 and is not stored"
    return whole


@pytest.mark.timeout(420)
def test_kill_9_during_concurrent_applies_leaves_whole_revisions_and_a_serving_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "cp"
    data_dir.mkdir()
    cp = ControlPlane(data_dir).start()
    try:
        for round_, after in enumerate(KILL_AFTER):
            generation = cp.ok("GET", "/api/v1/mesh")["generation"]
            base = revisions(cp)
            answers, futures = apply_all(cp, round_)
            deadline = time.monotonic() + 90
            while revisions(cp) - base < after:
                assert time.monotonic() < deadline, f"round {round_}: {after} revisions never committed"
                time.sleep(0.002)
            cp.stop(signal.SIGKILL)
            for f in futures:
                f.result(timeout=90)
            answered = sum(a == 200 for a in answers.values())
            assert answered < APPLIES, f"round {round_}: every apply finished before the kill"

            if cp.database.startswith("sqlite"):  # (PostgreSQL's own crash safety is not ours to test)
                assert cp.sql("PRAGMA integrity_check") == [("ok",)]
                assert cp.sql("PRAGMA foreign_key_check") == []
            committed = check_whole(cp, round_, answers)
            assert committed >= max(after, answered), (committed, after, answered)
            assert revisions(cp) - base == committed
            [(stored_generation,)] = cp.sql("SELECT generation FROM meshstate")
            assert stored_generation == generation + committed

            cp = ControlPlane(data_dir, database_url=cp.database_url).start()
            mesh = cp.ok("GET", "/api/v1/mesh")
            [(latest,)] = cp.sql("SELECT max(id) FROM revision")
            assert (mesh["generation"], mesh["revision"]) == (stored_generation, latest)
            assert len(cp.ok("GET", "/api/v1/services")) == mesh["services"]
            cp.apply(*documents(f"after-{round_}"))
            mesh_after = cp.ok("GET", "/api/v1/mesh")
            # One more revision, the newest (not always latest + 1: PostgreSQL's sequence gave
            # numbers to the killed round's transactions too).
            [(newest, count)] = cp.sql("SELECT max(id), count(*) FROM revision")
            assert (mesh_after["generation"], mesh_after["revision"]) == (stored_generation + 1, newest)
            assert newest > latest and count == base + committed + 1
            assert cp.ok("GET", f"/api/v1/httproutes/default/r-after-{round_}")["name"] == f"r-after-{round_}"
    finally:
        cp.stop(signal.SIGKILL)
