"""Control-plane replicas on one PostgreSQL database: announcements between
them (control/notify.py), the generation and token caches they keep, jobs
run once, and concurrent writes through several at once."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from sqlmodel import Session

import pg
from meshctl.control import notify
from meshctl.control.db import make_engine


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


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
        wait_for(listener.connected.is_set, what="the listener to reconnect")
        with Session(engine) as session:
            notify.announce(session, "tokens")
            session.commit()
        assert heard.get(timeout=10) == ("tokens", "")
    finally:
        listener.stop()
        engine.dispose()
    assert not any(t.name == "meshctl-listener" for t in threading.enumerate())
