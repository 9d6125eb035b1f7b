"""rate limit policies, sidecar zones

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:40:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ratelimitpolicy",
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
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("zone", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True))


def downgrade() -> None:
    """Refused while RateLimitPolicies exist, or TrafficPolicies use what the older release cannot
    read (it refuses unknown fields): delete or edit them first. Revisions that recorded them stay
    (the older release skips unknown kinds)."""
    conn = op.get_bind()
    limits = conn.execute(sa.text("SELECT namespace || '/' || name FROM ratelimitpolicy ORDER BY 1")).scalars().all()
    table = sa.table(
        "trafficpolicy", *(sa.column(c, sa.String) for c in ("namespace", "name")), sa.column("spec", sa.JSON)
    )
    rows = conn.execute(
        sa.select(table.c.namespace, table.c.name, table.c.spec).order_by(table.c.namespace, table.c.name)
    )
    newer = [f"{r.namespace}/{r.name}" for r in rows if _uses_0008(r.spec)]
    if limits or newer:
        raise RuntimeError(
            "cannot downgrade below 0008: delete the RateLimitPolicies and take outlierDetection, healthCheck,"
            " retryBudget, localityLbSetting, PeakEWMA and maxRetries out of the TrafficPolicies first"
            f" (RateLimitPolicies: {', '.join(limits) or 'none'}; TrafficPolicies: {', '.join(newer) or 'none'})"
        )
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("zone")
    op.drop_table("ratelimitpolicy")


def _uses_0008(spec: dict[str, Any]) -> bool:
    """Whether a TrafficPolicy spec uses a field this revision's release added."""
    lb = spec.get("loadBalancer") or {}
    http = (spec.get("connectionPool") or {}).get("http") or {}
    return (
        any(k in spec for k in ("outlierDetection", "healthCheck", "retryBudget"))
        or "localityLbSetting" in lb
        or lb.get("type") == "PeakEWMA"
        or "maxRetries" in http
    )
