"""Volume transfers (Cinder's transfers: a volume offered to another project).

Revision ID: 0016_volume
Revises: 0015_reads
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0016_volume"
down_revision = "0015_reads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_transfers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("volume_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("source_project_id", sa.String(length=64), nullable=False),
        sa.Column("destination_project_id", sa.String(length=64), nullable=True),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("crypt_hash", sa.String(length=128), nullable=False),
        sa.Column("no_snapshots", sa.Boolean(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"], ["volumes.id"],
            name=op.f("fk_volume_transfers_volume_id_volumes"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_transfers")),
    )
    with op.batch_alter_table("volume_transfers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_volume_transfers_volume_id"), ["volume_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_volume_transfers_source_project_id"),
                              ["source_project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("volume_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_transfers_source_project_id"))
        batch_op.drop_index(batch_op.f("ix_volume_transfers_volume_id"))
    op.drop_table("volume_transfers")
