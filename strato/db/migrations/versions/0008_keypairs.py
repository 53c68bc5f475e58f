"""Nova's keypairs, and what compute microversions 2.84 and 2.89 show: an action
event's ``details``, a block device's ``uuid`` (2.90's ``hostname`` came with
0009_config_drive).

Revision ID: 0008_keypairs
Revises: 0010_console_tokens
Create Date: 2026-12-02
"""

import uuid

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0008_keypairs"
down_revision = "0010_console_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_pairs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_pairs")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_key_pairs_user_id")),
    )
    with op.batch_alter_table("key_pairs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_key_pairs_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("instance_action_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("details", sa.Text(), nullable=True))
    with op.batch_alter_table("block_device_mappings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uuid", sa.String(length=36), nullable=True))
    # every existing mapping gets its own uuid, as a new one does
    bdms = sa.table("block_device_mappings", sa.column("id"), sa.column("uuid"))
    conn = op.get_bind()
    for (bdm_id,) in conn.execute(sa.select(bdms.c.id)).fetchall():
        conn.execute(bdms.update().where(bdms.c.id == bdm_id).values(uuid=str(uuid.uuid4())))


def downgrade() -> None:
    with op.batch_alter_table("block_device_mappings", schema=None) as batch_op:
        batch_op.drop_column("uuid")
    with op.batch_alter_table("instance_action_events", schema=None) as batch_op:
        batch_op.drop_column("details")
    with op.batch_alter_table("key_pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_key_pairs_user_id"))
    op.drop_table("key_pairs")
