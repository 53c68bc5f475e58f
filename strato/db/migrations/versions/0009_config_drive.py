"""What a server puts into its guest: config drive flag, hostname, the keypair's key
as booted, launch index, and the password the guest posts to the metadata service.

Revision ID: 0009_config_drive
Revises: 0007_messages
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_config_drive"
down_revision = "0008_boot_meta"
branch_labels = None
depends_on = None

_COLUMNS = ("config_drive", "hostname", "key_data", "key_type", "launch_index",
            "guest_password")


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        # Nova's column: "True" or "" (the server view shows it as is)
        batch_op.add_column(sa.Column("config_drive", sa.String(length=255),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("hostname", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("key_data", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("key_type", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("launch_index", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("guest_password", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
