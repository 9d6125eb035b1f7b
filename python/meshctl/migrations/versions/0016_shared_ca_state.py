"""shared CA state: the CA's roots, issuers and rotation state in the database, keys sealed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 22:40:00

The CA moves from files in the data dir into these tables (meshctl.control.ca.store), so that
replicas on one database share it. The upgrade only makes the tables: the first start after it
imports the files (the keys sealed under the key-encryption key file, which the database never
holds). A downgrade drops them and with them the CA: the older release, finding no CA files
(the import removed their keys), makes a new root, and sidecars need new SVIDs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "castate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("phase", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("activated_at", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("bundle_generation", sa.Integer(), nullable=True),
        sa.Column("issued", sa.JSON(), nullable=False),
        sa.Column("kek_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "caauthority",
        sa.Column("slot", sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
        sa.Column("root_fingerprint", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("issuer_fingerprint", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("root_pem", sa.Text(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("root_key", sa.Text(), nullable=True),
        sa.Column("issuer_key", sa.Text(), nullable=True),
        sa.Column("since", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
    )


def downgrade() -> None:
    op.drop_table("caauthority")
    op.drop_table("castate")
