"""Image metadata-definition namespaces (Glance's metadefs catalog).

Revision ID: 0012_image_metadefs
Revises: 0011_network
Create Date: 2026-12-02 15:40:00
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0012_image_metadefs"
down_revision = "0011_network"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_metadef_namespaces",
        sa.Column("namespace", sa.String(length=80), nullable=False),
        sa.Column("display_name", sa.String(length=80), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("visibility", sa.String(length=32), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("resource_types", sa.JSON(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_image_metadef_namespaces")),
    )


def downgrade() -> None:
    op.drop_table("image_metadef_namespaces")
