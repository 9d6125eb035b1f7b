"""sidecar endpoint health

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Runtime state each heartbeat rewrites: rows from before it start with none reported.
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint_health", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Nothing is lost that the next heartbeat does not send again (to a release that reads it)."""
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("endpoint_health")
