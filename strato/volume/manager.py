"""The volume worker: jobs that do the store work and finish each state machine.

Handlers are idempotent: each looks at the record and the store and carries on from
where a crash left it.  A failed create leaves no store image behind, rolls the
quota reservation back and puts the volume in ``error`` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from strato import events
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash, same_cluster
from strato.storage.errors import ImageBusy, NoSpace
from strato.volume.api import IMAGE_CORE, snapshot_deltas, type_name, volume_deltas
from strato.volume.driver import ParentNotReleased, SnapshotIsBusy, VolumeIsBusy
from strato.volume.messages import Action, Detail, Resource
from strato.volume.models import Attachment, Snapshot, Volume, VolumeType
from strato.volume.scheduler import BackendState, NoValidBackend, Request, choose

LOG = logging.getLogger(__name__)


def _image_metadata(services: Any, image_id: str) -> tuple[dict[str, str], Any]:
    from strato.image.models import Image

    with services.db.session(readonly=True) as session:
        image = session.get(Image, image_id)
        if image is None:
            raise RuntimeError(f"image {image_id} went away")
        meta = {p.name: p.value for p in image.properties}
        meta.update({k: str(getattr(image, k)) for k in IMAGE_CORE
                     if getattr(image, k) is not None})
        meta["image_id"], meta["image_name"] = image.id, image.name or ""
        return meta, (image.location, image.disk_format, image.size)


def _driver(ctx: JobContext) -> Any:
    """The driver of the backend this job's target names (``volume:<backend>``)."""
    return ctx.services.volume_drivers[ctx.target.split(":", 1)[1]]


def _fail_create(services: Any, volume_id: str, status: str, reason: str,
                 action: tuple[str, str], request_id: str | None,
                 exception: BaseException | None = None,
                 detail: tuple[str, str] | None = None) -> None:
    """The create failed: ``error`` with the reason and a user message.  The volume
    keeps counting against the quota until it is deleted, as in Cinder: its
    reservation is committed, not released, so errors cannot pile up past the limit."""
    api = services.volume
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        if vol is None:
            return
        api.quota.commit(session, list(vol.reservations or []))
        api.set_status(session, Volume, volume_id, status, "error", fault=reason,
                       reservations=[], quota_committed=True)
        api.messages.record(session, vol.project_id, action, resource_uuid=volume_id,
                            exception=exception, detail=detail, request_id=request_id)
        events.emit(session, "volume", "volume.create.error", volume_id, vol.project_id,
                    error=reason)


@handler("volume.schedule")
def schedule_volume(ctx: JobContext) -> dict[str, Any]:
    """Pick a backend (filters and weighers), then hand the create to its worker."""
    services, volume_id = ctx.services, ctx.payload["volume_id"]
    api, conf = services.volume, services.conf.volume
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        if vol is None or vol.status != "creating" or vol.host is not None:
            return {"skipped": "placed or gone"}
        vtype = session.get(VolumeType, vol.volume_type_id) if vol.volume_type_id else None
        allocated: dict[str, float] = {}
        for host, size in session.execute(select(Volume.host, Volume.size).where(
                Volume.host.is_not(None), Volume.status != "error")):
            name = api.backend_of(host)
            allocated[name] = allocated.get(name, 0) + size
        states = [BackendState(b, allocated.get(b.name, 0), conf.reserved_percentage,
                               conf.max_over_subscription_ratio)
                  for b in api.backends.values()]
        request = Request(vol.size, vol.availability_zone,
                          dict(vtype.extra_specs or {}) if vtype else {})
        try:
            backend = choose(states, request, conf.scheduler_default_filters,
                             conf.scheduler_default_weighers, {
                                 "capacity_weight_multiplier": conf.capacity_weight_multiplier,
                                 "allocated_capacity_weight_multiplier":
                                     conf.allocated_capacity_weight_multiplier})
        except NoValidBackend as exc:
            reason, failure = str(exc), exc
        else:
            vol.host = api.host_of(backend.name)
            enqueue(session, "volume.create", dict(ctx.payload),
                    target=f"volume:{backend.name}", max_attempts=3)
            return {"backend": backend.name}
    _fail_create(services, volume_id, "creating", reason, Action.SCHEDULE_ALLOCATE_VOLUME,
                 ctx.payload.get("request_id"), exception=failure)
    return {"error": reason}


@handler("volume.create")
def create_volume(ctx: JobContext) -> dict[str, Any]:
    services, volume_id = ctx.services, ctx.payload["volume_id"]
    api, driver = services.volume, _driver(ctx)
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        if vol is None or vol.status != "creating":
            return {"skipped": vol.status if vol else "gone"}
        size, source = vol.size, ctx.payload.get("source")
    updates: dict[str, Any] = {}
    try:
        if driver.exists(volume_id):
            # A worker died after the store work: finish (a clone may lack its resize).
            LOG.info("volume %s is already in the store: finishing its create", volume_id)
            driver.extend(volume_id, size)
        elif source == "snapshot":
            driver.create_from_snapshot(volume_id, size, ctx.payload["src_volume_id"],
                                        ctx.payload["snapshot_id"])
        elif source == "volume":
            driver.create_cloned_volume(volume_id, size, ctx.payload["src_volume_id"])
        elif source == "image":
            _from_image(services, driver, volume_id, size, ctx.payload["image_id"], updates)
        else:
            driver.create_volume(volume_id, size)
        with services.db.session(readonly=True) as session:
            if source == "snapshot":
                snap = session.get(Snapshot, ctx.payload["snapshot_id"])
                if snap is not None and snap.image_metadata:
                    updates.update(bootable=True, image_metadata=dict(snap.image_metadata))
            elif source == "volume":
                src = session.get(Volume, ctx.payload["src_volume_id"])
                if src is not None and src.image_metadata:
                    updates["image_metadata"] = dict(src.image_metadata)
    except Exception as exc:  # noqa: BLE001 - every failure ends in 'error', quota released
        LOG.warning("volume %s: create failed: %s", volume_id, exc)
        if driver.exists(volume_id):
            driver.delete_volume(volume_id)
        if source == "image":  # Cinder's messages for a failed download or conversion
            action = Action.COPY_IMAGE_TO_VOLUME
            detail = Detail.NOT_ENOUGH_SPACE_FOR_IMAGE if isinstance(exc, NoSpace) else None
        else:
            action, detail = Action.CREATE_VOLUME_FROM_BACKEND, Detail.DRIVER_FAILED_CREATE
        _fail_create(services, volume_id, "creating", f"{type(exc).__name__}: {exc}",
                     action, ctx.payload.get("request_id"), exception=exc, detail=detail)
        return {"error": str(exc)}
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        api.quota.commit(session, list(vol.reservations or []))
        if not api.set_status(session, Volume, volume_id, "creating", "available",
                              reservations=[], quota_committed=True,
                              launched_at=datetime.now(UTC), **updates):
            LOG.warning("volume %s left 'creating' while being created", volume_id)
        events.emit(session, "volume", "volume.create.end", volume_id, vol.project_id,
                    size=vol.size)
    return {"volume_id": volume_id}


def _from_image(services: Any, driver: Any, volume_id: str, size: int, image_id: str,
                updates: dict[str, Any]) -> None:
    """Clone the image's data when it is cloneable; otherwise download and convert."""
    meta, (location, disk_format, image_size) = _image_metadata(services, image_id)
    if driver.cloneable(location, disk_format):
        driver.clone_image(volume_id, size, location)
    else:
        with services.db.session() as session:
            services.volume.set_status(session, Volume, volume_id, "creating", "downloading")
        try:
            chunks = services.image.store.read(location, image_size or 0, chunk=8 << 20)
            driver.copy_image(volume_id, size, chunks, disk_format or "raw", location)
        finally:
            with services.db.session() as session:
                services.volume.set_status(session, Volume, volume_id, "downloading",
                                           "creating")
    updates.update(bootable=True, image_metadata=meta)


@handler("volume.delete")
def delete_volume(ctx: JobContext) -> dict[str, Any]:
    """The store work of a delete, then the record.  A record never outlives its data
    claiming more than it has: snapshots of its own (VolumeIsBusy, nothing touched) send
    it back to ``available``; a store error that left the volume whole makes it
    ``error_deleting`` (a second delete retries); once the volume is gone from the
    store the record goes, and what it held on its parent, if that cannot be released
    now, is left to a ``volume.release`` job.  A crash anywhere: the job runs again."""
    services, volume_id = ctx.services, ctx.payload["volume_id"]
    api, driver = services.volume, _driver(ctx)
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        if vol is None or vol.status != "deleting":
            return {"skipped": vol.status if vol else "gone"}
        project_id = vol.project_id
    if ctx.payload.get("cascade"):
        refused = _cascade_snapshots(ctx, driver, volume_id)
        if refused is not None:
            return refused
    if "parent" not in ctx.progress:  # a retry after the volume went still releases it
        parent = driver.parent_of(volume_id)
        ctx.checkpoint(parent=list(parent) if parent else None)
    crash.fault("volume.delete", "before-store")
    left: tuple[str, str, str] | None = None
    try:
        driver.delete_volume(volume_id)
    except VolumeIsBusy as exc:
        with services.db.session() as session:
            api.set_status(session, Volume, volume_id, "deleting", "available",
                           fault=str(exc))
            events.emit(session, "volume", "volume.delete.error", volume_id, project_id,
                        error=str(exc))
        return {"busy": str(exc)}
    except ParentNotReleased as exc:
        LOG.warning("volume %s: %s; job volume.release will retry", volume_id, exc)
        left = exc.parent
    except Exception as exc:
        if driver.exists(volume_id):  # whole: an admin (or a second delete) retries
            LOG.warning("volume %s: delete failed: %s", volume_id, exc)
            with services.db.session() as session:
                api.set_status(session, Volume, volume_id, "deleting", "error_deleting",
                               fault=f"{type(exc).__name__}: {exc}")
                events.emit(session, "volume", "volume.delete.error", volume_id,
                            project_id, error=str(exc))
            return {"error": str(exc)}
        raise  # gone from the store, or partly: the job's retry finishes the delete
    parent = ctx.progress.get("parent")
    if left is None and parent:
        try:
            driver.release(tuple(parent))
        except Exception as exc:  # noqa: BLE001 - garbage on another volume: retried
            LOG.warning("volume %s: parent %s not released yet: %s", volume_id, parent, exc)
            left = tuple(parent)  # type: ignore[assignment]
    crash.fault("volume.delete", "before-record")
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        if vol is None:
            return {"skipped": "gone"}
        if vol.quota_committed:
            api.quota.release(session, vol.project_id,
                              volume_deltas(type_name(session, vol), vol.size))
        session.delete(vol)
        events.emit(session, "volume", "volume.delete.end", volume_id, vol.project_id)
        if left is not None:
            enqueue(session, "volume.release", {"parent": list(left)}, target=ctx.target,
                    max_attempts=10)
    return {"deleted": volume_id, **({"left_behind": list(left)} if left else {})}


def _cascade_snapshots(ctx: JobContext, driver: Any, volume_id: str) -> dict[str, Any] | None:
    """Cinder's cascade delete: the volume's snapshots (each ``deleting`` since the
    request) go before the volume.  Clones that still need one of them fail the whole
    delete before anything is touched: the snapshots back to ``available``, the volume
    back to the status it had, and user messages on the busy snapshots and on the
    volume.  A store error on a snapshot leaves it and the volume ``error_deleting``
    (a second cascade delete retries), the others ``available``.  None: all gone."""
    services, api = ctx.services, ctx.services.volume
    request_id = ctx.payload.get("request_id")
    with services.db.session(readonly=True) as session:
        snaps = {s.id: s.status for s in session.scalars(select(Snapshot).where(
            Snapshot.volume_id == volume_id))}
    stray = [sid for sid, status in snaps.items() if status != "deleting"]
    busy = [sid for sid in snaps if sid not in stray
            and driver.snapshot_has_clones(volume_id, sid)]
    if stray or busy:
        why = SnapshotIsBusy(f"snapshots {', '.join(busy)} have dependent volumes") \
            if busy else None
        _abort_cascade(ctx, volume_id, busy, why, f"cascade delete refused: snapshots "
                       f"{', '.join(busy or stray)} "
                       f"{'have dependent volumes' if busy else 'are not deleting'}")
        return {"busy": busy} if busy else {"error": f"snapshots {stray} not deleting"}
    for sid in sorted(snaps):
        try:
            driver.delete_snapshot(volume_id, sid)
        except SnapshotIsBusy as exc:  # a clone came after the check: nothing else lost
            _abort_cascade(ctx, volume_id, [sid], exc, f"cascade delete refused: {exc}")
            return {"busy": [sid]}
        except Exception as exc:
            if not driver.snapshot_exists(volume_id, sid):
                raise  # gone from the store: the job's retry carries on
            LOG.warning("volume %s: cascade delete of snapshot %s failed: %s", volume_id,
                        sid, exc)
            reason = f"{type(exc).__name__}: {exc}"
            with services.db.session() as session:
                api.set_status(session, Snapshot, sid, "deleting", "error_deleting",
                               fault=reason)
                _snapshot_delete_message(api, session, sid, exc, request_id)
                for other in snaps:
                    if other != sid:
                        api.set_status(session, Snapshot, other, "deleting", "available")
                vol = session.get(Volume, volume_id)
                api.set_status(session, Volume, volume_id, "deleting", "error_deleting",
                               fault=f"cascade delete: snapshot {sid}: {reason}")
                api.messages.record(session, vol.project_id, Action.SNAPSHOT_DELETE,
                                    resource_uuid=volume_id, request_id=request_id,
                                    detail=Detail.SNAPSHOT_DELETE_ERROR)
                events.emit(session, "volume", "volume.delete.error", volume_id,
                            vol.project_id, error=reason)
            return {"error": str(exc)}
        _forget_snapshot(services, sid)
    return None


def _abort_cascade(ctx: JobContext, volume_id: str, busy: list[str],
                   exc: BaseException | None, reason: str) -> None:
    """Nothing was touched: every snapshot still ``deleting`` and the volume go back."""
    services, api = ctx.services, ctx.services.volume
    request_id = ctx.payload.get("request_id")
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        for snap in session.scalars(select(Snapshot).where(Snapshot.volume_id == volume_id,
                                                           Snapshot.status == "deleting")):
            api.set_status(session, Snapshot, snap.id, "deleting", "available",
                           fault=reason if snap.id in busy else None)
        for sid in busy:
            _snapshot_delete_message(api, session, sid, exc, request_id)
        api.set_status(session, Volume, volume_id, "deleting",
                       ctx.payload.get("previous") or "available", fault=reason)
        api.messages.record(session, vol.project_id, Action.SNAPSHOT_DELETE,
                            resource_uuid=volume_id, exception=exc, request_id=request_id,
                            detail=None if busy else Detail.SNAPSHOT_DELETE_ERROR)
        events.emit(session, "volume", "volume.delete.error", volume_id, vol.project_id,
                    error=reason)


@handler("volume.release")
def release_volume_parent(ctx: JobContext) -> dict[str, Any]:
    """What a deleted volume held on its parent, released once nothing stops it."""
    _driver(ctx).release(tuple(ctx.payload["parent"]))
    return {"released": ctx.payload["parent"]}


@handler("snapshot.create")
def create_snapshot(ctx: JobContext) -> dict[str, Any]:
    """A snapshot of a volume a running guest writes through its own files (the local
    engine) can only be taken by that guest's QEMU: like Cinder's assisted snapshots,
    the job is handed to the compute host, which takes it and finishes it."""
    services, snapshot_id = ctx.services, ctx.payload["snapshot_id"]
    with services.db.session(readonly=True) as session:
        snap = session.get(Snapshot, snapshot_id)
        att = None if snap is None else session.scalars(select(Attachment).where(
            Attachment.volume_id == snap.volume_id,
            Attachment.attach_status == "attached",
            Attachment.attached_host.is_not(None))).first()
        host = att.attached_host if att is not None else None
        instance_id = att.instance_uuid if att is not None else None

    def hand_to_compute() -> dict[str, Any]:
        with services.db.session() as session:
            enqueue(session, "compute.volume_snapshot", {
                "snapshot_id": snapshot_id, "instance_id": instance_id,
                "backend": ctx.target.split(":", 1)[1]},
                target=f"host:{host}", max_attempts=3)
        return {"assisted": host}

    return finish_snapshot(services, _driver(ctx), snapshot_id,
                           on_busy=hand_to_compute if host and instance_id else None,
                           request_id=ctx.payload.get("request_id"))


def finish_snapshot(services: Any, driver: Any, snapshot_id: str,
                    on_busy: Callable[[], dict[str, Any]] | None = None,
                    request_id: str | None = None) -> dict[str, Any]:
    """Snapshot (or, when compute already took it, just protect) and make it available;
    on failure the snapshot goes to ``error`` (still counted against the quota until
    deleted) with a user message.  ``on_busy``: what to do instead when the volume is
    busy in a running guest (hand it over)."""
    api = services.volume
    with services.db.session(readonly=True) as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.status != "creating":
            return {"skipped": snap.status if snap else "gone"}
        vol = session.get(Volume, snap.volume_id)
        volume_id = snap.volume_id
        image_meta = dict(vol.image_metadata or {}) if vol is not None and vol.bootable else {}
    try:
        driver.create_snapshot(volume_id, snapshot_id)
    except Exception as exc:  # noqa: BLE001
        if on_busy is not None and isinstance(exc, ImageBusy):
            return on_busy()
        LOG.warning("snapshot %s: create failed: %s", snapshot_id, exc)
        fail_snapshot(services, snapshot_id, str(exc), notify=True, request_id=request_id)
        return {"error": str(exc)}
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        api.quota.commit(session, list(snap.reservations or []))
        api.set_status(session, Snapshot, snapshot_id, "creating", "available",
                       progress="100%", reservations=[], quota_committed=True,
                       image_metadata=image_meta)
        events.emit(session, "volume", "snapshot.create.end", snapshot_id, snap.project_id)
    return {"snapshot_id": snapshot_id}


def fail_snapshot(services: Any, snapshot_id: str, reason: str, notify: bool = False,
                  request_id: str | None = None) -> None:
    """A snapshot still ``creating`` goes to ``error``; like an errored volume it counts
    against the quota until deleted (Cinder commits a snapshot's quota at once).
    ``notify``: the user asked for this snapshot, so the failure gets a user message
    (a caller that removes the snapshot itself reports its own failure)."""
    api = services.volume
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.status != "creating":
            return
        api.quota.commit(session, list(snap.reservations or []))
        api.set_status(session, Snapshot, snapshot_id, "creating", "error", fault=reason,
                       reservations=[], quota_committed=True)
        if notify:
            api.messages.record(session, snap.project_id, Action.SNAPSHOT_CREATE,
                                resource_type=Resource.VOLUME_SNAPSHOT,
                                resource_uuid=snapshot_id,
                                detail=Detail.SNAPSHOT_CREATE_ERROR, request_id=request_id)


@handler("snapshot.delete")
def delete_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Clones that need the snapshot (nothing touched): back to ``available``.  A store
    error with the snapshot still there: ``error_deleting`` (a second delete retries).
    Once it is gone from the store, the record goes; a crash: the job runs again."""
    services, snapshot_id = ctx.services, ctx.payload["snapshot_id"]
    api, driver = services.volume, _driver(ctx)
    with services.db.session(readonly=True) as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.status != "deleting":
            return {"skipped": snap.status if snap else "gone"}
        volume_id = snap.volume_id
    request_id = ctx.payload.get("request_id")
    crash.fault("snapshot.delete", "before-store")
    try:
        driver.delete_snapshot(volume_id, snapshot_id)
    except SnapshotIsBusy as exc:
        with services.db.session() as session:
            if api.set_status(session, Snapshot, snapshot_id, "deleting", "available",
                              fault=str(exc)):
                _snapshot_delete_message(api, session, snapshot_id, exc, request_id)
        return {"busy": str(exc)}
    except Exception as exc:
        if not driver.snapshot_exists(volume_id, snapshot_id):
            raise  # gone from the store: the job's retry removes the record
        LOG.warning("snapshot %s: delete failed: %s", snapshot_id, exc)
        with services.db.session() as session:
            if api.set_status(session, Snapshot, snapshot_id, "deleting", "error_deleting",
                              fault=f"{type(exc).__name__}: {exc}"):
                _snapshot_delete_message(api, session, snapshot_id, exc, request_id)
        return {"error": str(exc)}
    crash.fault("snapshot.delete", "before-record")
    if not _forget_snapshot(services, snapshot_id):
        return {"skipped": "gone"}
    return {"deleted": snapshot_id}


def _snapshot_delete_message(api: Any, session: Any, snapshot_id: str,
                             exc: BaseException | None, request_id: str | None) -> None:
    """Cinder's message for a refused (busy) or failed snapshot delete."""
    snap = session.get(Snapshot, snapshot_id)
    api.messages.record(session, snap.project_id, Action.SNAPSHOT_DELETE,
                        resource_type=Resource.VOLUME_SNAPSHOT, resource_uuid=snapshot_id,
                        exception=exc, request_id=request_id,
                        detail=None if isinstance(exc, SnapshotIsBusy)
                        else Detail.SNAPSHOT_DELETE_ERROR)


def _forget_snapshot(services: Any, snapshot_id: str) -> bool:
    """The record of a snapshot gone from the store goes, its quota released; False
    when it was already gone."""
    api = services.volume
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None:
            return False
        if snap.quota_committed:
            vol = session.get(Volume, snap.volume_id)
            api.quota.release(session, snap.project_id,
                              snapshot_deltas(type_name(session, vol), snap.size))
        session.delete(snap)
        events.emit(session, "volume", "snapshot.delete.end", snapshot_id, snap.project_id)
    return True


@handler("volume.extend")
def extend_volume(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    api, volume_id = services.volume, p["volume_id"]
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        if vol is None or vol.status != "extending":
            return {"skipped": vol.status if vol else "gone"}
    try:
        _driver(ctx).extend(volume_id, p["new_size"])
    except Exception as exc:  # noqa: BLE001
        with services.db.session() as session:
            api.quota.rollback(session, p["reservations"])
            if api.set_status(session, Volume, volume_id, "extending", "error_extending",
                              fault=str(exc)):
                api.messages.record(session, vol.project_id, Action.EXTEND_VOLUME,
                                    resource_uuid=volume_id, exception=exc,
                                    detail=Detail.DRIVER_FAILED_EXTEND,
                                    request_id=p.get("request_id"))
        return {"error": str(exc)}
    with services.db.session() as session:
        api.quota.commit(session, p["reservations"])
        api.set_status(session, Volume, volume_id, "extending", p["previous"],
                       size=p["new_size"])
        events.emit(session, "volume", "volume.resize.end", volume_id, vol.project_id,
                    size=p["new_size"])
    return {"size": p["new_size"]}


@handler("volume.revert")
def revert_volume(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    api, volume_id, snapshot_id = services.volume, p["volume_id"], p["snapshot_id"]
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        if vol is None or vol.status != "reverting":
            return {"skipped": vol.status if vol else "gone"}
    try:
        _driver(ctx).revert_to_snapshot(volume_id, snapshot_id)
    except Exception as exc:  # noqa: BLE001
        with services.db.session() as session:
            api.set_status(session, Volume, volume_id, "reverting", "error", fault=str(exc))
            api.set_status(session, Snapshot, snapshot_id, "restoring", "available")
        return {"error": str(exc)}
    with services.db.session() as session:
        api.set_status(session, Volume, volume_id, "reverting", "available")
        api.set_status(session, Snapshot, snapshot_id, "restoring", "available")
        events.emit(session, "volume", "volume.revert.end", volume_id, vol.project_id,
                    snapshot_id=snapshot_id)
    return {"reverted_to": snapshot_id}


@handler("volume.upload_image")
def upload_to_image(ctx: JobContext) -> dict[str, Any]:
    """A clone into the image store when both sit on the same block store and the image
    is raw; otherwise a copy (converted to the asked format) through the image store."""
    from strato.image.data import Uploader, checksums
    from strato.image.models import Image

    services, p = ctx.services, ctx.payload
    volume_id, image_id = p["volume_id"], p["image_id"]
    driver = _driver(ctx)
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        image = session.get(Image, image_id)
        if vol is None or vol.status != "uploading":
            return {"skipped": vol.status if vol else "gone"}
        if image is None or image.status not in ("queued", "saving"):
            _finish_upload(services, volume_id, p["previous"], "image went away")
            return {"skipped": "image gone"}
    store = services.image.store
    same_store = same_cluster(getattr(store, "engine", None), driver.engine)
    try:
        if image.status == "saving":  # a crash mid-way: start over
            store.discard(image_id)
            services.image._set_status(image_id, "saving", "queued", upload_host=None)
        if same_store and p["disk_format"] == "raw":
            location, size = driver.clone_to_image(volume_id, image_id, store.pool)
            hashes = checksums(store.read(location, size, chunk=8 << 20))
            if not services.image._set_status(
                    image_id, "queued", "active", size=size, virtual_size=size,
                    checksum=hashes[0], os_hash_algo="sha512", os_hash_value=hashes[1],
                    store=store.name, location=location):
                store.delete(location)
                raise RuntimeError("the image was deleted while the volume was uploaded")
        else:
            chunks = driver.export_chunks(volume_id, p["disk_format"])
            Uploader(services.image, None, image_id, services.conf.DEFAULT.host).ingest(
                chunks, p["disk_format"])
    except Exception as exc:  # noqa: BLE001 - the image goes, the volume comes back
        LOG.warning("volume %s: upload to image %s failed: %s", volume_id, image_id, exc)
        with services.db.session() as session:
            img = session.get(Image, image_id)
            if img is not None and img.status in ("queued", "saving"):
                session.delete(img)
        _finish_upload(services, volume_id, p["previous"], str(exc), p.get("request_id"))
        return {"error": str(exc)}
    _finish_upload(services, volume_id, p["previous"], None)
    return {"image_id": image_id}


def _finish_upload(services: Any, volume_id: str, previous: str, error: str | None,
                   request_id: str | None = None) -> None:
    """The volume back to where it was; a failure gets Cinder's user message."""
    with services.db.session() as session:
        if services.volume.set_status(session, Volume, volume_id, "uploading", previous,
                                      fault=error) and error is not None:
            vol = session.get(Volume, volume_id)
            services.volume.messages.record(
                session, vol.project_id, Action.COPY_VOLUME_TO_IMAGE,
                resource_uuid=volume_id, detail=Detail.FAILED_TO_UPLOAD_VOLUME,
                request_id=request_id)
