"""Cinder backups: the backups table.

Revision ID: 0021_backups
Revises: 0020_image_stores
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from strato.db.base import UTCDateTime

revision = "0021_backups"
down_revision = "0020_image_stores"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("volume_id", sa.String(36), nullable=False, index=True),
        sa.Column("snapshot_id", sa.String(36), nullable=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("container", sa.String(255), nullable=True),
        sa.Column("availability_zone", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("object_count", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(36), nullable=True, index=True),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("data_timestamp", UTCDateTime(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("previous_status", sa.String(32), nullable=True),
        sa.Column("restore_volume_id", sa.String(36), nullable=True),
        sa.Column("reservations", sa.JSON(), nullable=False),
        sa.Column("quota_committed", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backups")
