"""createImage on the instance's host (job ``compute.snapshot``), seeds 000 and 001.

Image-backed: the root disk is snapshotted (live over QMP while QEMU runs, inside a
guest-agent freeze when the image asks for one) as ``<image_id>.clone_snap``; then,
when the image store is this block store and the format raw, that snapshot is cloned
into the images pool and the image points at the clone (a *direct* snapshot: nothing
copied, no flatten).  Otherwise the snapshot is extracted with qemu-img into
``snapshots_directory`` and uploaded (the *standard* path).

Volume-backed: every volume is snapshotted at one instant (one freeze, one QMP
transaction); the image carries only the block device mapping of those snapshots.

Each step is a conditional task-state change (``image_snapshot`` →
``image_pending_upload`` → ``image_uploading`` → none).  A failure, an instance deleted
meanwhile, or an attempt cut off by a crash undoes everything made so far: the image,
the clone, the snapshots and the temp files.  A re-run after a crash starts over.
"""

from __future__ import annotations

import json
import logging
import subprocess
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import update

from strato import events
from strato.compute import disks, states
from strato.compute.api import ctx_from, now
from strato.compute.manager import _event, _load, _set, instance_lock
from strato.compute.models import BlockDevice, Instance
from strato.context import RequestContext
from strato.exceptions import NotFound, StratoError
from strato.image.models import Image as ImageRow
from strato.jobs.worker import Interrupted, JobContext, LeaseLost, handler
from strato.storage import crash, errors, same_cluster
from strato.storage.refs import CLONE_SNAP, drop_unneeded_snaps
from strato.volume.driver import snapshot_name, volume_name
from strato.volume.models import Snapshot, Volume

LOG = logging.getLogger(__name__)
EVENT = "compute_snapshot_instance"
_YES = ("yes", "true", "1", "on")


class Gone(Exception):  # noqa: N818 - a signal: the instance left the snapshot
    pass


def disk_snap(image_id: str) -> str:
    """The root disk's snapshot an image-backed snapshot clones (garbage once the
    image's clone goes: see ``strato.storage.refs``)."""
    return f"{image_id}{CLONE_SNAP}"


# ---------------------------------------------------------------- the job
@handler("compute.snapshot")
def snapshot(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, image_id = p["instance_id"], p["image_id"]
    rctx = ctx_from(p["ctx"])
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        image = _image(services, image_id)
        if inst is None or inst.deleted or inst.task_state not in states.SNAPSHOT_TASKS:
            undo(services, rctx, instance_id, image_id, ctx.progress)
            return {"skipped": "not snapshotting"}
        if image is not None and image.status == "active":  # done before a crash
            _finish(services, inst, image_id, inst.task_state, rctx.request_id)
            return {"image_id": image_id}
        _event(services, instance_id, rctx.request_id, EVENT)
        try:
            if inst.task_state != states.IMAGE_SNAPSHOT_PENDING or ctx.progress:
                LOG.info("instance %s: snapshot %s cut off at %s; resuming", instance_id,
                         image_id, inst.task_state)
                _reset(services, image_id)
                _step(services, instance_id, inst.task_state, states.IMAGE_SNAPSHOT_PENDING)
            if image is None or image.status != "queued":
                raise Gone(f"image {image_id} was deleted before its data was made")
            _step(services, instance_id, states.IMAGE_SNAPSHOT_PENDING, states.IMAGE_SNAPSHOT)
            props = {prop.name: prop.value for prop in image.properties}
            if p.get("volume_backed"):
                _volume_backed(ctx, rctx, inst, bdms, image_id, image.name or "", props)
            else:
                _image_backed(ctx, inst, image_id, props)
        except (LeaseLost, Interrupted):
            raise  # the next owner of the job resumes it
        except Exception as exc:  # noqa: BLE001 - everything made so far is undone
            LOG.warning("instance %s: snapshot %s failed: %s", instance_id, image_id, exc)
            undo(services, rctx, instance_id, image_id, ctx.progress)
            _revert(services, inst, image_id, exc, rctx.request_id)
            return {"error": str(exc)}
        _finish(services, inst, image_id, states.IMAGE_UPLOADING, rctx.request_id)
        return {"image_id": image_id}


def _reset(services: Any, image_id: str) -> None:
    """Before resuming a cut-off attempt: its clone and temp files go (they are made
    again); snapshots it took are kept and reused (taken after the request, and the
    job's progress says whether they were quiesced)."""
    with suppress(Exception):
        services.image.store.discard(image_id)
    _remove_temp(services, image_id)


def _image(services: Any, image_id: str) -> ImageRow | None:
    with services.db.session(readonly=True) as session:
        row = session.get(ImageRow, image_id)
        if row is not None:
            _ = list(row.properties)
            session.expunge_all()
        return row


def _step(services: Any, instance_id: str, expect: str | None, new: str | None) -> None:
    with services.db.session() as session:
        if not _set(session, instance_id, expect, task_state=new):
            raise Gone(f"instance {instance_id} left task state {expect} (deleted?)")


def _finish(services: Any, inst: Instance, image_id: str, expect: str | None,
            request_id: str | None) -> None:
    with services.db.session() as session:
        _set(session, inst.id, expect, task_state=None)
        events.emit(session, "compute", "compute.instance.snapshot.end", inst.id,
                    inst.project_id, image_id=image_id)
    _event(services, inst.id, request_id, EVENT, "Success")


def _revert(services: Any, inst: Instance, image_id: str, exc: BaseException,
            request_id: str | None) -> None:
    """Task state back to none (unless a delete took over), the action records why."""
    with services.db.session() as session:
        session.execute(update(Instance).where(
            Instance.id == inst.id, Instance.task_state.in_(states.SNAPSHOT_TASKS))
            .values(task_state=None, updated_at=now()))
        events.emit(session, "compute", "compute.instance.snapshot.error", inst.id,
                    inst.project_id, image_id=image_id, error=str(exc)[:255])
    _event(services, inst.id, request_id, EVENT, "Error",
           f"{type(exc).__name__}: {exc}")


def _quiesce(inst: Instance, props: dict[str, str]) -> bool | None:
    """True: required (``os_require_quiesce``); None: try (``hw_qemu_guest_agent``);
    False: don't (no agent, or vCPUs paused: the agent cannot answer).  A snapshot
    schedule's run says which it wants in ``strato_quiesce``."""
    mode = props.get("strato_quiesce")
    required = props.get("os_require_quiesce", "").lower() in _YES or mode == "required"
    if required:
        return True
    if mode in ("never", "preferred"):
        return None if mode == "preferred" and inst.vm_state == states.ACTIVE else False
    if props.get("hw_qemu_guest_agent", "").lower() not in _YES:
        return False
    return None if inst.vm_state == states.ACTIVE else False


# ---------------------------------------------------------------- image-backed
def _image_backed(ctx: JobContext, inst: Instance, image_id: str, props: dict[str, str],
                  expect: str = states.IMAGE_SNAPSHOT) -> None:
    """``expect``: the task state the disk snapshot is taken in (createBackup's is
    ``image_backup``)."""
    services = ctx.services
    engine, pool = services.stores.vms, services.stores.vms_pool
    name, snap = disks.root_name(inst.id), disk_snap(image_id)
    ctx.checkpoint(disk_snap=snap)
    with engine.open(pool, name) as disk:
        if snap in {s.name for s in disk.list_snaps()}:  # an earlier attempt took it
            quiesced = bool(ctx.progress.get("quiesced", False))
        elif services.virt.pid(inst.id) is not None:
            quiesced = services.virt.snapshot_disk(inst.id, "vda", disk, snap,
                                                   _quiesce(inst, props))
        else:
            disk.create_snap(snap)
            quiesced = False
    ctx.checkpoint(quiesced=quiesced)
    crash.fault("snapshot", "after-disk-snap")
    _step(services, inst.id, expect, states.IMAGE_PENDING_UPLOAD)
    store = services.image.store
    fmt = services.conf.compute.snapshot_image_format or "raw"
    marks = {"strato_quiesced": str(quiesced).lower(), "image_state": "available"}
    _step(services, inst.id, states.IMAGE_PENDING_UPLOAD, states.IMAGE_UPLOADING)
    if fmt == "raw" and same_cluster(getattr(store, "engine", None), engine):
        with engine.open(pool, name) as disk:
            if not disk.is_protected_snap(snap):
                disk.protect_snap(snap)
        engine.clone(pool, name, snap, store.pool, image_id)
        with engine.open(store.pool, image_id) as img:
            img.create_snap("snap")
            img.protect_snap("snap")
            size = img.size()
        crash.fault("snapshot", "after-clone")
        location = engine.location(store.pool, image_id, "snap")
        if not services.image.set_properties(  # checksums follow (image.hash)
                image_id, marks, activate=True, hash_after=True, size=size,
                virtual_size=size, store=store.name, location=location):
            raise Gone(f"image {image_id} was deleted during the snapshot")
        return
    _standard(ctx, inst, image_id, fmt, marks)


def _standard(ctx: JobContext, inst: Instance, image_id: str, fmt: str,
              marks: dict[str, str]) -> None:
    """Extract the point-in-time snapshot (never the disk being written) and upload."""
    from strato.image.data import Uploader, file_chunks

    services = ctx.services
    engine, pool = services.stores.vms, services.stores.vms_pool
    name, snap = disks.root_name(inst.id), disk_snap(image_id)
    workdir = Path(services.conf.compute.snapshots_directory)
    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / f"{image_id}.raw"
    out = raw if fmt == "raw" else workdir / f"{image_id}.{fmt}"
    try:
        with engine.open(pool, name, snapshot=snap, read_only=True) as at:
            at.export_to(raw)
        if out != raw:
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(raw),
                            str(out)], check=True, capture_output=True)
            raw.unlink()
        if not services.image.set_properties(image_id, marks):
            raise Gone(f"image {image_id} was deleted during the snapshot")
        crash.fault("snapshot", "before-upload")
        Uploader(services.image, None, image_id, services.conf.DEFAULT.host).ingest(
            file_chunks(out), fmt)
    finally:
        _remove_temp(services, image_id)
    _drop_disk_snap(services, inst.id, snap)


# ---------------------------------------------------------------- volume-backed
def _volume_backed(ctx: JobContext, rctx: RequestContext, inst: Instance,
                   bdms: list[BlockDevice], image_id: str, image_name: str,
                   props: dict[str, str]) -> None:
    """Seed 000, with every volume captured in one freeze window."""
    services = ctx.services
    vols = [b for b in bdms if b.destination_type == "volume" and b.volume_id
            and b.attachment_id]
    taken: dict[str, str] = dict(ctx.progress.get("by_device") or {})  # device -> id
    for b in vols:
        if b.device_name in taken:  # made by an earlier attempt
            continue
        desc = services.volume.show(rctx, b.volume_id, (3, 0)).get("description") or ""
        snap = services.volume.create_snapshot(rctx, {"snapshot": {
            "volume_id": b.volume_id, "force": True, "name": f"snapshot for {image_name}",
            "description": desc}}, (3, 0), taken_by_compute=True)
        taken[b.device_name] = snap["id"]
        ctx.checkpoint(snapshots=list(taken.values()), by_device=taken)
    backends = {b.device_name: _volume_backend(services, b.volume_id or "") for b in vols}
    drivers = {dev: driver for dev, (driver, _) in backends.items()}
    quiesced = bool(ctx.progress.get("quiesced", False))
    with ExitStack() as stack:
        items = [(b.device_name, stack.enter_context(drivers[b.device_name].engine.open(
            drivers[b.device_name].opt.pool, volume_name(b.volume_id or ""))),
            snapshot_name(taken[b.device_name])) for b in vols]
        have = [name in {s.name for s in image.list_snaps()} for _, image, name in items]
        if have and all(have):
            pass  # taken by an earlier attempt, all at one instant
        elif any(have):
            raise RuntimeError("an earlier attempt left some volume snapshots only")
        elif items and services.virt.pid(inst.id) is not None:
            quiesced = services.virt.snapshot_disks(inst.id, items,
                                                    _quiesce(inst, props))
        else:
            for _, image, snap_name in items:
                image.create_snap(snap_name)
    ctx.checkpoint(quiesced=quiesced)
    crash.fault("snapshot", "after-volume-snaps")
    _step(services, inst.id, states.IMAGE_SNAPSHOT, states.IMAGE_PENDING_UPLOAD)
    from strato.volume.manager import finish_snapshot

    for b in vols:
        result = finish_snapshot(services, drivers[b.device_name], taken[b.device_name])
        if "error" in result or result.get("skipped") not in (None, "available"):
            raise RuntimeError(f"snapshot of volume {b.volume_id}: {result}")
    _step(services, inst.id, states.IMAGE_PENDING_UPLOAD, states.IMAGE_UPLOADING)
    mapping = [{
        "source_type": "snapshot", "destination_type": "volume",
        "snapshot_id": taken[b.device_name], "volume_id": None, "image_id": None,
        "volume_size": backends[b.device_name][1], "device_name": f"/dev/{b.device_name}",
        "boot_index": b.boot_index, "delete_on_termination": b.delete_on_termination,
        "guest_format": None, "disk_bus": "virtio", "device_type": "disk",
        "no_device": None, "tag": b.tag} for b in vols]
    marks = {"block_device_mapping": json.dumps(mapping), "bdm_v2": "True",
             "root_device_name": "/dev/vda", "strato_quiesced": str(quiesced).lower()}
    if not services.image.set_properties(image_id, marks, activate=True, size=0,
                                         virtual_size=0):
        raise Gone(f"image {image_id} was deleted during the snapshot")


def _volume_backend(services: Any, volume_id: str) -> tuple[Any, int]:
    """The driver of the backend a volume lives on, and its size in GiB."""
    with services.db.session(readonly=True) as session:
        vol = session.get(Volume, volume_id)
        if vol is None or not vol.host:
            raise NotFound(f"volume {volume_id} has no backend")
        backend = services.volume.backend_of(vol.host)
        return services.volume_drivers[backend], int(vol.size)


# ---------------------------------------------------------------- undo
def undo(services: Any, rctx: RequestContext, instance_id: str, image_id: str,
         progress: dict[str, Any]) -> None:
    """Remove what a snapshot that did not finish made: its queued image, the clone,
    the disk snapshot, volume snapshots and temp files.  A finished (active) image is
    kept, and with it everything it needs."""
    image = _image(services, image_id)
    if image is not None and image.status in ("active", "deactivated", "pending_delete"):
        return
    store = services.image.store
    with suppress(Exception):
        store.discard(image_id)  # the clone (and its hold on the disk snapshot)
    if image is not None:
        with services.db.session() as session:
            row = session.get(ImageRow, image_id)
            if row is not None and row.status in ("queued", "saving"):
                session.delete(row)
    _drop_disk_snap(services, instance_id, disk_snap(image_id))
    for snapshot_id in progress.get("snapshots", []):
        _drop_volume_snapshot(services, rctx, snapshot_id)
    _remove_temp(services, image_id)


def _drop_disk_snap(services: Any, instance_id: str, snap: str) -> None:
    """Remove a root-disk snapshot nothing is cloned from (merged by the guest's QEMU
    when it runs: see ``strato.storage.online``)."""
    engine, pool = services.stores.vms, services.stores.vms_pool
    try:
        with engine.open(pool, disks.root_name(instance_id)) as disk:
            if snap in {s.name for s in disk.list_snaps()}:
                drop_unneeded_snaps(engine, disk, [snap])
    except errors.ImageNotFound:
        return


def sweep_disk_snaps(services: Any, instance_id: str) -> None:
    """When the guest stops: snapshot leftovers of the root disk (``*.clone_snap`` with
    no clone) go, and merges that had to wait for the guest's layers are made."""
    engine, pool = services.stores.vms, services.stores.vms_pool
    try:
        with engine.open(pool, disks.root_name(instance_id)) as disk:
            names = [s.name for s in disk.list_snaps() if s.name.endswith(CLONE_SNAP)]
            disk.compact()
    except errors.ImageNotFound:
        return
    for name in names:
        _drop_disk_snap(services, instance_id, name)


def _drop_volume_snapshot(services: Any, rctx: RequestContext, snapshot_id: str) -> None:
    """A volume snapshot this createImage made: error (quota back) if still creating,
    then deleted through the volume service."""
    from strato.volume.manager import fail_snapshot

    fail_snapshot(services, snapshot_id, "createImage did not finish")
    with suppress(NotFound, StratoError):
        services.volume.delete_snapshot(rctx, snapshot_id)


def _remove_temp(services: Any, image_id: str) -> None:
    workdir = Path(services.conf.compute.snapshots_directory)
    for path in workdir.glob(f"{image_id}.*"):
        path.unlink(missing_ok=True)


def abandon(services: Any, inst: Instance) -> int:
    """A snapshot task with no job left to finish it (found after a restart): undo
    every unfinished snapshot image of the instance.  Returns how many."""
    from sqlalchemy import select

    from strato.image.models import ImageProperty

    with services.db.session(readonly=True) as session:
        images = list(session.execute(select(ImageRow.id, ImageRow.name).join(
            ImageProperty, ImageProperty.image_id == ImageRow.id).where(
            ImageProperty.name == "instance_uuid", ImageProperty.value == inst.id,
            ImageRow.status.in_(("queued", "saving")))))
        volume_ids = list(session.scalars(select(BlockDevice.volume_id).where(
            BlockDevice.instance_uuid == inst.id, BlockDevice.volume_id.is_not(None))))
        snaps = {name: list(session.scalars(select(Snapshot.id).where(
            Snapshot.volume_id.in_(volume_ids), Snapshot.status == "creating",
            Snapshot.name == f"snapshot for {name}"))) for _, name in images}
    rctx = RequestContext(user_id=inst.user_id, project_id=inst.project_id, roles=["admin"],
                          request_id="req-strato-compute")
    for image_id, name in images:
        undo(services, rctx, inst.id, image_id, {"snapshots": snaps[name]})
    return len(images)


def sweep_orphan_snapshots(services: Any, host: str) -> int:
    """Snapshot images of this host's instances left ``queued`` with no job to make
    their data (an older createImage committed the image before its job; or the job
    ran out of attempts): each is undone and deleted, with an ``Error`` event on the
    instance's createImage action.  Returns how many."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from strato.compute.models import InstanceAction
    from strato.image.models import ImageProperty
    from strato.jobs.models import PENDING, RUNNING, Job

    with services.db.session(readonly=True) as session:
        kind = aliased(ImageProperty)
        rows = list(session.execute(select(ImageRow.id, ImageProperty.value).join(
            ImageProperty, ImageProperty.image_id == ImageRow.id).join(
            kind, kind.image_id == ImageRow.id).join(
            Instance, Instance.id == ImageProperty.value).where(
            ImageProperty.name == "instance_uuid", kind.name == "image_type",
            kind.value.in_(("snapshot", "backup")), ImageRow.status == "queued",
            Instance.host == host)))
        if not rows:
            return 0
        jobs: dict[str, Job] = {}
        # shelve and createBackup make their images the same way
        for job in session.scalars(select(Job).where(Job.name.in_((
                "compute.snapshot", "compute.shelve", "compute.backup"))).order_by(Job.id)):
            jobs[str(job.payload.get("image_id"))] = job
        orphans = [(image_id, instance_id, jobs.get(image_id)) for image_id, instance_id
                   in rows if jobs.get(image_id) is None
                   or jobs[image_id].state not in (PENDING, RUNNING)]
        found = {o[1]: session.get(Instance, o[1]) for o in orphans}
        session.expunge_all()
    for image_id, instance_id, job in orphans:
        inst = found[instance_id]
        if inst is None:
            continue
        payload = dict(job.payload) if job is not None else {}
        request_id = (payload.get("ctx") or {}).get("request_id") or \
            f"req-strato-sweep-{image_id[:8]}"
        rctx = RequestContext(user_id=inst.user_id, project_id=inst.project_id,
                              roles=["admin"], request_id=request_id)
        LOG.warning("instance %s: snapshot image %s was left queued with no job; "
                    "deleting it", instance_id, image_id)
        undo(services, rctx, instance_id, image_id,
             dict(job.progress or {}) if job is not None else {})
        with services.db.session() as session:
            action = session.scalars(select(InstanceAction).where(
                InstanceAction.instance_uuid == instance_id,
                InstanceAction.request_id == request_id)).first()
            if action is None:
                session.add(InstanceAction(
                    instance_uuid=instance_id, action="createImage", request_id=request_id,
                    project_id=inst.project_id, user_id=inst.user_id, start_time=now()))
            events.emit(session, "compute", "compute.instance.snapshot.error", instance_id,
                        inst.project_id, image_id=image_id, error="interrupted")
        _event(services, instance_id, request_id, EVENT, "Error",
               f"Interrupted: createImage of image {image_id} never started (no job); "
               "the image was deleted")
    return len(orphans)


@handler("compute.volume_snapshot")
def volume_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Cinder's assisted snapshot: a snapshot of a volume this host's running guest
    writes, taken by the guest's QEMU (crash-consistent, as a forced snapshot is),
    then finished by the volume service's code."""
    from strato.volume.manager import finish_snapshot

    services, p = ctx.services, ctx.payload
    snapshot_id, instance_id = p["snapshot_id"], p["instance_id"]
    driver = services.volume_drivers[p["backend"]]
    with services.db.session(readonly=True) as session:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.status != "creating":
            return {"skipped": snap.status if snap else "gone"}
        volume_id = snap.volume_id
    with instance_lock(instance_id):
        _, bdms = _load(services, instance_id)
        device = next((b.device_name for b in bdms if b.volume_id == volume_id
                       and b.attachment_id), None)
        name = snapshot_name(snapshot_id)
        try:
            with driver.engine.open(driver.opt.pool, volume_name(volume_id)) as image:
                taken = name in {s.name for s in image.list_snaps()}
                if not taken and device and services.virt.pid(instance_id) is not None:
                    services.virt.snapshot_disk(instance_id, device, image, name, False)
        except Exception as exc:  # noqa: BLE001 - finish_snapshot records the error
            LOG.warning("volume %s: assisted snapshot failed: %s", volume_id, exc)
    return finish_snapshot(services, driver, snapshot_id)
