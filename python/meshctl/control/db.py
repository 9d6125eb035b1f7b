"""Database engine and migrations. SQLite runs in WAL mode with a busy
timeout, so readers never block the writer and writers queue briefly
instead of failing. PostgreSQL runs on psycopg 3 (the ``meshctl[postgres]``
extra): a ``postgresql://`` URL, which names no driver, means it."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

#: The extra that installs each backend's driver (SQLite's is in the standard library).
EXTRAS = {"postgresql": "postgres"}


class DatabaseUrlError(ValueError):
    """A database URL that cannot be used here: unparsable, an unknown backend, or a driver not installed."""


def engine_url(url: str) -> str:
    """`url` with the driver we ship an extra for when it names none: SQLAlchemy's default for
    ``postgresql://`` is psycopg2, ``meshctl[postgres]`` installs psycopg 3."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def check_url(url: str) -> None:
    """Raise DatabaseUrlError, in words an operator can act on (the extra to install), unless
    `url` parses and its driver imports."""
    try:
        parsed = make_url(engine_url(url))
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise DatabaseUrlError(f"{_shown(url)} is not a database URL SQLAlchemy knows ({e})") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        backend = parsed.get_backend_name()
        extra = EXTRAS.get(backend)
        install = f": pip install 'meshctl[{extra}]'" if extra else ""
        raise DatabaseUrlError(f"the {backend} driver is not installed ({e}){install}") from None


def _shown(url: str) -> str:
    """`url` without its password, to be shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return repr(url.split("@")[-1])


def make_engine(url: str) -> Engine:
    url = engine_url(url)
    if url.startswith("sqlite"):
        # More connections than request session slots (deps.SESSION_SLOTS) plus the hub's and
        # token checks' short sessions: a request never waits for one.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=30,
            json_deserializer=orjson.loads,
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
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=10, json_deserializer=orjson.loads)


def alembic_config(url: str) -> AlembicConfig:
    """Alembic pointed at the scripts shipped inside the package."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("meshctl") / "migrations"))
    # (alembic's config is an ini file: a password's % would read as interpolation)
    cfg.set_main_option("sqlalchemy.url", engine_url(url).replace("%", "%%"))
    return cfg


#: The advisory lock (PostgreSQL) that migrations take turns on: "meshmigr".
_MIGRATIONS_LOCK = 0x6D65_7368_6D69_6772


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`. On PostgreSQL, replicas that start together take turns
    (a session advisory lock on a connection of its own): the first migrates, the others find the
    database at `revision`; at once, their CREATE TABLEs would wait on each other and fail."""
    if make_url(engine_url(url)).get_backend_name() != "postgresql":
        command.upgrade(alembic_config(url), revision)
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATIONS_LOCK})
            conn.commit()
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATIONS_LOCK})
                conn.commit()
    finally:
        engine.dispose()
