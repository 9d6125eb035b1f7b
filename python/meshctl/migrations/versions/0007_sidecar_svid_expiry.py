"""sidecar.svid_expires_at: when each sidecar's SVID expires, as of its last heartbeat

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("svid_expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("svid_expires_at")
