"""Nova's migration records: one row per resize (``os-migrations``).

Revision ID: 0018_migrations
Revises: 0017_instance_ops
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from strato.db.base import UTCDateTime

revision = "0018_migrations"
down_revision = "0017_instance_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("instance_uuid", sa.String(36), nullable=False, index=True),
        sa.Column("source_compute", sa.String(255), nullable=True),
        sa.Column("dest_compute", sa.String(255), nullable=True),
        sa.Column("source_node", sa.String(255), nullable=True),
        sa.Column("dest_node", sa.String(255), nullable=True),
        sa.Column("dest_host", sa.String(255), nullable=True),
        sa.Column("old_flavor_id", sa.String(255), nullable=True),
        sa.Column("new_flavor_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(255), nullable=False),
        sa.Column("migration_type", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("migrations")
