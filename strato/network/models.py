"""Network tables (Neutron's model, flattened): networks, subnets, ports and their
addresses and groups, security groups and rules, routers, floating IPs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from strato.db.base import Base, UTCDateTime, utcnow


class _Standard:
    """Neutron's standard attributes: description, timestamps, revision, tags."""

    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list] = mapped_column(JSON, default=list)


class Network(_Standard, Base):
    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    router_external: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Subnet(_Standard, Base):
    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    ip_version: Mapped[int] = mapped_column(Integer, default=4)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    allocation_pools: Mapped[list] = mapped_column(JSON, default=list)
    dns_nameservers: Mapped[list] = mapped_column(JSON, default=list)
    host_routes: Mapped[list] = mapped_column(JSON, default=list)


class Port(_Standard, Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    mac_address: Mapped[str] = mapped_column(String(32))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    binding_host_id: Mapped[str] = mapped_column(String(255), default="")
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed_address_pairs: Mapped[list] = mapped_column(JSON, default=list)
    #: bound by Nova from an existing port: unbound, not deleted, with the instance
    preserve_on_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the guest's host name, given to it by DHCP
    dns_name: Mapped[str] = mapped_column(String(255), default="")
    #: NIC order on its instance
    nic_index: Mapped[int] = mapped_column(Integer, default=0)


class PortIP(Base):
    __tablename__ = "port_ips"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address"),)

    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"),
                                         primary_key=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)


class SecurityGroup(_Standard, Base):
    __tablename__ = "security_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    stateful: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the project's "default" group (one per project, made on first use)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_groups"

    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"),
                                         primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"),
                                                   primary_key=True, index=True)


class SecurityGroupRule(_Standard, Base):
    __tablename__ = "security_group_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(8), default="IPv4")
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=True)


class Router(_Standard, Base):
    __tablename__ = "routers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the port on the external network (device_owner network:router_gateway)
    gw_port_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class FloatingIP(_Standard, Base):
    __tablename__ = "floating_ips"
    __table_args__ = (UniqueConstraint("floating_network_id", "floating_ip_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    floating_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    floating_subnet_id: Mapped[str] = mapped_column(String(36))
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    port_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
