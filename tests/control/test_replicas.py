"""Control-plane replicas on one PostgreSQL database: announcements between
them (control/notify.py), the generation and token caches they keep, jobs
run once, and concurrent writes through several at once."""

from __future__ import annotations

import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

import pg
from helpers import wait_until
from meshctl.control import notify
from meshctl.control.db import make_engine
from meshproc import ControlPlane


def test_conninfo_drops_the_driver_and_keeps_parameters() -> None:
    info = notify.conninfo("postgresql+psycopg://me:s%40cret@db.example:5433/mesh?sslmode=require")
    parts = dict(p.split("=", 1) for p in info.split())
    assert parts == {
        "host": "db.example",
        "port": "5433",
        "user": "me",
        "dbname": "mesh",
        "password": "s@cret",
        "sslmode": "require",
    }


def test_sqlite_announces_nothing_and_starts_no_thread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    listener = notify.Listener(url)
    listener.start()
    assert listener._thread is None
    with Session(make_engine(url)) as session:
        notify.announce(session, "tokens")  # no error, nothing sent
        session.commit()
    listener.stop()


def test_announcement_is_heard_on_commit_only_and_again_after_a_reconnect() -> None:
    url = pg.database("notify")
    heard: queue.Queue[tuple[str, str | None]] = queue.Queue()
    listener = notify.Listener(url)
    listener.on("generation", lambda p: heard.put(("generation", p)))
    listener.on("tokens", lambda p: heard.put(("tokens", p)))
    listener.start()
    assert listener.connected.is_set()
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            notify.announce(session, "generation", "7")
            session.rollback()  # never committed: never announced
            notify.announce(session, "generation", "8")
            notify.announce(session, "other", "x")  # nobody listens to it
            session.commit()
        assert heard.get(timeout=10) == ("generation", "8")
        with pytest.raises(queue.Empty):
            heard.get(timeout=0.3)

        # The server ends the listening connection: it reconnects and says something may be missed.
        pg.server().psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{notify.APPLICATION_NAME}' AND datname = '{url.rsplit('/', 1)[1]}'"
        )
        got = {heard.get(timeout=30), heard.get(timeout=30)}
        assert got == {("generation", None), ("tokens", None)}
        wait_until(listener.connected.is_set, timeout=30, what="the listener to reconnect")
        with Session(engine) as session:
            notify.announce(session, "tokens")
            session.commit()
        assert heard.get(timeout=10) == ("tokens", "")
    finally:
        listener.stop()
        engine.dispose()
    assert not any(t.name == "meshctl-listener" for t in threading.enumerate())


# === replicas: real control-plane processes on one PostgreSQL database ===

Replicas = Callable[..., list[ControlPlane]]


@pytest.fixture
def replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Replicas]:
    """`replicas(n, poll=None, url=None)`: n control planes on one database (a new one unless `url`),
    started one after the other; they share the first one's tokens. `poll`: their generation poll,
    in seconds (made slow to show that announcements, not the poll, carry a change)."""
    started: list[ControlPlane] = []

    def make(n: int, poll: float | None = None, url: str | None = None, together: bool = False) -> list[ControlPlane]:
        if poll is not None:
            monkeypatch.setenv("MESHCTL_GENERATION_POLL_SECONDS", str(poll))
        url = url or pg.database("replicas")
        made: list[ControlPlane] = []
        for _ in range(n):
            data_dir = tmp_path / f"replica-{len(started)}"
            data_dir.mkdir()
            if started:  # what every replica is given: the tokens, and the CA's key-encryption key
                for name in ("admin.token", "reader.token", "ca-kek"):
                    if (started[0].data_dir / name).exists():
                        shutil.copy2(started[0].data_dir / name, data_dir / name)
            cp = ControlPlane(data_dir, database_url=url)
            started.append(cp)
            made.append(cp)
            if not together:
                cp.start()
        if together:  # (the tokens are made by a replica started before)
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(ControlPlane.start, made))
        return made

    yield make
    for cp in started:
        cp.stop()


def add_service(cp: ControlPlane, name: str) -> None:
    r = cp.call("POST", "/api/v1/services", json={"name": name, "namespace": "default"})
    assert r.status_code == 201, r.text


def register(cp: ControlPlane, service: str, port: int, **more: Any) -> dict[str, Any]:
    body = {"service": service, "address": "127.0.0.1", "inbound_port": port, "app_port": port + 1000, **more}
    return dict(cp.ok("PUT", "/api/v1/sidecars", json={"ttl_seconds": 300, **body}))


def snapshot(cp: ControlPlane, sidecar: int, version: int = -1, wait: float = 0) -> httpx.Response:
    return httpx.get(
        f"{cp.url}/api/v1/sidecars/{sidecar}/snapshot",
        params={"version": version, "wait": wait},
        headers=cp.admin,
        timeout=wait + 30,
    )


def long_polls(cp: ControlPlane) -> float:
    """The long-polls waiting on `cp` (its watchers gauge)."""
    found = re.search(r'^meshctl_control_watchers\{kind="long_poll"\} (\S+)$', cp.call("GET", "/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def generation(cp: ControlPlane) -> int:
    return int(cp.ok("GET", "/api/v1/mesh")["generation"])


def test_a_change_through_one_replica_reaches_a_watcher_on_another_at_once(replicas: Replicas) -> None:
    a, b = replicas(2, poll=30)  # the poll would take up to 30 s: only the announcement is this fast
    add_service(a, "shop")
    # (with an HTTP proxy port, every new service changes its config: only a change of its own
    # config wakes a watcher, see control/fanout.py)
    sidecar = register(b, "shop", 15001, http_proxy_port=17001)["id"]
    held = snapshot(b, sidecar).json()["version"]
    assert held == generation(a)

    answered: queue.Queue[tuple[float, httpx.Response]] = queue.Queue()
    watcher = threading.Thread(target=lambda: answered.put((time.monotonic(), snapshot(b, sidecar, held, wait=60))))
    watcher.start()
    wait_until(lambda: long_polls(b) == 1, timeout=30, what="the long-poll to wait on b")  # before the change lands
    start = time.monotonic()
    add_service(a, "pricing")
    at, response = answered.get(timeout=30)
    watcher.join()
    assert response.status_code == 200, response.text
    assert response.json()["version"] == generation(a) == held + 1
    assert at - start < 0.5, f"the watcher on the other replica heard after {at - start:.2f} s"


def test_a_token_revoked_through_one_replica_is_refused_by_every_replica_within_a_second(
    replicas: Replicas,
) -> None:
    a, b, c = replicas(3)
    made = a.ok("POST", "/api/v1/tokens", json={"role": "reader", "name": "short-lived"})
    use = {"Authorization": f"Bearer {made['token']}"}
    for cp in (a, b, c):  # remembered as good by every replica (for 5 s without announcements)
        assert httpx.get(f"{cp.url}/api/v1/services", headers=use).status_code == 200
    start = time.monotonic()
    assert a.call("DELETE", f"/api/v1/tokens/{made['id']}").status_code == 204
    for cp in (b, c):
        wait_until(
            lambda cp=cp: httpx.get(f"{cp.url}/api/v1/services", headers=use).status_code == 401,
            timeout=1.0,
            what=f"{cp.url} to refuse the revoked token",
        )
    assert time.monotonic() - start < 1.0

    # A service deleted through one replica takes its join tokens with it on every replica.
    add_service(a, "shop")
    join = {"Authorization": f"Bearer {a.join_token('shop')}"}
    assert httpx.put(
        f"{c.url}/api/v1/sidecars",
        json={"service": "shop", "address": "127.0.0.1", "inbound_port": 15001, "app_port": 16001},
        headers=join,
    ).is_success
    assert b.call("DELETE", "/api/v1/services/default/shop").status_code == 204
    wait_until(
        lambda: httpx.get(f"{c.url}/api/v1/sidecars", headers=join).status_code == 401,
        timeout=1.0,
        what="the deleted service's join token to be refused",
    )


def test_a_sidecar_reregistering_through_one_replica_is_seen_so_by_another(replicas: Replicas) -> None:
    url = pg.database("specs")
    heard: queue.Queue[tuple[str, str | None]] = queue.Queue()
    listener = notify.Listener(url)  # what the replicas announce, as a third one would hear it
    for topic in ("sidecars", "tokens"):
        listener.on(topic, lambda p, topic=topic: heard.put((topic, p)))
    listener.start()
    try:
        a, b = replicas(2, poll=30, url=url)
        add_service(a, "shop")
        add_service(a, "pricing")
        sidecar = register(a, "shop", 15001)["id"]
        assert heard.get(timeout=10)[0] == "sidecars"  # new to a: the others forget theirs
        assert b"17777" not in snapshot(b, sidecar).content  # b remembers the sidecar without upstreams
        register(a, "shop", 15001, upstreams={"pricing": 17777})  # no generation bump: only the spec
        assert heard.get(timeout=10)[0] == "sidecars"
        wait_until(lambda: b"17777" in snapshot(b, sidecar).content, timeout=2, what="b to forget the old spec")

        # Heartbeats with the same spec announce nothing: a token made next is the next thing heard.
        for _ in range(3):
            register(a, "shop", 15001, upstreams={"pricing": 17777})
        a.ok("POST", "/api/v1/tokens", json={"role": "reader"})
        assert heard.get(timeout=10) == ("tokens", "")
    finally:
        listener.stop()


def expiry(url: str) -> dict[int, datetime]:
    out = pg.server().psql("SELECT id, expires_at FROM endpoint ORDER BY id", url.rsplit("/", 1)[1])
    return {int(i): datetime.fromisoformat(t) for i, t in (line.split("|") for line in out.splitlines())}


def test_registrations_resume_once_and_not_while_another_replica_runs(replicas: Replicas) -> None:
    url = pg.database("resume")
    (a,) = replicas(1, url=url)
    add_service(a, "shop")
    last_seen = datetime.fromisoformat(register(a, "shop", 15001)["last_seen"])
    before = expiry(url)
    time.sleep(2)  # a gap since the last heartbeat, which a resume would give back
    (b,) = replicas(1, url=url)  # a replica starting while another runs: that one heard them all along
    assert expiry(url) == before

    a.stop()
    b.stop()  # no replica runs now; three start at once: one of them resumes, once
    time.sleep(1)
    replicas(3, url=url, together=True)
    up = datetime.now(last_seen.tzinfo)
    resumed = {i: expiry(url)[i] - before[i] for i in before}
    gap = up - last_seen  # what one resume gives back at the most
    assert all(timedelta(0) < r <= gap for r in resumed.values()), (resumed, gap)


def test_concurrent_writes_through_three_replicas_number_everything_once(replicas: Replicas) -> None:
    cps = replicas(3)
    add_service(cps[0], "shop")
    # (HTTP proxy ports: every write below changes their config, so each is theirs to follow)
    sidecars = [register(cp, "shop", 15001 + i, http_proxy_port=17001 + i)["id"] for i, cp in enumerate(cps)]
    first = generation(cps[0])
    revisions_before = len(cps[0].ok("GET", "/api/v1/revisions"))
    writes = 3 * 10
    last = first + writes

    def watch(cp: ControlPlane, sidecar: int) -> list[int]:
        """A watcher's long-polls on one replica until it holds the last generation."""
        seen, held, deadline = [], -1, time.monotonic() + 90
        while held < last and time.monotonic() < deadline:
            r = snapshot(cp, sidecar, held, wait=10)
            if r.status_code == 200:
                held = r.json()["version"]
                seen.append(held)
        return seen

    def write(i: int) -> None:
        for j in range(10):
            add_service(cps[i], f"s{i}-{j}")

    with ThreadPoolExecutor(6) as pool:
        watchers = [pool.submit(watch, cp, sc) for cp, sc in zip(cps, sidecars, strict=True)]
        list(pool.map(write, range(3)))
        seen = [w.result() for w in watchers]

    ids = [r["id"] for r in cps[1].ok("GET", "/api/v1/revisions")]
    assert len(ids) == len(set(ids)) == revisions_before + writes
    assert [generation(cp) for cp in cps] == [last] * 3  # once per write: none lost, none twice
    for versions in seen:  # every watcher ends at the last generation, never going back
        assert versions[-1] == last and versions == sorted(versions), versions


def test_an_expiry_seen_by_three_replicas_raises_the_generation_once(replicas: Replicas) -> None:
    cps = replicas(3)
    add_service(cps[0], "shop")
    # (HTTP proxy ports: the expiring endpoint is in their config, so its expiry is theirs to follow)
    sidecars = [register(cp, "shop", 15001 + i, http_proxy_port=17001 + i)["id"] for i, cp in enumerate(cps)]
    cps[0].ok(
        "PUT", "/api/v1/services/default/shop/endpoints", json={"address": "127.0.0.9", "port": 80, "ttl_seconds": 2}
    )
    held = generation(cps[0])
    for cp, sc in zip(cps, sidecars, strict=True):  # every replica has loaded the mesh with it
        assert snapshot(cp, sc).json()["version"] == held
    for cp, sc in zip(cps, sidecars, strict=True):  # the expiry is noticed without a write ...
        r = snapshot(cp, sc, held, wait=30)
        assert r.status_code == 200 and r.json()["version"] == held + 1, r.text
    # ... and each replica's tick would have bumped for it: three ticks later, still one bump.
    time.sleep(3)
    assert [generation(cp) for cp in cps] == [held + 1] * 3
