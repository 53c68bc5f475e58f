"""Networking (Neutron subset): networks, subnets, ports with their addresses and
security groups, security groups and rules, routers, floating IPs.

Revision ID: 0011_network
Revises: 0008_keypairs
Create Date: 2026-12-02 12:06:29.178756
"""

import sqlalchemy as sa
from alembic import op

import strato.db.base

revision = "0011_network"
down_revision = "0008_keypairs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("router_external", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_networks")),
    )
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_networks_project_id"), ["project_id"], unique=False)

    op.create_table(
        "routers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("enable_snat", sa.Boolean(), nullable=False),
        sa.Column("gw_port_id", sa.String(length=36), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routers")),
    )
    with op.batch_alter_table("routers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_routers_project_id"), ["project_id"], unique=False)

    op.create_table(
        "security_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("stateful", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_groups")),
    )
    with op.batch_alter_table("security_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_groups_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "floating_ips",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("floating_network_id", sa.String(length=36), nullable=False),
        sa.Column("floating_subnet_id", sa.String(length=36), nullable=False),
        sa.Column("floating_ip_address", sa.String(length=64), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=True),
        sa.Column("fixed_ip_address", sa.String(length=64), nullable=True),
        sa.Column("router_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["floating_network_id"],
            ["networks.id"],
            name=op.f("fk_floating_ips_floating_network_id_networks"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_floating_ips")),
        sa.UniqueConstraint(
            "floating_network_id",
            "floating_ip_address",
            name=op.f("uq_floating_ips_floating_network_id"),
        ),
    )
    with op.batch_alter_table("floating_ips", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_floating_ips_floating_network_id"), ["floating_network_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_floating_ips_port_id"), ["port_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_floating_ips_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "ports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("mac_address", sa.String(length=32), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("device_owner", sa.String(length=255), nullable=False),
        sa.Column("binding_host_id", sa.String(length=255), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("allowed_address_pairs", sa.JSON(), nullable=False),
        sa.Column("preserve_on_delete", sa.Boolean(), nullable=False),
        sa.Column("dns_name", sa.String(length=255), nullable=False),
        sa.Column("nic_index", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_ports_network_id_networks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ports")),
        sa.UniqueConstraint("network_id", "mac_address", name=op.f("uq_ports_network_id")),
    )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ports_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ports_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ports_project_id"), ["project_id"], unique=False)

    op.create_table(
        "security_group_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("ethertype", sa.String(length=8), nullable=False),
        sa.Column("protocol", sa.String(length=40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("remote_group_id", sa.String(length=36), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["remote_group_id"],
            ["security_groups.id"],
            name=op.f("fk_security_group_rules_remote_group_id_security_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["security_group_id"],
            ["security_groups.id"],
            name=op.f("fk_security_group_rules_security_group_id_security_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group_rules")),
    )
    with op.batch_alter_table("security_group_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_group_rules_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_security_group_rules_security_group_id"),
            ["security_group_id"],
            unique=False,
        )

    op.create_table(
        "subnets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("gateway_ip", sa.String(length=64), nullable=True),
        sa.Column("enable_dhcp", sa.Boolean(), nullable=False),
        sa.Column("allocation_pools", sa.JSON(), nullable=False),
        sa.Column("dns_nameservers", sa.JSON(), nullable=False),
        sa.Column("host_routes", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", strato.db.base.UTCDateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
            name=op.f("fk_subnets_network_id_networks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subnets")),
    )
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnets_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_subnets_project_id"), ["project_id"], unique=False)

    op.create_table(
        "port_ips",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("subnet_id", sa.String(length=36), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"], ["ports.id"], name=op.f("fk_port_ips_port_id_ports"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["subnets.id"], name=op.f("fk_port_ips_subnet_id_subnets")
        ),
        sa.PrimaryKeyConstraint("port_id", "subnet_id", "ip_address", name=op.f("pk_port_ips")),
        sa.UniqueConstraint("subnet_id", "ip_address", name=op.f("uq_port_ips_subnet_id")),
    )
    op.create_table(
        "port_security_groups",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["ports.id"],
            name=op.f("fk_port_security_groups_port_id_ports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["security_group_id"],
            ["security_groups.id"],
            name=op.f("fk_port_security_groups_security_group_id_security_groups"),
        ),
        sa.PrimaryKeyConstraint(
            "port_id", "security_group_id", name=op.f("pk_port_security_groups")
        ),
    )
    with op.batch_alter_table("port_security_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_port_security_groups_security_group_id"),
            ["security_group_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("port_security_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_security_groups_security_group_id"))

    op.drop_table("port_security_groups")
    op.drop_table("port_ips")
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnets_project_id"))
        batch_op.drop_index(batch_op.f("ix_subnets_network_id"))

    op.drop_table("subnets")
    with op.batch_alter_table("security_group_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_group_rules_security_group_id"))
        batch_op.drop_index(batch_op.f("ix_security_group_rules_project_id"))

    op.drop_table("security_group_rules")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ports_project_id"))
        batch_op.drop_index(batch_op.f("ix_ports_network_id"))
        batch_op.drop_index(batch_op.f("ix_ports_device_id"))

    op.drop_table("ports")
    with op.batch_alter_table("floating_ips", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_floating_ips_project_id"))
        batch_op.drop_index(batch_op.f("ix_floating_ips_port_id"))
        batch_op.drop_index(batch_op.f("ix_floating_ips_floating_network_id"))

    op.drop_table("floating_ips")
    with op.batch_alter_table("security_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_groups_project_id"))

    op.drop_table("security_groups")
    with op.batch_alter_table("routers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_routers_project_id"))

    op.drop_table("routers")
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_networks_project_id"))

    op.drop_table("networks")
