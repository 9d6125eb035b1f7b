"""trace store: spans and trace summaries

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "span",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("span_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("parent_span_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("service", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("namespace", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_span_service_trace_id", "span", ["service", "trace_id"], unique=False)
    op.create_index("ix_span_trace_id_span_id", "span", ["trace_id", "span_id"], unique=True)
    op.create_table(
        "tracesummary",
        sa.Column("trace_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("span_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("root_found", sa.Boolean(), nullable=False),
        sa.Column("root_service", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("root_name", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("trace_id"),
    )
    op.create_index(op.f("ix_tracesummary_end_ns"), "tracesummary", ["end_ns"], unique=False)
    op.create_index(op.f("ix_tracesummary_start_ns"), "tracesummary", ["start_ns"], unique=False)


def downgrade() -> None:
    """The stored spans go with their tables: they are telemetry that ages out anyway."""
    op.drop_index(op.f("ix_tracesummary_start_ns"), table_name="tracesummary")
    op.drop_index(op.f("ix_tracesummary_end_ns"), table_name="tracesummary")
    op.drop_table("tracesummary")
    op.drop_index("ix_span_trace_id_span_id", table_name="span")
    op.drop_index("ix_span_service_trace_id", table_name="span")
    op.drop_table("span")
