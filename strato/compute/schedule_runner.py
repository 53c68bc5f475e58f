"""Snapshot schedules' runs on the durable job queue.

``schedule.run`` (one pending per enabled schedule, ``run_after`` = its slot):

1. claims the slot: ``UPDATE … SET next_run_at = <the first slot after now> WHERE id = ?
   AND next_run_at = <slot>`` and, in that same transaction, enqueues the job for the
   new slot.  Only one claimer of a slot can win, so two workers never run the same
   slot; and because the next slot is computed from *now*, slots missed while strato
   was down collapse into one late run.
2. makes an ordinary createImage of the server through the compute API (its own
   instance action and events), tagged ``strato_schedule_id``/``strato_schedule_slot``.
   A 409 (the server is busy or in a state createImage refuses) makes the run
   ``skipped``.  A job cut off after its claim resumes from here: the image of its slot
   is looked up before a new one is asked for.
3. hands over to ``schedule.finish``, which polls the image without holding a worker
   (it re-enqueues itself), records ``last_result``, and prunes the schedule's images
   beyond ``count`` or older than ``max_age`` through the normal image delete (the
   volume snapshots behind a volume-backed server's image go with it).

``reconcile`` (start-up) gives every enabled schedule without a job one.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute.models import Instance, InstanceAction
from strato.compute.schedule_models import SnapshotSchedule
from strato.compute.schedules import (
    JOB,
    drop_jobs,
    enqueue_run,
    next_slot,
    parse_slot,
    pending_jobs,
    slot_text,
)
from strato.context import RequestContext
from strato.db import Database, utcnow
from strato.events import Event
from strato.exceptions import Conflict, NotFound, StratoError
from strato.image.models import Image as ImageRow
from strato.image.models import ImageProperty
from strato.jobs.models import RUNNING
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash

LOG = logging.getLogger(__name__)
FINISH = "schedule.finish"
SCHEDULE_PROP, SLOT_PROP = "strato_schedule_id", "strato_schedule_slot"
#: how long a run's createImage may take before the run is recorded as an error
FINISH_TIMEOUT = timedelta(hours=2)
POLL = 0.5


def _load(db: Database, schedule_id: str) -> SnapshotSchedule | None:
    with db.session(readonly=True) as session:
        row = session.get(SnapshotSchedule, schedule_id)
        if row is not None:
            session.expunge(row)
        return row


def _server_gone(db: Database, server_id: str) -> bool:
    with db.session(readonly=True) as session:
        inst = session.get(Instance, server_id)
        return inst is None or bool(inst.deleted)


def _drop(db: Database, schedule_id: str) -> None:
    """The server went without its delete taking the schedule (deleted by other means)."""
    with db.session() as session:
        row = session.get(SnapshotSchedule, schedule_id)
        if row is not None:
            drop_jobs(session, row.id)
            session.delete(row)


def claim(db: Database, schedule_id: str, slot: datetime) -> datetime | None:
    """Take ``slot`` for this run; None if another run took it or the schedule moved
    on (changed, disabled, deleted).  The next slot's job is enqueued in the same
    transaction, so a schedule never ends up without one."""
    now = utcnow()
    with db.session() as session:
        row = session.get(SnapshotSchedule, schedule_id)
        if row is None or not row.enabled or row.next_run_at != slot:
            return None
        following = next_slot(row.schedule, row.anchor_at, now)
        won = session.execute(update(SnapshotSchedule).where(
            SnapshotSchedule.id == schedule_id, SnapshotSchedule.enabled.is_(True),
            SnapshotSchedule.next_run_at == slot).values(
            next_run_at=following, last_run_at=slot)).rowcount
        if not won:  # another claimer committed first: nothing was written here
            return None
        enqueue_run(session, schedule_id, following)
        events.emit(session, "compute", "compute.snapshot_schedule.run.start",
                    schedule_id, row.project_id, server_id=row.server_id,
                    slot=slot_text(slot), started_at=slot_text(now))
        return following


def _record(db: Database, row: SnapshotSchedule, slot: datetime, status: str,
            message: str, image_id: str | None = None) -> None:
    """``last_result`` of the run of ``slot``, unless a later slot's result is there.
    Once per slot: a finish job killed after this commit runs again after the restart."""
    with db.session() as session:
        if any((ev.payload or {}).get("slot") == slot_text(slot)
               for ev in session.scalars(select(Event).where(
                   Event.resource_id == row.id,
                   Event.event_type == "compute.snapshot_schedule.run.end").order_by(
                   Event.id.desc()).limit(50))):
            return
        now_row = session.get(SnapshotSchedule, row.id)
        if now_row is not None:
            prev = now_row.last_result or {}
            if not prev.get("slot") or parse_slot(prev["slot"]) <= slot:
                now_row.last_result = {"status": status, "message": message[:255],
                                       "image_id": image_id, "slot": slot_text(slot)}
        events.emit(session, "compute", "compute.snapshot_schedule.run.end", row.id,
                    row.project_id, server_id=row.server_id, slot=slot_text(slot),
                    status=status, message=message[:255], image_id=image_id)


def _ctx(row: SnapshotSchedule, slot: datetime | None = None) -> RequestContext:
    """Runs act as a member of the server's project, for the user who set the schedule.
    A run's request id follows from its slot, so its createImage action is findable."""
    rid = uuid.uuid5(uuid.NAMESPACE_URL, f"strato-schedule:{row.id}:{slot_text(slot)}") \
        if slot is not None else uuid.uuid4()
    return RequestContext(user_id=row.user_id, project_id=row.project_id,
                          roles=["member", "reader"], request_id=f"req-{rid}")


def _asked(db: Database, row: SnapshotSchedule, slot: datetime) -> bool:
    """Did this slot's createImage get accepted (its instance action exists)?"""
    with db.session(readonly=True) as session:
        return session.scalars(select(InstanceAction.id).where(
            InstanceAction.instance_uuid == row.server_id,
            InstanceAction.request_id == _ctx(row, slot).request_id)).first() is not None


def _image_of(db: Database, schedule_id: str, slot: datetime) -> str | None:
    with db.session(readonly=True) as session:
        ids = set(session.scalars(select(ImageProperty.image_id).where(
            ImageProperty.name == SCHEDULE_PROP, ImageProperty.value == schedule_id)))
        if not ids:
            return None
        return session.scalars(select(ImageProperty.image_id).where(
            ImageProperty.image_id.in_(ids), ImageProperty.name == SLOT_PROP,
            ImageProperty.value == slot_text(slot))).first()


@handler(JOB)
def run(ctx: JobContext) -> dict[str, Any]:
    services, db = ctx.services, ctx.services.db
    schedule_id, slot = ctx.payload["schedule_id"], parse_slot(ctx.payload["slot"])
    row = _load(db, schedule_id)
    if row is None:
        return {"skipped": "schedule deleted"}
    if not ctx.progress.get("claimed"):
        if _server_gone(db, row.server_id):
            _drop(db, schedule_id)
            return {"skipped": "server deleted: schedule removed"}
        if claim(db, schedule_id, slot) is None:
            return {"skipped": "slot not this job's"}
        ctx.checkpoint(claimed=True)
    crash.point("schedule", "after-claim")
    # cut off before: the image this run asked for, never a second one for the slot
    image_id = ctx.progress.get("image_id") or _image_of(db, schedule_id, slot)
    if image_id is None and _asked(db, row, slot):
        _record(db, row, slot, "error", "the run was cut off after its createImage and "
                "its image is gone")
        return {"slot": slot_text(slot), "image_id": None}
    if image_id is None:
        image_id = _create_image(services, row, slot)
        if image_id is None:
            return {"slot": slot_text(slot), "image_id": None}
        ctx.checkpoint(image_id=image_id)
    crash.point("schedule", "after-create-image")
    with db.session() as session:
        enqueue(session, FINISH, {"schedule_id": schedule_id, "slot": slot_text(slot),
                                  "image_id": image_id, "since": slot_text(utcnow())},
                delay=POLL)
    return {"slot": slot_text(slot), "image_id": image_id}


def _create_image(services: Any, row: SnapshotSchedule, slot: datetime) -> str | None:
    """createImage through the compute API; None when the run ended here (recorded)."""
    from strato.compute.snapshot_api import create_image

    stamp = slot.strftime("%Y%m%dT%H%M%SZ")
    metadata = {SCHEDULE_PROP: row.id, SLOT_PROP: slot_text(slot),
                "strato_quiesce": row.quiesce}
    try:
        _, out = create_image(services.compute, _ctx(row, slot), row.server_id, {
            "name": f"{row.name}-{stamp}", "metadata": metadata}, (2, 45))
    except Conflict as exc:
        LOG.info("snapshot schedule %s: slot %s skipped: %s", row.id, slot_text(slot),
                 exc.message)
        _record(services.db, row, slot, "skipped", exc.message)
        return None
    except NotFound:
        _drop(services.db, row.id)
        return None
    except StratoError as exc:
        LOG.warning("snapshot schedule %s: slot %s failed: %s", row.id, slot_text(slot),
                    exc.message)
        _record(services.db, row, slot, "error", f"createImage: {exc.message}")
        return None
    assert out is not None
    return str(out["image_id"])


@handler(FINISH)
def finish(ctx: JobContext) -> dict[str, Any]:
    services, db, p = ctx.services, ctx.services.db, ctx.payload
    slot, image_id = parse_slot(p["slot"]), p["image_id"]
    row = _load(db, p["schedule_id"])
    with db.session(readonly=True) as session:
        image = session.get(ImageRow, image_id)
        status = image.status if image is not None else "deleted"
    if status in ("queued", "saving", "importing", "uploading"):
        if utcnow() - parse_slot(p["since"]) < FINISH_TIMEOUT:
            polls = int(p.get("polls", 0)) + 1  # backs off to one look every 30 s
            with db.session() as session:
                enqueue(session, FINISH, {**p, "polls": polls},
                        delay=min(30.0, POLL * 1.5 ** polls))
            return {"waiting": status}
        if row is not None:
            _record(db, row, slot, "error", f"image {image_id} still {status}", image_id)
        return {"timeout": status}
    if row is None:
        return {"skipped": "schedule deleted"}
    if status == "active":
        _record(db, row, slot, "success", "", image_id)
    elif _made(db, row.server_id, image_id):  # finished, then pruned by a newer run
        _record(db, row, slot, "success", "pruned by retention since", image_id)
    else:
        _record(db, row, slot, "error", _why(db, row.server_id, image_id), image_id)
    pruned = prune(services, row)
    return {"status": status, "pruned": pruned}


def _made(db: Database, server_id: str, image_id: str) -> bool:
    with db.session(readonly=True) as session:
        return any((ev.payload or {}).get("image_id") == image_id
                   for ev in session.scalars(select(Event).where(
                       Event.resource_id == server_id,
                       Event.event_type == "compute.instance.snapshot.end").order_by(
                       Event.id.desc()).limit(200)))


def _why(db: Database, server_id: str, image_id: str) -> str:
    """The createImage's own error (its snapshot.error notification), if any."""
    with db.session(readonly=True) as session:
        for ev in session.scalars(select(Event).where(
                Event.resource_id == server_id,
                Event.event_type == "compute.instance.snapshot.error").order_by(
                Event.id.desc()).limit(50)):
            if (ev.payload or {}).get("image_id") == image_id:
                return f"createImage failed: {ev.payload.get('error')}"
    return f"createImage failed: image {image_id} was not made"


# ---------------------------------------------------------------- retention
def prune(services: Any, row: SnapshotSchedule) -> list[str]:
    """Delete this schedule's active images beyond ``count`` (oldest first) or older
    than ``max_age``; returns the ids deleted."""
    with services.db.session(readonly=True) as session:
        images = list(session.execute(select(ImageRow.id, ImageRow.created_at).join(
            ImageProperty, ImageProperty.image_id == ImageRow.id).where(
            ImageProperty.name == SCHEDULE_PROP, ImageProperty.value == row.id,
            ImageRow.status == "active").order_by(ImageRow.created_at.desc(),
                                                  ImageRow.id)))
    keep = row.retention.get("count")
    max_age = row.retention.get("max_age")
    oldest = utcnow() - timedelta(seconds=max_age) if max_age else None
    doomed = [image_id for n, (image_id, created) in enumerate(images)
              if (keep is not None and n >= keep)
              or (oldest is not None and created < oldest)]
    gone = []
    for image_id in doomed:
        if _delete_image(services, row, image_id):
            gone.append(image_id)
    return gone


def _delete_image(services: Any, row: SnapshotSchedule, image_id: str) -> bool:
    rctx = _ctx(row)
    with services.db.session(readonly=True) as session:
        prop = session.get(ImageProperty, (image_id, "block_device_mapping"))
        mapping = prop.value if prop is not None else ""
    snapshots = []
    with suppress(ValueError, TypeError, AttributeError):
        snapshots = [m["snapshot_id"] for m in json.loads(mapping or "[]")
                     if m.get("snapshot_id")]
    try:
        services.compute.images.delete(rctx, image_id)
    except NotFound:
        pass
    except StratoError as exc:
        LOG.warning("snapshot schedule %s: image %s not pruned: %s", row.id, image_id,
                    exc.message)
        return False
    # a volume-backed server's image holds only the mapping: its volume snapshots
    # are the data, and they go with it
    for snapshot_id in snapshots:
        try:
            services.volume.delete_snapshot(rctx, snapshot_id)
        except NotFound:
            pass
        except StratoError as exc:
            LOG.warning("snapshot schedule %s: volume snapshot %s not pruned: %s",
                        row.id, snapshot_id, exc.message)
    return True


# ---------------------------------------------------------------- start-up
def reconcile(services: Any) -> int:
    """Every enabled schedule without a ``schedule.run`` job gets one (for its
    ``next_run_at``, at once if that has passed); schedules of deleted servers go.
    Returns how many jobs were enqueued."""
    from strato.jobs.models import PENDING

    made = 0
    with services.db.session() as session:
        busy = {j.payload.get("schedule_id")
                for j in pending_jobs(session, None, (PENDING, RUNNING))}
        for row in session.scalars(select(SnapshotSchedule).where(
                SnapshotSchedule.enabled.is_(True))):
            inst = session.get(Instance, row.server_id)
            if inst is None or inst.deleted:
                drop_jobs(session, row.id)
                session.delete(row)
                continue
            if row.id in busy:
                continue
            if row.next_run_at is None:
                row.next_run_at = next_slot(row.schedule, row.anchor_at, utcnow())
            LOG.info("snapshot schedule %s had no job: one for %s", row.id,
                     slot_text(row.next_run_at))
            enqueue_run(session, row.id, row.next_run_at)
            made += 1
    return made
