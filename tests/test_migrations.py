"""Migrations: the shipped scripts build an empty database to head and
agree with the models; the exported OpenAPI document is current."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import meshctl.control.models  # noqa: F401  (registers the tables)
from meshctl.control import openapi
from meshctl.control.db import alembic_config, make_engine, migrate

ROOT = Path(__file__).resolve().parents[1]


def test_every_revision_migrates_up_to_head_and_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    revisions = [r.revision for r in script.walk_revisions()][::-1]
    assert revisions, "no migration scripts were shipped"
    for rev in revisions:  # from empty, one revision at a time, as an upgrade from any release would
        migrate(url, rev)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == script.get_current_head()
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert {"service", "revision", "apitoken"} <= set(inspect(conn).get_table_names())
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_openapi_document_is_current() -> None:
    exported = (ROOT / "api" / "openapi.json").read_text()
    assert exported == openapi.render(), (
        "api/openapi.json is stale: python -m meshctl.control.openapi > api/openapi.json"
    )
