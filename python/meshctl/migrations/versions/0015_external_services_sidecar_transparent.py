"""external services, sidecar transparent mode

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-17 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "externalservice",
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("namespace", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False, server_default="{}"),
        sa.Column("annotations", sa.JSON(), nullable=False, server_default="{}"),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name"),
    )
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transparent", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Refused while ExternalServices exist (the older release has no place for them): delete them
    first. Revisions that recorded them stay (the older release skips unknown kinds). Sidecars
    lose their transparent ports (they register them again with their next heartbeat)."""
    conn = op.get_bind()
    names = conn.execute(sa.text("SELECT namespace || '/' || name FROM externalservice ORDER BY 1")).scalars().all()
    if names:
        raise RuntimeError(
            f"cannot downgrade below 0015: delete the ExternalService resources first ({', '.join(names)})"
        )
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("transparent")
    op.drop_table("externalservice")
