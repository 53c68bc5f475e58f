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
from strato.storage.errors import ImageBusy
from strato.volume.api import IMAGE_CORE, snapshot_deltas, type_name, volume_deltas
from strato.volume.driver import ParentNotReleased, SnapshotIsBusy, VolumeIsBusy
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


def _fail_create(services: Any, volume_id: str, status: str, reason: str) -> None:
    """The create failed: ``error`` with the reason, the quota reservation released."""
    api = services.volume
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        if vol is None:
            return
        api.quota.rollback(session, list(vol.reservations or []))
        api.set_status(session, Volume, volume_id, status, "error", fault=reason,
                       reservations=[])
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
            reason = str(exc)
        else:
            vol.host = api.host_of(backend.name)
            enqueue(session, "volume.create", dict(ctx.payload),
                    target=f"volume:{backend.name}", max_attempts=3)
            return {"backend": backend.name}
    _fail_create(services, volume_id, "creating", reason)
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
        _fail_create(services, volume_id, "creating", f"{type(exc).__name__}: {exc}")
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
                           on_busy=hand_to_compute if host and instance_id else None)


def finish_snapshot(services: Any, driver: Any, snapshot_id: str,
                    on_busy: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Snapshot (or, when compute already took it, just protect) and make it available;
    on failure the snapshot goes to ``error`` with its quota given back.  ``on_busy``:
    what to do instead when the volume is busy in a running guest (hand it over)."""
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
        fail_snapshot(services, snapshot_id, str(exc))
        return {"error": str(exc)}
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        api.quota.commit(session, list(snap.reservations or []))
        api.set_status(session, Snapshot, snapshot_id, "creating", "available",
                       progress="100%", reservations=[], quota_committed=True,
                       image_metadata=image_meta)
        events.emit(session, "volume", "snapshot.create.end", snapshot_id, snap.project_id)
    return {"snapshot_id": snapshot_id}


def fail_snapshot(services: Any, snapshot_id: str, reason: str) -> None:
    """A snapshot still ``creating`` goes to ``error``, its quota reservation back."""
    api = services.volume
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.status != "creating":
            return
        api.quota.rollback(session, list(snap.reservations or []))
        api.set_status(session, Snapshot, snapshot_id, "creating", "error", fault=reason,
                       reservations=[])


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
    crash.fault("snapshot.delete", "before-store")
    try:
        driver.delete_snapshot(volume_id, snapshot_id)
    except SnapshotIsBusy as exc:
        with services.db.session() as session:
            api.set_status(session, Snapshot, snapshot_id, "deleting", "available",
                           fault=str(exc))
        return {"busy": str(exc)}
    except Exception as exc:
        if not driver.snapshot_exists(volume_id, snapshot_id):
            raise  # gone from the store: the job's retry removes the record
        LOG.warning("snapshot %s: delete failed: %s", snapshot_id, exc)
        with services.db.session() as session:
            api.set_status(session, Snapshot, snapshot_id, "deleting", "error_deleting",
                           fault=f"{type(exc).__name__}: {exc}")
        return {"error": str(exc)}
    crash.fault("snapshot.delete", "before-record")
    with services.db.session() as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None:
            return {"skipped": "gone"}
        if snap.quota_committed:
            vol = session.get(Volume, snap.volume_id)
            api.quota.release(session, snap.project_id,
                              snapshot_deltas(type_name(session, vol), snap.size))
        session.delete(snap)
        events.emit(session, "volume", "snapshot.delete.end", snapshot_id, snap.project_id)
    return {"deleted": snapshot_id}


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
            api.set_status(session, Volume, volume_id, "extending", "error_extending",
                           fault=str(exc))
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
        _finish_upload(services, volume_id, p["previous"], str(exc))
        return {"error": str(exc)}
    _finish_upload(services, volume_id, p["previous"], None)
    return {"image_id": image_id}


def _finish_upload(services: Any, volume_id: str, previous: str, error: str | None) -> None:
    with services.db.session() as session:
        services.volume.set_status(session, Volume, volume_id, "uploading", previous,
                                   fault=error)
