"""labels and annotations of every resource

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-14 10:00:00
"""

import json
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Every kind's table (the registry's kinds when this revision was written).
TABLES = (
    "service",
    "gateway",
    "httproute",
    "tcproute",
    "trafficpolicy",
    "authorizationpolicy",
    "ratelimitpolicy",
    "telemetry",
)
#: Where revision records keep them (meshctl.control.kinds.labels.RECORD_KEY).
RECORD_KEY = "metadata"

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    # '{}' for the rows already there: no resource had labels before. Revisions need nothing:
    # a record without a metadata entry is a resource without labels.
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=False, server_default="{}"))
            batch_op.add_column(sa.Column("annotations", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    """Drops every resource's labels and annotations, and takes them out of the revision log's
    records (the older release would take them for spec fields); the specs stay. What is lost is
    logged: each resource that had any, and how many revisions recorded some."""
    conn = op.get_bind()
    for table in TABLES:
        # As text: PostgreSQL's json type has no equality operator.
        empty = "CAST({} AS TEXT) != '{{}}'"
        where = f"{empty.format('labels')} OR {empty.format('annotations')}"
        rows = conn.execute(sa.text(f"SELECT namespace || '/' || name FROM {table} WHERE {where}"))
        if lost := rows.scalars().all():
            log.warning("0013 downgrade: the labels and annotations of %s %s are lost", table, ", ".join(lost))
        # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch's copy of the table: dropping the
        # old service table would take its endpoints and sidecars with it (ON DELETE CASCADE).
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            batch_op.drop_column("annotations")
            batch_op.drop_column("labels")
    rewritten = 0
    for rev_id, changes in conn.execute(sa.text("SELECT id, changes FROM revision")).all():
        changes = json.loads(changes) if isinstance(changes, str) else changes
        plain = [{**c, "before": _strip(c.get("before")), "after": _strip(c.get("after"))} for c in changes]
        if plain != changes:
            rewritten += 1
            conn.execute(
                sa.text("UPDATE revision SET changes = :c WHERE id = :i"), {"c": json.dumps(plain), "i": rev_id}
            )
    if rewritten:
        log.warning("0013 downgrade: labels and annotations taken out of %d revisions", rewritten)


def _strip(record: object) -> object:
    if isinstance(record, dict) and RECORD_KEY in record:
        return {k: v for k, v in record.items() if k != RECORD_KEY}
    return record
