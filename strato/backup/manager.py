"""The backup jobs: ``backup.create``, ``backup.restore``, ``backup.delete`` and
``backup.import``.

Each is idempotent: a rerun after ``kill -9`` finds the hidden snapshot it took (or
takes it), rewrites the store object (``BackupStore.write`` replaces a half-written
one), re-creates a restore's volume if it is missing, and finishes the records.  A
failure cleans up after itself: the backup's store object and hidden snapshot go, the
backup is ``error`` with its ``fail_reason`` and its volume back to the status it had.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from strato import events
from strato.backup.api import hidden_snapshot, set_status
from strato.backup.models import Backup
from strato.backup.store import BackupData, BackupStore, open_backup_store
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash, errors
from strato.volume.api import VolumeAPI
from strato.volume.driver import snapshot_name, volume_name
from strato.volume.messages import Action, Detail, Resource
from strato.volume.models import Attachment, Snapshot, Volume

LOG = logging.getLogger(__name__)
OP = "backup"  # crash points: STRATO_STORAGE_CRASHPOINT=backup:<where>

_STORES: dict[tuple[int, str], BackupStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(services: Any, engine_name: str) -> BackupStore:
    """The backup store of volumes on ``engine_name`` (opened once per process)."""
    key = (id(services), engine_name)
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = open_backup_store(services.conf, engine_name)
        return _STORES[key]


def _driver(services: Any, host: str) -> Any:
    return services.volume_drivers[VolumeAPI.backend_of(host)]


def _snap_names(driver: Any, volume_id: str) -> set[str]:
    try:
        with driver.engine.open(driver.opt.pool, volume_name(volume_id),
                                read_only=True) as image:
            return {s.name for s in image.list_snaps()}
    except errors.ImageNotFound:
        return set()


def remove_hidden(driver: Any, volume_id: str, keep: str | None = None) -> None:
    """Drop the volume's hidden ``backup.*`` snapshots but ``keep`` (idempotent)."""
    names = sorted(n for n in _snap_names(driver, volume_id)
                   if n.startswith("backup.") and n != keep)
    if not names:
        return
    with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
        for name in names:
            try:
                image.remove_snap(name)
            except errors.ImageNotFound:
                continue


# ------------------------------------------------------------------ create
def _attachment(services: Any, volume_id: str) -> tuple[str | None, str | None]:
    with services.db.session(readonly=True) as session:
        att = session.scalars(select(Attachment).where(
            Attachment.volume_id == volume_id, Attachment.attach_status == "attached",
            Attachment.attached_host.is_not(None))).first()
        return (att.attached_host, att.instance_uuid) if att is not None else (None, None)


def _take_snapshot(ctx: JobContext, driver: Any, volume_id: str, name: str) -> dict | None:
    """The hidden snapshot of the volume; a volume a running guest writes through its
    own files (the local engine) is snapshotted by that guest's QEMU, on its host (the
    path Cinder's assisted snapshots take): the job is handed there.  Returns the
    hand-off result, or None once the snapshot exists."""
    services = ctx.services
    if name in _snap_names(driver, volume_id):
        return None
    try:
        with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
            image.create_snap(name)
        return None
    except errors.ImageBusy:
        host, instance_id = _attachment(services, volume_id)
        if host is None or instance_id is None:
            raise
    if ctx.target != f"host:{host}":
        from strato.jobs.models import PENDING, RUNNING, Job

        with services.db.session() as session:
            # a rerun of this job (killed after handing over) hands over only once
            handed = any((j.payload or {}).get("backup_id") == ctx.payload["backup_id"]
                         for j in session.scalars(select(Job).where(
                             Job.name == "backup.create", Job.target == f"host:{host}",
                             Job.state.in_((PENDING, RUNNING)))))
            if not handed:
                enqueue(session, "backup.create", dict(ctx.payload),
                        target=f"host:{host}", max_attempts=5)
        return {"handed_to": host}
    from strato.compute.manager import _load, instance_lock

    with instance_lock(instance_id):
        _, bdms = _load(services, instance_id)
        device = next((b.device_name for b in bdms if b.volume_id == volume_id
                       and b.attachment_id), None)
        if device is None or services.virt.pid(instance_id) is None:
            raise RuntimeError(f"volume {volume_id} is in use but its guest "
                               f"{instance_id} is not running here")
        with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
            if name not in {s.name for s in image.list_snaps()}:
                services.virt.snapshot_disk(instance_id, device, image, name, False)
    return None


@handler("backup.create")
def create_backup(ctx: JobContext) -> dict[str, Any]:
    services, backup_id = ctx.services, ctx.payload["backup_id"]
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        if b is None or b.status != "creating":
            return {"skipped": b.status if b else "gone"}
        volume_id, snapshot_id, host = b.volume_id, b.snapshot_id, b.host
        parent = session.get(Backup, b.parent_id) if b.parent_id else None
        parent_data = BackupData.from_dict(parent.data) if parent and parent.data else None
        vol = session.get(Volume, volume_id)
        # what a restore gives the volume back besides its data (Cinder's volume meta)
        volume_facts = {"volume_metadata": dict(vol.metadata_ or {}) if vol else {},
                        "bootable": bool(vol.bootable) if vol else False,
                        "image_metadata": dict(vol.image_metadata or {}) if vol else {}}
    driver = _driver(services, host)
    store = store_for(services, driver.engine.name)
    hidden = hidden_snapshot(backup_id)
    try:
        if snapshot_id:
            source = snapshot_name(snapshot_id)
        else:
            handed = _take_snapshot(ctx, driver, volume_id, hidden)
            if handed is not None:
                return handed
            source = hidden
        crash.point(OP, "after-snapshot")
        crash.fault(OP, "after-snapshot")
        base = hidden_snapshot(parent_data.backup_id) if parent_data else None
        if base is not None and base not in _snap_names(driver, volume_id):
            LOG.info("backup %s: the base of its parent is gone; a full backup", backup_id)
            parent_data, base = None, None
        with driver.engine.open(driver.opt.pool, volume_name(volume_id), snapshot=source,
                                read_only=True) as view:
            data = store.write(backup_id, view, parent_data, base)
        data = replace(data, extra={**data.extra, **volume_facts})
        crash.point(OP, "after-write")
    except Exception as exc:  # noqa: BLE001 - every failure ends in 'error', cleaned up
        LOG.warning("backup %s failed: %s", backup_id, exc)
        _fail_create(services, driver, store, backup_id, f"{type(exc).__name__}: {exc}",
                     ctx.payload.get("request_id"), exc)
        return {"error": str(exc)}
    with services.db.session() as session:
        b = session.get(Backup, backup_id)
        if b is None or b.status != "creating":  # force-deleted meanwhile
            store.delete(backup_id)
            return {"skipped": "gone"}
        # The row keeps the parent it was asked against (Cinder's is_incremental and
        # dependency); the data names the parent it really needs (None: a full copy,
        # when the base snapshot was gone), which is what a restore follows.
        b.status, b.data = "available", data.to_dict()
        b.object_count = len(data.chunks)
        b.fail_reason = None
        b.updated_at = datetime.now(UTC)
        _release_source(session, b)
        events.emit(session, "backup", "backup.create.end", backup_id, b.project_id,
                    volume_id=volume_id, incremental=data.parent_id is not None,
                    object_count=b.object_count)
    crash.point(OP, "after-record")
    # The newest backup's snapshot is the next incremental's base; older ones go.
    remove_hidden(driver, volume_id, keep=None if snapshot_id else hidden)
    return {"backup_id": backup_id, "chunks": len(data.chunks),
            "parent_id": data.parent_id}


def _release_source(session: Any, b: Backup) -> None:
    """The volume (or snapshot) the backup read goes back to where it was."""
    if b.snapshot_id:
        VolumeAPI.set_status(session, Snapshot, b.snapshot_id, "backing-up", "available")
    else:
        VolumeAPI.set_status(session, Volume, b.volume_id, "backing-up",
                             b.previous_status or "available")


def _fail_create(services: Any, driver: Any, store: BackupStore, backup_id: str,
                 reason: str, request_id: str | None, exc: BaseException) -> None:
    """Nothing of a failed backup stays: its object and its hidden snapshot go (older
    hidden snapshots stay: the last good backup's is still the next base)."""
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        volume_id = b.volume_id if b is not None else None
    store.delete(backup_id)
    if volume_id is not None and hidden_snapshot(backup_id) in _snap_names(driver,
                                                                           volume_id):
        with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
            image.remove_snap(hidden_snapshot(backup_id))
    with services.db.session() as session:
        b = session.get(Backup, backup_id)
        if b is None or b.status != "creating":
            return
        b.status, b.fail_reason, b.updated_at = "error", reason, datetime.now(UTC)
        b.parent_id = None  # an errored backup holds nothing: no parent, no dependants
        _release_source(session, b)
        services.volume.messages.record(
            session, b.project_id, Action.BACKUP_CREATE,
            resource_type=Resource.VOLUME_BACKUP, resource_uuid=backup_id,
            exception=exc, detail=Detail.BACKUP_CREATE_DRIVER_ERROR, request_id=request_id)
        events.emit(session, "backup", "backup.create.error", backup_id, b.project_id,
                    error=reason)


# ------------------------------------------------------------------ restore
def chain_of(session: Any, b: Backup) -> list[BackupData]:
    """The data full → ... → ``b`` that a restore of ``b`` writes in order."""
    chain: list[BackupData] = []
    row: Backup | None = b
    while row is not None:
        if row.data is None:
            raise RuntimeError(f"backup {row.id} holds no data")
        chain.append(BackupData.from_dict(row.data))
        parent_id = chain[-1].parent_id
        row = session.get(Backup, parent_id) if parent_id else None
        if parent_id and row is None:
            raise RuntimeError(f"backup {b.id}: its parent {parent_id} is gone")
    return chain[::-1]


@handler("backup.restore")
def restore_backup(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    backup_id, volume_id, new = p["backup_id"], p["volume_id"], p["new"]
    api = services.volume
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        vol = session.get(Volume, volume_id)
        if b is None or b.status != "restoring" or vol is None \
                or vol.status != "restoring-backup":
            return {"skipped": "not restoring"}
        host, size = vol.host, vol.size
        try:
            chain = chain_of(session, b)
        except RuntimeError as exc:
            chain, broken = [], exc
        else:
            broken = None
    driver = _driver(services, host)
    try:
        if broken is not None:
            raise broken
        store = store_for(services, driver.engine.name)
        if new and not driver.exists(volume_id):
            driver.create_volume(volume_id, size)
        crash.point(OP, "restore-after-create")
        with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as target:
            store.restore(chain, target)
        crash.point(OP, "restore-after-data")
    except Exception as exc:  # noqa: BLE001 - the backup stays; the volume is in error
        LOG.warning("backup %s: restore into %s failed: %s", backup_id, volume_id, exc)
        with services.db.session() as session:
            vol = session.get(Volume, volume_id)
            if new and vol is not None:
                api.quota.commit(session, list(vol.reservations or []))
            api.set_status(session, Volume, volume_id, "restoring-backup",
                           "error" if new else "error_restoring", fault=str(exc),
                           **({"reservations": [], "quota_committed": True} if new else {}))
            set_status(session, backup_id, "restoring", "available",
                               restore_volume_id=None)
            if vol is not None:
                api.messages.record(session, vol.project_id, Action.BACKUP_RESTORE,
                                    resource_type=Resource.VOLUME_BACKUP,
                                    resource_uuid=backup_id, exception=exc,
                                    detail=Detail.BACKUP_RESTORE_ERROR,
                                    request_id=p.get("request_id"))
                events.emit(session, "backup", "backup.restore.error", backup_id,
                            vol.project_id, error=str(exc))
        return {"error": str(exc)}
    facts = chain[-1].extra
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        extra: dict[str, Any] = {
            "metadata_": {**({} if new else dict(vol.metadata_ or {})),
                          **dict(facts.get("volume_metadata") or {})}}
        if facts.get("bootable"):
            extra.update(bootable=True, image_metadata=dict(facts.get("image_metadata")
                                                            or {}))
        if new:
            api.quota.commit(session, list(vol.reservations or []))
            extra.update(reservations=[], quota_committed=True,
                         launched_at=datetime.now(UTC))
        api.set_status(session, Volume, volume_id, "restoring-backup", "available", **extra)
        set_status(session, backup_id, "restoring", "available",
                           restore_volume_id=None)
        if new:
            events.emit(session, "volume", "volume.create.end", volume_id, vol.project_id,
                        size=vol.size)
        events.emit(session, "backup", "backup.restore.end", backup_id, vol.project_id,
                    volume_id=volume_id)
    return {"restored": backup_id, "volume_id": volume_id}


# ------------------------------------------------------------------ delete, import
@handler("backup.delete")
def delete_backup(ctx: JobContext) -> dict[str, Any]:
    """The object, then the hidden snapshot it left on its volume, then the record and
    the quota; a crash anywhere: the job runs again."""
    services, backup_id = ctx.services, ctx.payload["backup_id"]
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        if b is None or b.status != "deleting":
            return {"skipped": b.status if b else "gone"}
        volume_id, host = b.volume_id, b.host
    driver = _driver(services, host) if host and VolumeAPI.backend_of(host) in \
        services.volume_drivers else next(iter(services.volume_drivers.values()))
    store = store_for(services, driver.engine.name)
    try:
        obj = _object_of(services, backup_id)
        if obj is not None:
            store.delete(obj)
        crash.point(OP, "delete-after-store")
        if hidden_snapshot(backup_id) in _snap_names(driver, volume_id):
            with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
                image.remove_snap(hidden_snapshot(backup_id))
    except Exception as exc:  # noqa: BLE001
        LOG.warning("backup %s: delete failed: %s", backup_id, exc)
        with services.db.session() as session:
            if set_status(session, backup_id, "deleting", "error_deleting",
                                  fail_reason=f"{type(exc).__name__}: {exc}"):
                b = session.get(Backup, backup_id)
                services.volume.messages.record(
                    session, b.project_id, Action.BACKUP_DELETE,
                    resource_type=Resource.VOLUME_BACKUP, resource_uuid=backup_id,
                    exception=exc, detail=Detail.BACKUP_DELETE_DRIVER_ERROR,
                    request_id=ctx.payload.get("request_id"))
        return {"error": str(exc)}
    with services.db.session() as session:
        b = session.get(Backup, backup_id)
        if b is None:
            return {"skipped": "gone"}
        if b.quota_committed:
            services.volume.quota.release(session, b.project_id,
                                          {"backups": 1, "backup_gigabytes": b.size})
        session.delete(b)
        events.emit(session, "backup", "backup.delete.end", backup_id, b.project_id)
    return {"deleted": backup_id}


def _object_of(services: Any, backup_id: str) -> str | None:
    """The store object a backup's row names (its own, or the one of the backup it was
    imported from), or None while another backup's row still names it."""
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        obj = str((b.data or {}).get("backup_id") or backup_id) if b else backup_id
        others = session.scalars(select(Backup).where(
            Backup.id != backup_id, Backup.data.is_not(None))).all()
        if any(o.id == obj or (o.data or {}).get("backup_id") == obj for o in others):
            return None
    return obj


@handler("backup.import")
def import_backup(ctx: JobContext) -> dict[str, Any]:
    """An imported record is ``available`` when the store holds its object, else
    ``error`` (Cinder's import)."""
    services, backup_id = ctx.services, ctx.payload["backup_id"]
    with services.db.session(readonly=True) as session:
        b = session.get(Backup, backup_id)
        if b is None or b.status != "creating":
            return {"skipped": b.status if b else "gone"}
        host, obj = b.host, str((b.data or {}).get("backup_id") or backup_id)
    driver = _driver(services, host) if host and VolumeAPI.backend_of(host) in \
        services.volume_drivers else next(iter(services.volume_drivers.values()))
    found = store_for(services, driver.engine.name).exists(obj)
    with services.db.session() as session:
        if found:
            set_status(session, backup_id, "creating", "available")
        else:
            set_status(session, backup_id, "creating", "error",
                               fail_reason="The backup's data is not in the backup store.")
    return {"found": found}


def sweep(services: Any) -> int:
    """At startup: backups left ``creating``/``restoring``/``deleting`` by a job that
    gave up (no job pending or running for them) end ``error`` (a restore: back to
    ``available``, its volume in error), their volume released.  Returns how many."""
    from strato.jobs.models import PENDING, RUNNING, Job

    with services.db.session() as session:
        live = {str((j.payload or {}).get("backup_id")) for j in session.scalars(
            select(Job).where(Job.name.like("backup.%"),
                              Job.state.in_((PENDING, RUNNING))))}
        leftovers: list[tuple[str, str, str | None]] = []
        stuck = [b for b in session.scalars(select(Backup).where(
            Backup.status.in_(("creating", "restoring", "deleting")))) if b.id not in live]
        for b in stuck:
            reason = "Interrupted: the backup's job gave up"
            if b.status == "creating":
                b.status, b.fail_reason = "error", reason
                _release_source(session, b)
                leftovers.append((b.id, b.volume_id, b.host))
            elif b.status == "restoring":
                b.status = "available"
                if b.restore_volume_id:
                    services.volume.set_status(session, Volume, b.restore_volume_id,
                                               "restoring-backup", "error", fault=reason)
                b.restore_volume_id = None
            else:
                b.status, b.fail_reason = "error_deleting", reason
        count = len(stuck)
    for backup_id, volume_id, host in leftovers:
        if host is None or VolumeAPI.backend_of(host) not in services.volume_drivers:
            continue
        driver = _driver(services, host)
        store_for(services, driver.engine.name).delete(backup_id)
        if hidden_snapshot(backup_id) in _snap_names(driver, volume_id):
            with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
                image.remove_snap(hidden_snapshot(backup_id))
    return count

