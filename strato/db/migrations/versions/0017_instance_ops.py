"""Instances keep Nova's system metadata (what resize, shelve and rescue remember).

Revision ID: 0017_instance_ops
Revises: 0016_volume
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_instance_ops"
down_revision = "0016_volume"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("system_metadata", sa.JSON(), nullable=False,
                                      server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("system_metadata")
