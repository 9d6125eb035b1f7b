"""Database engine and migrations. SQLite runs in WAL mode with a busy
timeout, so readers never block the writer and writers queue briefly
instead of failing."""

from __future__ import annotations

from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # More connections than request session slots (deps.SESSION_SLOTS) plus the hub's and
        # token checks' short sessions: a request never waits for one.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=30
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL's recommended durability: no fsync per commit, the database is never corrupted;
            # a power cut may lose the last commits, which sidecars re-report and operators re-apply.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")  # a fleet registering at once queues for the lock
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=10)


def alembic_config(url: str) -> AlembicConfig:
    """Alembic pointed at the scripts shipped inside the package."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("meshctl") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
