"""Cinder's QoS specs, and which one a volume type uses.

Revision ID: 0019_volume_qos
Revises: 0018_migrations
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0019_volume_qos"
down_revision = "0018_migrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qos_specs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("consumer", sa.String(length=16), nullable=False),
        sa.Column("specs", sa.JSON(), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qos_specs")),
        sa.UniqueConstraint("name", name=op.f("uq_qos_specs_name")),
    )
    with op.batch_alter_table("volume_types", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qos_specs_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_volume_types_qos_specs_id"), ["qos_specs_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("volume_types", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_types_qos_specs_id"))
        batch_op.drop_column("qos_specs_id")
    op.drop_table("qos_specs")
