"""Private volume types: which projects may use them (Cinder's volume_type_projects).

Revision ID: 0006_type_access
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0006_type_access"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_type_projects",
        sa.Column("volume_type_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_type_id"],
            ["volume_types.id"],
            name=op.f("fk_volume_type_projects_volume_type_id_volume_types"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("volume_type_id", "project_id",
                                name=op.f("pk_volume_type_projects")),
    )
    with op.batch_alter_table("volume_type_projects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_volume_type_projects_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("volume_type_projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_type_projects_project_id"))
    op.drop_table("volume_type_projects")
