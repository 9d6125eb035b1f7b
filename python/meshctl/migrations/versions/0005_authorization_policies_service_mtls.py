"""authorization policies, per-service mTLS mode

A Service's spec, as revisions record it, becomes {"ports": [...], "mtls": ...}
(it was the list of ports): existing revision rows are converted both ways.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:41:07.315204
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "authorizationpolicy",
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("namespace", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name"),
    )
    with op.batch_alter_table("service", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mtls", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="STRICT")
        )
    _convert_service_specs(lambda ports: {"ports": ports, "mtls": "STRICT"} if isinstance(ports, list) else ports)


def downgrade() -> None:
    # Revisions that changed AuthorizationPolicies keep those changes: older releases skip unknown kinds.
    _convert_service_specs(lambda spec: spec["ports"] if isinstance(spec, dict) else spec)
    with op.batch_alter_table("service", schema=None) as batch_op:
        batch_op.drop_column("mtls")
    op.drop_table("authorizationpolicy")


def _convert_service_specs(convert: Callable[[Any], Any]) -> None:
    """Rewrites the before/after of every Service change in the revision log."""
    revision_table = sa.table("revision", sa.column("id", sa.Integer), sa.column("changes", sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(revision_table.c.id, revision_table.c.changes).order_by(revision_table.c.id)):
        changes = [
            {**c, "before": _maybe(convert, c["before"]), "after": _maybe(convert, c["after"])}
            if c["kind"] == "Service"
            else c
            for c in row.changes
        ]
        if changes != row.changes:
            conn.execute(revision_table.update().where(revision_table.c.id == row.id).values(changes=changes))


def _maybe(convert: Callable[[Any], Any], spec: Any) -> Any:
    return None if spec is None else convert(spec)
