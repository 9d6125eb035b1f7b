"""token names and expiry, revision authors and messages, sidecar tokens and versions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every column is nullable: rows from before this revision have no name, author or expiry
    # (tokens made before it never expire, as they never did).
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("author", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("message", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("version", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    """Drops the names, authors, messages and expiries: tokens then never expire, and the revision
    log forgets who made each change (the changes themselves stay)."""
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("token_id")
    with op.batch_alter_table("revision", schema=None) as batch_op:
        batch_op.drop_column("message")
        batch_op.drop_column("author")
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
