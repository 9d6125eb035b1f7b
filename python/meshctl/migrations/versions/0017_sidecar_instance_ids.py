"""gateway instance ids: sidecars keyed by an instance id

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 22:40:00

A registration's key was (service, address, inbound port): two instances of one Gateway bound to
0.0.0.0 on different hosts were one row. Now every row has an `instance`, unique in its service;
the rows of before get "address:inbound_port", the key an instance that sends no id keeps. The
endpoint stays one sidecar's: a partial unique index on (service, address, inbound port) over the
rows that are not gateways.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENDPOINT = ["service_id", "address", "inbound_port"]
#: What SQLite's unnamed constraints are called while a batch rebuilds the table (so that the old
#: one can be dropped by name); PostgreSQL's have names already (see `_endpoint_constraint`).
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _endpoint_constraint() -> str:
    for uq in sa.inspect(op.get_bind()).get_unique_constraints("sidecar"):
        if uq["column_names"] == ENDPOINT and uq["name"]:
            return str(uq["name"])
    return "uq_sidecar_service_id_address_inbound_port"


def upgrade() -> None:
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
    op.execute("UPDATE sidecar SET instance = address || ':' || CAST(inbound_port AS VARCHAR(5))")
    name = _endpoint_constraint()
    with op.batch_alter_table("sidecar", schema=None, naming_convention=CONVENTION) as batch_op:
        batch_op.alter_column("instance", existing_type=sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False)
        batch_op.drop_constraint(name, type_="unique")
        batch_op.create_unique_constraint("uq_sidecar_instance", ["service_id", "instance"])
    op.create_index(
        "ix_sidecar_endpoint",
        "sidecar",
        ENDPOINT,
        unique=True,
        sqlite_where=sa.text("NOT gateway"),
        postgresql_where=sa.text("NOT gateway"),
    )


def downgrade() -> None:
    """Gateway instances that share an address become one again: of each such group, only the
    newest row stays (runtime state: the others come back, as that one, with their next heartbeat)."""
    op.execute(
        "DELETE FROM sidecar WHERE gateway AND id NOT IN"
        " (SELECT keep FROM (SELECT MAX(id) AS keep FROM sidecar GROUP BY service_id, address, inbound_port) AS k)"
    )
    op.drop_index("ix_sidecar_endpoint", table_name="sidecar")
    with op.batch_alter_table("sidecar", schema=None) as batch_op:
        batch_op.drop_constraint("uq_sidecar_instance", type_="unique")
        batch_op.drop_column("instance")
        # (PostgreSQL's name for the unnamed one 0004 made; SQLite's batch needs one)
        batch_op.create_unique_constraint("sidecar_service_id_address_inbound_port_key", ENDPOINT)
