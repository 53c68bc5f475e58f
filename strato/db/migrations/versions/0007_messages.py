"""Cinder's user messages.

Revision ID: 0007_messages
Revises: 0006_type_access
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0007_messages"
down_revision = "0006_type_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("resource_type", sa.String(length=255), nullable=True),
        sa.Column("resource_uuid", sa.String(length=36), nullable=True),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("action_id", sa.String(length=10), nullable=False),
        sa.Column("detail_id", sa.String(length=10), nullable=False),
        sa.Column("message_level", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("expires_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_project_id"), ["project_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_messages_resource_uuid"), ["resource_uuid"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_messages_expires_at"), ["expires_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_expires_at"))
        batch_op.drop_index(batch_op.f("ix_messages_resource_uuid"))
        batch_op.drop_index(batch_op.f("ix_messages_project_id"))
    op.drop_table("messages")
