"""The ``snapshot_schedules`` table: see :mod:`strato.compute.schedules`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from strato.db.base import Base, UTCDateTime, utcnow


class SnapshotSchedule(Base):
    """A server's snapshot schedule.

    ``next_run_at`` is the slot the one pending ``schedule.run`` job will claim (None
    while disabled); ``anchor_at`` is where an interval's grid starts.  ``user_id`` is
    the user runs act for (the one who last created or changed the schedule).
    """

    __tablename__ = "snapshot_schedules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str] = mapped_column(String(255))
    schedule: Mapped[dict] = mapped_column(JSON)
    retention: Mapped[dict] = mapped_column(JSON)
    quiesce: Mapped[str] = mapped_column(String(16), default="preferred")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
