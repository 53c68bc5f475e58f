"""Images keep the locations of their data in stores besides the first (multi-store).

Revision ID: 0017_G
Revises: 0017_instance_ops
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_G"
down_revision = "0017_instance_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra_locations", sa.JSON(), nullable=False,
                                      server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("extra_locations")
