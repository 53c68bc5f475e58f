"""Compute tables: flavors, instances, their block devices, actions, compute nodes,
keypairs."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from strato.db.base import Base, UTCDateTime, utcnow

_BIGID = BigInteger().with_variant(Integer, "sqlite")


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Nova's flavorid
    name: Mapped[str] = mapped_column(String(255), unique=True)
    memory_mb: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer, default=0)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap: Mapped[int] = mapped_column(Integer, default=0)
    rxtx_factor: Mapped[float] = mapped_column(default=1.0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra_specs: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FlavorProject(Base):
    """A project that may use a private flavor (Nova's flavor access list)."""

    __tablename__ = "flavor_projects"

    flavor_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("flavors.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    image_ref: Mapped[str] = mapped_column(String(36), default="")
    kernel_id: Mapped[str] = mapped_column(String(36), default="")
    ramdisk_id: Mapped[str] = mapped_column(String(36), default="")
    flavor_id: Mapped[str] = mapped_column(String(255))
    flavor: Mapped[dict] = mapped_column(JSON, default=dict)  # the flavor as booted
    #: the image's boot properties (hw_firmware_type, hw_disk_bus, ...: ``bootinfo``)
    boot_meta: Mapped[dict | None] = mapped_column(JSON, nullable=True, default=dict)
    vm_state: Mapped[str] = mapped_column(String(32), default="building")
    task_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    power_state: Mapped[int] = mapped_column(Integer, default=0)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    access_ip_v4: Mapped[str | None] = mapped_column(String(39), nullable=True)
    access_ip_v6: Mapped[str | None] = mapped_column(String(39), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    network: Mapped[str] = mapped_column(String(16), default="auto")  # auto | none
    mac: Mapped[str] = mapped_column(String(17), default="")
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    fault: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reservation_id: Mapped[str] = mapped_column(String(255), default="")
    launch_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Nova's string column: "True" when the guest gets a config drive, else ""
    config_drive: Mapped[str] = mapped_column(String(255), default="", server_default="")
    #: the guest's hostname (Nova sanitizes the display name into it)
    hostname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the keypair's public key as it was at create (the keypair may change or go)
    key_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: what the guest posted to the metadata service's password endpoint (encrypted
    #: by the guest with its key; Nova keeps it as system metadata password_0..3)
    guest_password: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Nova's system metadata: what an operation in flight must remember across a
    #: restart (resize's old and new flavor, shelve's image, rescue's saved state, ...)
    system_metadata: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    reservations: Mapped[list] = mapped_column(JSON, default=list)
    quota_committed: Mapped[bool] = mapped_column(Boolean, default=False)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class BlockDevice(Base):
    """One of an instance's disks: the root (image or volume) and attached volumes."""

    __tablename__ = "block_device_mappings"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    # 2.89 shows it as ``bdm_uuid``
    uuid: Mapped[str | None] = mapped_column(String(36), nullable=True,
                                             default=lambda: str(uuid4()))
    instance_uuid: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    device_name: Mapped[str] = mapped_column(String(16))  # vda, vdb, ...
    source_type: Mapped[str] = mapped_column(String(16))  # image|volume|snapshot|blank
    destination_type: Mapped[str] = mapped_column(String(16))  # local|volume
    source_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    volume_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    volume_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    boot_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    created_volume: Mapped[bool] = mapped_column(Boolean, default=False)  # strato made it
    attachment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # new | attaching | attached | detaching
    status: Mapped[str] = mapped_column(String(16), default="new")
    tag: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceAction(Base):
    __tablename__ = "instance_actions"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(String(255), nullable=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InstanceActionEvent(Base):
    __tablename__ = "instance_action_events"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("instance_actions.id"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[str | None] = mapped_column(Text, nullable=True)  # 2.84: the fault
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ComputeNode(Base):
    """A hypervisor host's capacity, written by its agent at start."""

    __tablename__ = "compute_nodes"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    memory_mb: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    local_gb: Mapped[int] = mapped_column(Integer)
    hypervisor_type: Mapped[str] = mapped_column(String(32), default="QEMU")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: what its agent reports with each heartbeat (hosts.host_facts): uptime,
    #: cpu_info, hypervisor_version, disk_available_least
    facts: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class ConsoleAuthToken(Base):
    """A console token, as Nova keeps them: only its SHA-256 is stored, it opens one
    instance's console of one type, and it expires (``[consoleauth] token_ttl``)."""

    __tablename__ = "console_auth_tokens"
    __table_args__ = (Index("ix_console_auth_tokens_token_hash", "token_hash", unique=True),)

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(255))
    console_type: Mapped[str] = mapped_column(String(255))
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    host: Mapped[str] = mapped_column(String(255))  # where the guest's console is
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyPairRecord(Base):
    """A user's keypair (Nova's ``key_pairs``): names are unique per user."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(8), default="ssh")  # ssh | x509
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
