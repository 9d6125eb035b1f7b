"""Announcements between control-plane replicas sharing one database.

On PostgreSQL a writer calls `announce` inside its transaction (``SELECT
pg_notify``), so the announcement is delivered when, and only if, the
transaction commits; every replica's `Listener` holds a connection of its own
with ``LISTEN`` on one channel and calls the callbacks registered for the
topic. On SQLite there is one process per database file: `announce` does
nothing and the listener starts no thread.

Announcements are hints, never the truth: a replica that missed one (its
listening connection dropped) is told so with ``callback(None)`` after the
reconnect and reads the database again; the generation poll stays as the
fallback.

Topics (a message on the channel is ``topic:payload``; a topic has no colon):

- ``generation``: the mesh generation was raised; payload: the new number.
- ``tokens``: an API token was revoked or changed (or its service deleted);
  every replica drops its token cache.
- ``ca``: the CA's state changed (rotation step, new issuer).
- ``sidecars``: a sidecar registered with another spec (or left) through some
  replica; payload: its id and the announcing Hub's origin. Every other replica
  forgets what it remembered of it (`push.Hub.sidecars`).
- ``dumps``: ``meshctl proxy-config`` requests and answers between replicas
  (``control.relay``).
- ``taps``: ``meshctl tap`` sessions opened and closed, and the sidecars'
  events for them, between replicas (``control.relay``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session

if TYPE_CHECKING:  # the driver is an extra (meshctl[postgres]): imported only when listening
    import psycopg

log = logging.getLogger("meshctl.control.notify")

#: The one channel every replica listens on.
CHANNEL = "meshctl"
#: The listening connection's name in pg_stat_activity.
APPLICATION_NAME = "meshctl-listener"
#: How long the listener waits for a notification before it checks it was stopped.
WAIT_SECONDS = 0.5
#: An idle listening connection is probed this often, so that a dead one is noticed.
PROBE_SECONDS = 5.0
#: Reconnect back-off, doubled after each failure up to the ceiling.
BACKOFF_SECONDS = (0.1, 5.0)

Callback = Callable[[str | None], None]


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def announce(session: Session, topic: str, payload: str = "") -> None:
    """Tell every replica, when the session's transaction commits (PostgreSQL NOTIFY on one channel;
    a no-op on SQLite: one process per file)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text("SELECT pg_notify(:channel, :message)"), {"channel": CHANNEL, "message": f"{topic}:{payload}"})


def conninfo(url: str) -> str:
    """A libpq connection string for an SQLAlchemy URL (``postgresql+psycopg://...``): psycopg itself
    does not take the ``+driver`` part. Query parameters (sslmode, host=/socket/dir, ...) pass through."""
    from psycopg.conninfo import make_conninfo

    u = make_url(url)
    params: dict[str, str | int] = {
        k: v for k, v in (("host", u.host), ("port", u.port), ("user", u.username), ("dbname", u.database)) if v
    }
    if u.password is not None:
        params["password"] = u.password
    for key, value in u.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    return make_conninfo("", **params)


class Listener:
    """Started in the app's lifespan as `app.state.listener`; on PostgreSQL a thread holding its own
    connection with LISTEN, reconnecting with back-off."""

    def __init__(self, url: str) -> None:
        self._conninfo = conninfo(url) if is_postgres(url) else None
        self._callbacks: dict[str, list[Callback]] = {}
        self._stop = threading.Event()
        #: Set while the listening connection is up (tests wait on it).
        self.connected = threading.Event()
        self._thread: threading.Thread | None = None

    def on(self, topic: str, callback: Callback) -> None:
        """`callback(payload)` in the listener's thread for each announcement of `topic` from any
        replica (this one too); `callback(None)` after a reconnect (something may have been missed:
        resynchronise)."""
        self._callbacks.setdefault(topic, []).append(callback)

    def start(self, wait: float = 5.0) -> None:
        """Start listening; waits up to `wait` seconds for the first LISTEN so that what this
        process writes right after startup is heard (it keeps trying in the background after)."""
        if self._conninfo is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="meshctl-listener", daemon=True)
        self._thread.start()
        if not self.connected.wait(wait):
            log.warning("not listening for announcements yet: replicas' changes arrive by the poll until then")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT_SECONDS * 4)
            self._thread = None

    def _dispatch(self, topic: str, payload: str | None) -> None:
        for callback in self._callbacks.get(topic, ()):
            try:
                callback(payload)
            except Exception:  # one broken callback must not deafen the others
                log.exception("announcement callback for %r failed", topic)

    def _run(self) -> None:
        import psycopg

        assert self._conninfo is not None
        delay, first = BACKOFF_SECONDS[0], True
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        log.info("listening for announcements again")
                        for topic in list(self._callbacks):
                            self._dispatch(topic, None)
                    first, delay = False, BACKOFF_SECONDS[0]
                    self._listen(conn)
            except Exception as exc:  # the server restarting, a network cut: try again, slower each time
                self.connected.clear()
                if self._stop.is_set():
                    break
                log.warning("announcement listener: %s; reconnecting in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_SECONDS[1])
        self.connected.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        idle = 0.0
        while not self._stop.is_set():
            heard = False
            for note in conn.notifies(timeout=WAIT_SECONDS):
                heard = True
                topic, _, payload = note.payload.partition(":")
                self._dispatch(topic, payload)
            idle = 0.0 if heard else idle + WAIT_SECONDS
            if idle >= PROBE_SECONDS:  # a half-open connection hears nothing and says nothing
                conn.execute("SELECT 1")
                idle = 0.0
