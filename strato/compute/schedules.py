"""Snapshot schedules (strato's own compute extension): validate, authorize, record.

``/compute/v2.1/servers/{server_id}/snapshot-schedules[/{id}]``.  A schedule is either a
five-field UTC cron line or an interval in seconds; its runs are ordinary createImage
requests made by ``schedule.run`` jobs (``strato.compute.schedule_runner``), and its
retention (``count`` and/or ``max_age``) prunes the images it made.

Every enabled schedule has exactly one pending ``schedule.run`` job, for the slot in
``next_run_at``; changing the timing or disabling replaces that job in the same
transaction as the change, so no job is ever left for a slot the schedule no longer has.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from strato.compute import states
from strato.compute.cron import Cron, CronError
from strato.compute.models import Instance
from strato.compute.schedule_models import SnapshotSchedule
from strato.compute.views import iso
from strato.context import RequestContext
from strato.db import utcnow
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound
from strato.jobs.models import PENDING, Job
from strato.jobs.queue import enqueue
from strato.validation import INT32_MAX, Bool, Int, Obj, Str, one_of

if TYPE_CHECKING:
    from strato.compute.api import ComputeAPI

P = "strato:snapshot_schedules:"
JOB = "schedule.run"
QUIESCE = ("required", "preferred", "never")
MAX_PER_SERVER = 10
DEFAULT_NAME = "scheduled"

_TIMING = one_of(
    Obj({"cron": Str(100, min=1)}, required=("cron",), extra=None),
    Obj({"interval": Int(1, INT32_MAX)}, required=("interval",), extra=None),
)
_RETENTION = Obj({"count": Int(1, 10000), "max_age": Int(1, INT32_MAX)}, extra=None)
_FIELDS = {
    "name": Str(255, min=1, strip=True),
    "schedule": _TIMING,
    "retention": _RETENTION,
    "quiesce": Str(enum=QUIESCE),
    "enabled": Bool(),
}
CREATE = Obj({"snapshot_schedule": Obj(_FIELDS, required=("schedule", "retention"),
                                       extra=None)},
             required=("snapshot_schedule",), extra=None)
UPDATE = Obj({"snapshot_schedule": Obj(_FIELDS, extra=None)},
             required=("snapshot_schedule",), extra=None)


# ---------------------------------------------------------------- slots
def _whole(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(microsecond=0)


def next_slot(schedule: dict[str, Any], anchor: datetime, after: datetime) -> datetime:
    """The first slot strictly after ``after``: a cron line's next matching minute, or
    the next point of the interval grid that starts at ``anchor``."""
    if "cron" in schedule:
        return Cron.parse(schedule["cron"]).next_after(after)
    step = int(schedule["interval"])
    anchor = _whole(anchor)
    k = max(1, math.floor((after - anchor).total_seconds() / step) + 1)
    return anchor + timedelta(seconds=k * step)


def slot_text(slot: datetime) -> str:
    """A slot as it travels in job payloads and image properties."""
    return _whole(slot).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def enqueue_run(session: Session, schedule_id: str, slot: datetime) -> Job:
    """The schedule's one pending job, due at its slot."""
    delay = max(0.0, (slot - utcnow()).total_seconds())
    return enqueue(session, JOB, {"schedule_id": schedule_id, "slot": slot_text(slot)},
                   delay=delay, max_attempts=5)


def pending_jobs(session: Session, schedule_id: str | None = None,
                 states: tuple[str, ...] = (PENDING,)) -> list[Job]:
    jobs = session.scalars(select(Job).where(Job.name == JOB, Job.state.in_(states)))
    return [j for j in jobs if schedule_id is None
            or j.payload.get("schedule_id") == schedule_id]


def drop_jobs(session: Session, schedule_id: str) -> None:
    ids = [j.id for j in pending_jobs(session, schedule_id)]
    if ids:
        session.execute(delete(Job).where(Job.id.in_(ids), Job.state == PENDING))


def drop_for_server(session: Session, server_id: str) -> int:
    """A deleted server's schedules go, with their pending jobs (same transaction as
    the delete).  Returns how many."""
    rows = list(session.scalars(select(SnapshotSchedule).where(
        SnapshotSchedule.server_id == server_id)))
    for row in rows:
        drop_jobs(session, row.id)
        session.delete(row)
    return len(rows)


# ---------------------------------------------------------------- views
def view(row: SnapshotSchedule) -> dict[str, Any]:
    result = row.last_result
    return {
        "id": row.id, "server_id": row.server_id, "name": row.name,
        "schedule": dict(row.schedule), "retention": dict(row.retention),
        "quiesce": row.quiesce, "enabled": bool(row.enabled),
        "next_run_at": iso(row.next_run_at) if row.enabled else None,
        "last_run_at": iso(row.last_run_at),
        "last_result": None if result is None else {
            "status": result.get("status"), "message": result.get("message"),
            "image_id": result.get("image_id")},
        "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
    }


def _timing(value: dict[str, Any]) -> dict[str, Any]:
    if "cron" in value:
        text = " ".join(str(value["cron"]).split())
        try:
            Cron.parse(text)
        except CronError as exc:
            raise BadRequest(f"Invalid cron expression: {exc}.") from None
        return {"cron": text}
    return {"interval": int(value["interval"])}


def _retention(value: dict[str, Any]) -> dict[str, int]:
    out = {k: int(v) for k, v in value.items()}
    if not out:
        raise BadRequest("retention needs 'count', 'max_age' or both.")
    return out


class SnapshotSchedules:
    """The routes' service: each call finds the server as Nova does (404 first), then
    enforces the schedule's policy rule (403)."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def _server(self, session: Session, ctx: RequestContext, server_id: str,
                action: str) -> Instance:
        inst = self.api.get_row(session, ctx, server_id)
        self.api.policy.enforce(ctx, P + action, {"project_id": inst.project_id})
        return inst

    @staticmethod
    def _row(session: Session, server_id: str, schedule_id: str) -> SnapshotSchedule:
        row = session.get(SnapshotSchedule, schedule_id)
        if row is None or row.server_id != server_id:
            raise NotFound(f"Snapshot schedule {schedule_id} could not be found.")
        return row

    def list(self, ctx: RequestContext, server_id: str) -> list[dict[str, Any]]:
        with self.api.db.session(readonly=True) as session:
            self._server(session, ctx, server_id, "list")
            rows = session.scalars(select(SnapshotSchedule).where(
                SnapshotSchedule.server_id == server_id).order_by(
                SnapshotSchedule.created_at, SnapshotSchedule.id))
            return [view(r) for r in rows]

    def show(self, ctx: RequestContext, server_id: str, schedule_id: str) -> dict[str, Any]:
        with self.api.db.session(readonly=True) as session:
            self._server(session, ctx, server_id, "show")
            return view(self._row(session, server_id, schedule_id))

    def create(self, ctx: RequestContext, server_id: str, body: Any) -> dict[str, Any]:
        ref = body["snapshot_schedule"]
        timing, retention = _timing(ref["schedule"]), _retention(ref["retention"])
        now = utcnow()
        with self.api.db.session() as session:
            inst = self._server(session, ctx, server_id, "create")
            if inst.task_state == states.DELETING:
                raise Conflict(f"Cannot 'create snapshot schedule' instance {inst.id} "
                               f"while it is in task_state {inst.task_state}")
            count = len(list(session.scalars(select(SnapshotSchedule.id).where(
                SnapshotSchedule.server_id == inst.id))))
            if count >= MAX_PER_SERVER:
                raise Forbidden(f"Server {inst.id} has {count} snapshot schedules already: "
                                f"at most {MAX_PER_SERVER}.")
            enabled = bool(ref.get("enabled", True))
            row = SnapshotSchedule(
                id=str(uuid.uuid4()), server_id=inst.id, project_id=inst.project_id,
                user_id=ctx.user_id, name=str(ref.get("name") or DEFAULT_NAME).strip(),
                schedule=timing, retention=retention,
                quiesce=ref.get("quiesce", "preferred"), enabled=enabled,
                anchor_at=_whole(now), created_at=now, updated_at=None)
            if enabled:
                row.next_run_at = next_slot(timing, row.anchor_at, now)
            session.add(row)
            session.flush()
            if row.next_run_at is not None:
                enqueue_run(session, row.id, row.next_run_at)
            return view(row)

    def update(self, ctx: RequestContext, server_id: str, schedule_id: str,
               body: Any) -> dict[str, Any]:
        ref = body["snapshot_schedule"]
        now = utcnow()
        with self.api.db.session() as session:
            self._server(session, ctx, server_id, "update")
            row = self._row(session, server_id, schedule_id)
            values: dict[str, Any] = {"updated_at": now, "user_id": ctx.user_id}
            if "name" in ref:
                values["name"] = str(ref["name"]).strip()
            if "retention" in ref:
                values["retention"] = _retention(ref["retention"])
            if "quiesce" in ref:
                values["quiesce"] = ref["quiesce"]
            timing = _timing(ref["schedule"]) if "schedule" in ref else dict(row.schedule)
            enabled = bool(ref.get("enabled", row.enabled))
            retime = "schedule" in ref or enabled != bool(row.enabled)
            if retime:
                values.update(schedule=timing, enabled=enabled, anchor_at=_whole(now),
                              next_run_at=next_slot(timing, now, now) if enabled else None)
            # the row first: a run claiming its slot meanwhile waits for this change
            # (or wins before it), so the job swap below sees the runner's next job
            session.execute(update(SnapshotSchedule).where(
                SnapshotSchedule.id == row.id).values(**values))
            if retime:
                drop_jobs(session, row.id)
                if enabled:
                    enqueue_run(session, row.id, values["next_run_at"])
            session.flush()
            session.refresh(row)
            return view(row)

    def delete(self, ctx: RequestContext, server_id: str, schedule_id: str) -> None:
        with self.api.db.session() as session:
            self._server(session, ctx, server_id, "delete")
            row = self._row(session, server_id, schedule_id)
            drop_jobs(session, row.id)
            session.delete(row)
