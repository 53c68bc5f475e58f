"""Images keep the locations of their data in stores besides the first (multi-store).

Revision ID: 0020_image_stores
Revises: 0019_volume_qos
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_image_stores"
down_revision = "0019_volume_qos"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra_locations", sa.JSON(), nullable=False,
                                      server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("extra_locations")
