"""Console tokens (Nova's console_auth_tokens): hashed, per instance, expiring.

Revision ID: 0010_console_tokens
Revises: 0007_messages
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0010_console_tokens"
down_revision = "0009_config_drive"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_auth_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=255), nullable=False),
        sa.Column("console_type", sa.String(length=255), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("expires", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_auth_tokens")),
    )
    with op.batch_alter_table("console_auth_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_console_auth_tokens_token_hash", ["token_hash"],
                              unique=True)
        batch_op.create_index(batch_op.f("ix_console_auth_tokens_instance_uuid"),
                              ["instance_uuid"], unique=False)
        batch_op.create_index(batch_op.f("ix_console_auth_tokens_expires"), ["expires"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("console_auth_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_auth_tokens_expires"))
        batch_op.drop_index(batch_op.f("ix_console_auth_tokens_instance_uuid"))
        batch_op.drop_index("ix_console_auth_tokens_token_hash")
    op.drop_table("console_auth_tokens")
