"""telemetry resources

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry",
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


def downgrade() -> None:
    """Refused while Telemetry resources exist (the older release has no place for them): delete
    them first. Revisions that recorded them stay (the older release skips unknown kinds)."""
    conn = op.get_bind()
    names = conn.execute(sa.text("SELECT namespace || '/' || name FROM telemetry ORDER BY 1")).scalars().all()
    if names:
        raise RuntimeError(f"cannot downgrade below 0011: delete the Telemetry resources first ({', '.join(names)})")
    op.drop_table("telemetry")
