"""gateways, gateway sidecars, HTTPRoute hostnames and Gateway parents

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 14:12:30.508116
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway",
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
        batch_op.add_column(sa.Column("gateway", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    """Refused while Gateways, or HTTPRoutes attached to one, exist: the older release could not
    read them (delete them first). What it can read is kept: `hostnames` (which Service parents
    ignore) and an explicit `kind: Service` leave the routes and the revision log."""
    conn = op.get_bind()
    routes = sa.table("httproute", sa.column("id", sa.Integer), sa.column("spec", sa.JSON))
    gateways = conn.execute(sa.text("SELECT namespace || '/' || name FROM gateway ORDER BY 1")).scalars().all()
    attached = [row.id for row in conn.execute(sa.select(routes.c.id, routes.c.spec)) if _has_gateway_parent(row.spec)]
    if gateways or attached:
        raise RuntimeError(
            "cannot downgrade below 0006: delete the Gateways and the HTTPRoutes attached to them first"
            f" (Gateways: {', '.join(gateways) or 'none'}; HTTPRoutes attached: {len(attached)})"
        )
    for row in conn.execute(sa.select(routes.c.id, routes.c.spec)).all():
        if (older := _older(row.spec)) != row.spec:
            conn.execute(routes.update().where(routes.c.id == row.id).values(spec=older))
    revisions = sa.table("revision", sa.column("id", sa.Integer), sa.column("changes", sa.JSON))
    for row in conn.execute(sa.select(revisions.c.id, revisions.c.changes)).all():
        changes = [
            {**c, "before": _older(c["before"]), "after": _older(c["after"])} if c["kind"] == "HTTPRoute" else c
            for c in row.changes
        ]
        if changes != row.changes:
            conn.execute(revisions.update().where(revisions.c.id == row.id).values(changes=changes))
    # Gateway instances were never endpoints; an older release would take them for sidecars.
    op.execute(sa.text("DELETE FROM sidecar WHERE gateway"))
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_column("gateway")
    # Revisions that changed Gateways keep those changes: older releases skip unknown kinds.
    op.drop_table("gateway")


def _has_gateway_parent(spec: Any) -> bool:
    return any(p.get("kind") == "Gateway" for p in (spec or {}).get("parentRefs", []))


def _older(spec: Any) -> Any:
    """An HTTPRoute spec without what 0006 added, where that changes nothing for Service parents
    (a recorded route with a Gateway parent is left as it was)."""
    if not isinstance(spec, dict) or _has_gateway_parent(spec):
        return spec
    older = {k: v for k, v in spec.items() if k != "hostnames"}
    if isinstance(spec.get("parentRefs"), list):
        older["parentRefs"] = [{k: v for k, v in p.items() if k != "kind"} for p in spec["parentRefs"]]
    return older
