"""Snapshot schedules (strato's own compute extension).

Revision ID: 0022_schedules
Revises: 0021_backups
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0022_schedules"
down_revision = "0021_backups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("server_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("retention", sa.JSON(), nullable=False),
        sa.Column("quiesce", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("anchor_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("next_run_at", strato.db.base.UTCDateTime(), nullable=True),
        sa.Column("last_run_at", strato.db.base.UTCDateTime(), nullable=True),
        sa.Column("last_result", sa.JSON(), nullable=True),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_schedules")),
    )
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshot_schedules_server_id"), ["server_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshot_schedules_server_id"))
    op.drop_table("snapshot_schedules")
