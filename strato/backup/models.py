"""The backups table (Cinder's ``backups``): one row per backup, its store record
(``data``: the ``BackupData`` of what it copied) kept with it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strato.db.base import Base, UTCDateTime, utcnow


class Backup(Base):
    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(36), index=True)
    snapshot_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    container: Mapped[str | None] = mapped_column(String(255), nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="creating")
    fail_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int] = mapped_column(Integer)  # GiB, the volume's when backed up
    object_count: Mapped[int] = mapped_column(Integer, default=0)
    #: the backup this one holds the changes since (None: a full backup)
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    #: asked for as incremental (the data may still be full when no base was left)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    data_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    #: ``BackupData.to_dict()`` once the data is stored
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: the volume backend whose engine the data came from (``host@backend#pool``)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the volume's status before ``backing-up`` (Cinder's previous_status)
    previous_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the volume a restore in progress writes, and whether the restore made it
    restore_volume_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    reservations: Mapped[list] = mapped_column(JSON, default=list)
    quota_committed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
