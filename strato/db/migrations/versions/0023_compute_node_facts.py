"""A compute host's facts as its agent reports them with each heartbeat (uptime,
CPU, QEMU version, free disk): os-hypervisors shows another host's own figures.

Revision ID: 0023_compute_node_facts
Revises: 0022_schedules
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_compute_node_facts"
down_revision = "0022_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compute_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("facts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compute_nodes", schema=None) as batch_op:
        batch_op.drop_column("facts")
