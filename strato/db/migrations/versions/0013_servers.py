"""Flavor access lists: the projects that may use a private flavor.

Revision ID: 0013_servers
Revises: 0012_image_metadefs
Create Date: 2026-12-02 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_servers"
down_revision = "0012_image_metadefs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flavor_projects",
        sa.Column("flavor_id", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["flavor_id"], ["flavors.id"], ondelete="CASCADE",
                                name=op.f("fk_flavor_projects_flavor_id_flavors")),
        sa.PrimaryKeyConstraint("flavor_id", "project_id", name=op.f("pk_flavor_projects")),
    )


def downgrade() -> None:
    op.drop_table("flavor_projects")
