"""app health: each Service's health check, each sidecar's reported health

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-05 10:00:00
"""

import json
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Where a Service's revision records keep it (meshctl.control.kinds.service).
SPEC_KEY = "healthCheck"

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    # NULL for the rows already there: no service had a health check, and no sidecar probed its
    # app (NULL health is an endpoint, as every instance was).
    with op.batch_alter_table("service", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health_check", sa.JSON(), nullable=True))
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health", sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Drops the health checks (logging each service that had one) and takes them out of the
    revision log's Service records (the older release would refuse them as unknown spec fields).
    Sidecars' health is runtime state: the older release makes every live instance an endpoint."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT namespace || '/' || name FROM service WHERE health_check IS NOT NULL"))
    if lost := rows.scalars().all():
        log.warning("0014 downgrade: the health checks of service %s are lost", ", ".join(lost))
    # ALTER TABLE ... DROP COLUMN, not batch's copy of the table: dropping the old service table
    # would take its endpoints and sidecars with it (ON DELETE CASCADE).
    with op.batch_alter_table("sidecar", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("health")
    with op.batch_alter_table("service", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("health_check")
    rewritten = 0
    for rev_id, changes in conn.execute(sa.text("SELECT id, changes FROM revision")).all():
        changes = json.loads(changes) if isinstance(changes, str) else changes
        plain = [_plain(c) for c in changes]
        if plain != changes:
            rewritten += 1
            conn.execute(
                sa.text("UPDATE revision SET changes = :c WHERE id = :i"), {"c": json.dumps(plain), "i": rev_id}
            )
    if rewritten:
        log.warning("0014 downgrade: health checks taken out of %d revisions", rewritten)


def _plain(change: dict) -> dict:
    if change.get("kind") != "Service":
        return change
    return {**change, "before": _strip(change.get("before")), "after": _strip(change.get("after"))}


def _strip(record: object) -> object:
    if isinstance(record, dict) and SPEC_KEY in record:
        return {k: v for k, v in record.items() if k != SPEC_KEY}
    return record
