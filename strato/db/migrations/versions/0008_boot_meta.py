"""Instances remember the boot properties (hw_* and os_type) the API accepted.

Revision ID: 0008_boot_meta
Revises: 0007_messages
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_boot_meta"
down_revision = "0007_messages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot_meta", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("boot_meta")
