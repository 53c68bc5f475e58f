"""Volume attachments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "volume_attachments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("volume_id", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=True),
        sa.Column("attached_host", sa.String(length=255), nullable=True),
        sa.Column("mountpoint", sa.String(length=255), nullable=True),
        sa.Column("attach_status", sa.String(length=32), nullable=False),
        sa.Column("attach_mode", sa.String(length=2), nullable=False),
        sa.Column("connector", sa.JSON(), nullable=False),
        sa.Column("connection_info", sa.JSON(), nullable=False),
        sa.Column("attach_time", strato.db.base.UTCDateTime(), nullable=True),
        sa.Column("detach_time", strato.db.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"],
            ["volumes.id"],
            name=op.f("fk_volume_attachments_volume_id_volumes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_attachments")),
    )
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_volume_attachments_volume_id"), ["volume_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_attachments_volume_id"))

    op.drop_table("volume_attachments")
