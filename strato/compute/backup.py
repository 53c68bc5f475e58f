"""Nova's ``createBackup`` server action: an image-backed snapshot made by createImage's
own code (``strato.compute.snapshot_manager``: an O(1) clone when the image store is
this block store), tagged ``image_type=backup`` and ``backup_type``, then *rotation*:
the server's backups of that type beyond the ``rotation`` newest are deleted.

API side: Nova's schema, 404 → 403 (``os_compute_api:os-create-backup``) → 409 (state)
→ 400 for a volume-backed server (Nova refuses those: "Backup is not supported for
volume-backed instances."); then the image record, task state ``image_backup``, the
``createBackup`` action and the ``compute.backup`` job in one transaction.

Job: ``image_backup`` → ``image_pending_upload`` → ``image_uploading`` → none (Nova's
order: a backup never shows ``image_snapshot``), then the rotation.  A crash anywhere
converges: before the image is active the attempt is undone and made again (as
createImage's); after it, the re-run only finishes the task state and rotates (the
rotation is idempotent: it lists what is there and deletes the excess).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import states
from strato.compute.api import ComputeAPI, P, ctx_from, ctx_payload, now, state_message
from strato.compute.manager import _event, _load, _set, instance_lock
from strato.compute.models import Instance
from strato.compute.snapshot_api import _CORE, _image_backed_body
from strato.compute.snapshot_manager import (
    Gone,
    _image,
    _image_backed,
    _reset,
    _step,
    undo,
)
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, StratoError
from strato.image.models import Image as ImageRow
from strato.image.models import ImageProperty
from strato.jobs.queue import enqueue
from strato.jobs.worker import Interrupted, JobContext, LeaseLost, handler
from strato.storage import crash
from strato.validation import INT32_MAX, Int, Map, Obj, Str, check_json

LOG = logging.getLogger(__name__)
ACTIONS = ("createBackup",)
RULE = P + "os-create-backup"
EVENT = "compute_backup_instance"
#: Nova's ``create_backup`` schema (2.1+): rotation a non-negative integer, also as a
#: string of digits; no other keys
SCHEMA = Obj({
    "name": Str(255, min=1), "backup_type": Str(255), "rotation": Int(0, INT32_MAX,
                                                                      strings=True),
    "metadata": Map(),
}, required=("name", "backup_type", "rotation"), extra=None)
#: from 2.39 Nova no longer checks the metadata quota on createBackup
NO_QUOTA_CHECK = (2, 39)
#: from 2.45 the image id is in the body and there is no Location header
BODY_VERSION = (2, 45)
#: statuses Glance lists (a pending_delete image is on its way out)
_LISTED = ("queued", "saving", "active", "killed", "deactivated", "uploading", "importing")


class Backups:
    """``POST /servers/{id}/action {"createBackup": {...}}``."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> tuple[str | None, dict[str, Any] | None]:
        """(Location or None, body or None): Nova's two response forms."""
        api = self.api
        SCHEMA(args, "createBackup")
        check_json(args)
        image_name = args["name"]
        if image_name != image_name.strip():  # Nova's ``name`` pattern
            raise BadRequest("Invalid input for field/attribute name: leading or trailing "
                             "whitespace is not allowed.")
        backup_type, rotation = args["backup_type"], int(args["rotation"])
        metadata: dict[str, str] = dict(args.get("metadata") or {})
        with api.db.session(readonly=True) as session:
            inst = api.get_row(session, ctx, server_id, RULE)  # 404, then 403
            session.expunge_all()
        limit = api.conf.compute.quota_metadata_items
        if version < NO_QUOTA_CHECK and 0 <= limit < len(metadata):
            raise Forbidden(f"Image metadata limit exceeded: {len(metadata)} items, at "
                            f"most {limit}.")
        _check_state(inst)
        if not inst.image_ref:
            raise BadRequest("Backup is not supported for volume-backed instances.")
        body = _image_backed_body(api, ctx, inst, image_name)
        for key, value in metadata.items():
            if key in _CORE:
                raise BadRequest(f"Invalid image metadata: {key!r} is not a property.")
            body[key] = value
        body["image_type"], body["backup_type"] = "backup", backup_type
        try:
            record = api.images.new_record(ctx, body)
            with api.db.session() as session:  # all of it or none (see createImage)
                image = api.images.add_record(session, record)
                done = session.execute(update(Instance).where(
                    Instance.id == inst.id, Instance.deleted.is_(False),
                    Instance.vm_state.in_(states.SNAPSHOT_VM_STATES),
                    Instance.task_state.is_(None)).values(
                    task_state=states.IMAGE_BACKUP, updated_at=now())).rowcount
                if not done:
                    with api.db.session(readonly=True) as s2:
                        _check_state(s2.get(Instance, inst.id) or inst)
                    raise Conflict(f"Instance {inst.id} changed state; try again.")
                api.record_action(session, ctx, inst, "createBackup")
                events.emit(session, "compute", "compute.instance.snapshot.start", inst.id,
                            inst.project_id, image_id=image["id"])
                crash.point("createBackup", "before-job")
                enqueue(session, "compute.backup", {
                    "instance_id": inst.id, "image_id": image["id"], "ctx": ctx_payload(ctx),
                    "backup_type": backup_type, "rotation": rotation},
                    target=f"host:{inst.host}", max_attempts=3)
        except StratoError as exc:
            if exc.status == 413:  # Glance's image count quota: Nova answers 403
                raise Forbidden(exc.message) from None
            raise
        if version >= BODY_VERSION:
            return None, {"image_id": image["id"]}
        # Nova: the compute API's image URL, and only when the backup is kept
        return (f"{api.base}/compute/v2.1/images/{image['id']}" if rotation > 0 else None,
                None)


def _check_state(inst: Instance) -> None:
    """Nova's ``@check_instance_state`` on ``backup()``: these vm_states, no task."""
    if inst.task_state is not None or inst.vm_state not in states.SNAPSHOT_VM_STATES:
        raise Conflict(state_message("createBackup", inst))


# ---------------------------------------------------------------- the job
@handler("compute.backup")
def backup(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, image_id = p["instance_id"], p["image_id"]
    rctx = ctx_from(p["ctx"])
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        image = _image(services, image_id)
        if image is not None and image.status == "active":  # made before a crash
            if inst is not None and inst.task_state in states.BACKUP_TASKS:
                _finish(services, inst, image_id, inst.task_state, rctx.request_id)
        elif inst is None or inst.deleted or inst.task_state not in states.BACKUP_TASKS:
            undo(services, rctx, instance_id, image_id, ctx.progress)
            return {"skipped": "not backing up"}
        else:
            failed = _make(ctx, rctx, inst, image_id)
            if failed is not None:
                return failed
            _finish(services, inst, image_id, states.IMAGE_UPLOADING, rctx.request_id)
    crash.fault("backup", "before-rotation")
    deleted = rotate(services, rctx, instance_id, p["backup_type"], int(p["rotation"]))
    return {"image_id": image_id, "rotated": deleted}


def _make(ctx: JobContext, rctx: RequestContext, inst: Instance,
          image_id: str) -> dict[str, Any] | None:
    """The image's data, by createImage's code; on failure everything is undone and
    the error returned."""
    services = ctx.services
    _event(services, inst.id, rctx.request_id, EVENT)
    try:
        if inst.task_state != states.IMAGE_BACKUP or ctx.progress:
            LOG.info("instance %s: backup %s cut off at %s; resuming", inst.id, image_id,
                     inst.task_state)
            _reset(services, image_id)
            _step(services, inst.id, inst.task_state, states.IMAGE_BACKUP)
        image = _image(services, image_id)
        if image is None or image.status != "queued":
            raise Gone(f"image {image_id} was deleted before its data was made")
        props = {prop.name: prop.value for prop in image.properties}
        _image_backed(ctx, inst, image_id, props, expect=states.IMAGE_BACKUP)
    except (LeaseLost, Interrupted):
        raise  # the next owner of the job resumes it
    except Exception as exc:  # noqa: BLE001 - everything made so far is undone
        LOG.warning("instance %s: backup %s failed: %s", inst.id, image_id, exc)
        undo(services, rctx, inst.id, image_id, ctx.progress)
        with services.db.session() as session:
            session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.task_state.in_(states.BACKUP_TASKS))
                .values(task_state=None, updated_at=now()))
            events.emit(session, "compute", "compute.instance.snapshot.error", inst.id,
                        inst.project_id, image_id=image_id, error=str(exc)[:255])
        _event(services, inst.id, rctx.request_id, EVENT, "Error",
               f"{type(exc).__name__}: {exc}")
        return {"error": str(exc)}
    return None


def _finish(services: Any, inst: Instance, image_id: str, expect: str | None,
            request_id: str | None) -> None:
    """Task state none (Nova clears it before rotating), ``snapshot.end``, the event."""
    with services.db.session() as session:
        _set(session, inst.id, expect, task_state=None)
        events.emit(session, "compute", "compute.instance.snapshot.end", inst.id,
                    inst.project_id, image_id=image_id)
    _event(services, inst.id, request_id, EVENT, "Success")


def backups(services: Any, instance_id: str, backup_type: str) -> list[str]:
    """The server's backups of ``backup_type`` Glance would list, newest first."""
    with services.db.session(readonly=True) as session:
        rows = session.execute(select(ImageRow.id, ImageRow.created_at, ImageProperty.name,
                                      ImageProperty.value).join(
            ImageProperty, ImageProperty.image_id == ImageRow.id).where(
            ImageRow.status.in_(_LISTED), ImageRow.id.in_(select(ImageProperty.image_id).where(
                ImageProperty.name == "instance_uuid", ImageProperty.value == instance_id)),
            ImageProperty.name.in_(("image_type", "backup_type"))))
        props: dict[str, dict[str, str]] = {}
        created: dict[str, Any] = {}
        for image_id, created_at, key, value in rows:
            props.setdefault(image_id, {})[key] = value
            created[image_id] = created_at
    mine = [i for i, p in props.items()
            if p.get("image_type") == "backup" and p.get("backup_type") == backup_type]
    return sorted(mine, key=lambda i: (created[i], i), reverse=True)


def rotate(services: Any, rctx: RequestContext, instance_id: str, backup_type: str,
           rotation: int) -> list[str]:
    """Nova's ``_rotate_backups``: delete the backups beyond the ``rotation`` newest
    (0: all of them, the new one too), through Glance's delete and its rules (a backup
    something was cloned from stays: 409, logged, the next one is tried)."""
    deleted: list[str] = []
    for image_id in backups(services, instance_id, backup_type)[rotation:]:
        try:
            services.image.delete(rctx, image_id)
        except StratoError as exc:  # Nova logs and continues with the next image
            LOG.info("instance %s: backup %s not rotated out: %s", instance_id, image_id,
                     exc)
            continue
        deleted.append(image_id)
        LOG.info("instance %s: backup %s rotated out (%s, rotation %d)", instance_id,
                 image_id, backup_type, rotation)
    return deleted
