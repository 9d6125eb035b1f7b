"""Alembic environment: migrates the URL it is given against the SQLModel metadata."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import meshctl.control.ca.store  # registers the CA's tables
import meshctl.control.kinds.registry  # registers the kinds' tables
import meshctl.control.models  # noqa: F401  (registers the other tables)
from meshctl.control.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
