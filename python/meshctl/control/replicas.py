"""Several control-plane processes (replicas) on one PostgreSQL database:
which of them run, and jobs that must run once however many do.

Each replica has a row in ``replica`` (its id, host and pid), refreshed by
the Hub's tick (`seen`) and deleted when it stops (`leave`); a row not
refreshed for `alive_window` belongs to a replica that died.

Jobs run once:
- resuming registrations at start (`instances.resume_leases`): only when no
  other replica is running (it heard the heartbeats, so there was no gap),
  and by one of several starting at once (an advisory lock orders them; the
  first registers itself before the lock is released, so the others see it);
- the expiry bump (`crud.bump_past`, a compare-and-set on the generation, no
  lock needed);
- the trace store's retention runs inside each export's write, which takes
  the trace writers' advisory lock (traces/store.py): one at a time already.

`job_lock` is for any other job that one replica at a time should run.

On SQLite there is one process per database file: no rows are written,
`job_lock` is always granted, and resuming happens as it always did.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import delete, text, update
from sqlmodel import Session, col, select

from meshctl.control import instances
from meshctl.control.kinds.common import now
from meshctl.control.models import Replica

log = logging.getLogger("meshctl.control.replicas")

#: A replica not seen for this long (at least; see `alive_window`) is taken for dead. Short, so
#: that a lone control plane killed and restarted at once still resumes its registrations (a
#: restart within this window finds its own old row and resumes nothing, which costs nothing as
#: long as registrations outlive it: a registration heartbeats every ttl/3 seconds).
ALIVE_SECONDS = 5.0


def on_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job's name."""
    return int.from_bytes(hashlib.sha256(f"meshctl:{name}".encode()).digest()[:8], "big", signed=True)


def job_lock(session: Session, name: str, *, wait: bool = False) -> bool:
    """Whether this transaction may run the job `name`: a PostgreSQL advisory lock held until it
    commits or rolls back (`wait`: queue for it; else False when another replica holds it).
    Always True on SQLite (one process per file)."""
    if not on_postgres(session):
        return True
    if wait:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key(name)}).scalar())


def alive_window(tick: float) -> timedelta:
    """How long a replica may go unseen and still count as running: three of its ticks, and never
    less than `ALIVE_SECONDS` (replicas are expected to share one tick)."""
    return timedelta(seconds=max(ALIVE_SECONDS, 3 * tick))


def start(session: Session, *, tick: float) -> tuple[str | None, timedelta]:
    """Join as a replica: (this replica's id, or None on SQLite; how long the registrations were
    resumed by, see `instances.resume_leases`). Commits."""
    if not on_postgres(session):
        return None, instances.resume_leases(session)
    job_lock(session, "start", wait=True)  # replicas starting at once: one after the other
    cutoff = now() - alive_window(tick)
    session.execute(delete(Replica).where(col(Replica.seen_at) < cutoff))  # the dead ones
    running = session.exec(select(Replica.id)).all()
    replica = Replica(id=uuid.uuid4().hex, host=socket.gethostname()[:255], pid=os.getpid())
    session.add(replica)
    if running:
        # Another replica heard the heartbeats all along: nothing to give back.
        session.commit()
        log.info("joined %d running replica(s) as %s", len(running), replica.id)
        return replica.id, timedelta(0)
    return replica.id, instances.resume_leases(session)  # (its commit registers us too)


def seen(session: Session, replica_id: str) -> None:
    """This replica is still running (each tick); back in the table if it was taken for dead."""
    stamp = now()
    if session.execute(update(Replica).where(col(Replica.id) == replica_id).values(seen_at=stamp)).rowcount == 0:  # type: ignore[attr-defined]
        session.add(Replica(id=replica_id, host=socket.gethostname()[:255], pid=os.getpid(), seen_at=stamp))
    session.commit()


def leave(session: Session, replica_id: str) -> None:
    session.execute(delete(Replica).where(col(Replica.id) == replica_id))
    session.commit()


def running(session: Session, *, tick: float = 1.0) -> list[Replica]:
    """The replicas that are running, oldest first."""
    cutoff = now() - alive_window(tick)
    query = select(Replica).where(col(Replica.seen_at) >= cutoff).order_by(col(Replica.started_at))
    return list(session.exec(query).all())
