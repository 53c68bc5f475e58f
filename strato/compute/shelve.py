"""``shelve`` / ``shelveOffload`` / ``unshelve`` (Nova's os-shelve): API part and jobs.

Shelve stops the guest and keeps its root disk as the snapshot image
``<name>-shelved`` (a clone of a snapshot of the disk when the image store is this
block store: O(1), as createImage's direct snapshot); the server is ``SHELVED`` and
its system metadata names the image (``shelved_image_id``, ``shelved_at``,
``shelved_host``).  ``[compute] shelved_offload_time`` 0 offloads at once, N > 0 after
N seconds (a delayed job), -1 never.  A volume-backed server has no image: it is
offloaded at once (Nova).

Offload releases the guest and the root disk on the host; ports and volume
attachments stay on the record; the server has no host (``SHELVED_OFFLOADED``).
Unshelve picks a host (the scheduler; 2.77 availability zone, 2.91 host for admins),
clones the root disk back from the image, flattens it (so the image can go), boots
the guest and deletes the image.  Each job continues from where the server and its
disks are, so a crash at any step converges when the job runs again.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import suppress
from typing import Any

from sqlalchemy import update

from strato import events
from strato.compute import disks, states
from strato.compute.api import ComputeAPI, P, ctx_from, ctx_payload, now, state_message
from strato.compute.hosts import host_zone, zones_of_compute_hosts
from strato.compute.manager import _event, _load, _set, _spec, instance_lock, vm_state_for
from strato.compute.models import ComputeNode, Instance
from strato.compute.scheduler import NoValidHost, select_destination, spec_for_instance
from strato.compute.snapshot_api import _image_backed_body
from strato.compute.snapshot_manager import _standard, disk_snap, sweep_disk_snaps, undo
from strato.compute.views import Version, iso
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, StratoError
from strato.image.models import Image as ImageRow
from strato.jobs.queue import enqueue
from strato.jobs.worker import Interrupted, JobContext, LeaseLost, handler
from strato.storage import crash, errors, same_cluster
from strato.virt.qemu import PowerState

LOG = logging.getLogger(__name__)
ACTIONS = ("shelve", "shelveOffload", "unshelve")
SHELVED_KEYS = ("shelved_at", "shelved_image_id", "shelved_host")
SHELVE_VM_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED)
_UNSET = object()


def _admin(inst: Instance, request_id: str | None = None) -> RequestContext:
    return RequestContext(user_id=inst.user_id, project_id=inst.project_id,
                          roles=["admin", "member", "reader"],
                          request_id=request_id or "req-strato-compute")


class Shelve:
    """os-shelve's API: checks, the task state, the action, the image and the job."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> None:
        if name == "shelve":
            self.shelve(ctx, server_id)
        elif name == "shelveOffload":
            self.offload(ctx, server_id)
        else:
            self.unshelve(ctx, server_id, args, version)

    # ------------------------------------------------------------ shelve
    def shelve(self, ctx: RequestContext, server_id: str) -> None:
        api = self.api
        with api.db.session(readonly=True) as session:
            inst = api.get_row(session, ctx, server_id, P + "os-shelve:shelve")
            api._check_lock(ctx, inst)
            _check(inst, SHELVE_VM_STATES, "shelve")
            session.expunge_all()
        record = None
        if inst.image_ref:  # Nova: a snapshot image for an image-backed server only
            record = api.images.new_record(
                ctx, _image_backed_body(api, ctx, inst, f"{inst.name}-shelved"))
        try:
            with api.db.session() as session:
                image = api.images.add_record(session, record) if record is not None \
                    else None
                meta = {**(inst.system_metadata or {}),
                        "image_base_image_ref": inst.image_ref}
                done = session.execute(update(Instance).where(
                    Instance.id == inst.id, Instance.deleted.is_(False),
                    Instance.vm_state.in_(SHELVE_VM_STATES),
                    Instance.task_state.is_(None)).values(
                    task_state=states.SHELVING, system_metadata=meta,
                    updated_at=now())).rowcount
                if not done:
                    raise Conflict(state_message("shelve", inst))
                api.record_action(session, ctx, inst, "shelve")
                events.emit(session, "compute", "compute.instance.shelve.start", inst.id,
                            inst.project_id)
                payload = {"instance_id": inst.id, "ctx": ctx_payload(ctx)}
                if image is None:
                    enqueue(session, "compute.shelve_offload", payload,
                            target=f"host:{inst.host}", max_attempts=5)
                else:
                    enqueue(session, "compute.shelve", {**payload, "image_id": image["id"]},
                            target=f"host:{inst.host}", max_attempts=5)
        except StratoError as exc:
            if exc.status == 413:  # Glance's image count quota: Nova answers 403
                raise Forbidden(exc.message) from None
            raise

    def offload(self, ctx: RequestContext, server_id: str) -> None:
        api = self.api
        with api.db.session() as session:
            inst = api.get_row(session, ctx, server_id, P + "os-shelve:shelve_offload")
            api._check_lock(ctx, inst)
            _check(inst, (states.SHELVED,), "shelveOffload")
            if not _set(session, inst.id, None, task_state=states.SHELVING_OFFLOADING):
                raise Conflict(state_message("shelveOffload", inst))
            api.record_action(session, ctx, inst, "shelveOffload")
            enqueue(session, "compute.shelve_offload", {
                "instance_id": inst.id, "ctx": ctx_payload(ctx)},
                target=f"host:{inst.host}", max_attempts=5)

    # ------------------------------------------------------------ unshelve
    def unshelve(self, ctx: RequestContext, server_id: str, args: Any,
                 version: Version) -> None:
        zone, host = self._unshelve_args(args, version)
        api = self.api
        with api.db.session() as session:
            inst = api.get_row(session, ctx, server_id, P + "os-shelve:unshelve")
            api._check_lock(ctx, inst)
            _check(inst, (states.SHELVED, states.SHELVED_OFFLOADED), "unshelve")
            if (zone is not _UNSET or host) and inst.vm_state != states.SHELVED_OFFLOADED:
                raise Conflict(f"The server {inst.id} is not in shelved_offloaded state "
                               f"(it is {inst.vm_state}): a zone or host applies to an "
                               "offloaded server only.")
            if isinstance(zone, str) and zone not in zones_of_compute_hosts(session):
                raise BadRequest("The requested availability zone is not available")
            target_zone = inst.availability_zone if zone is _UNSET else zone
            if host:
                api.policy.enforce(ctx, P + "os-shelve:unshelve_to_host",
                                   {"project_id": inst.project_id})
                if session.get(ComputeNode, host) is None:
                    raise BadRequest(f"Compute host {host} could not be found.")
                if isinstance(target_zone, str) and host_zone(session, host) != target_zone:
                    raise Conflict(f"Host {host} is not in availability zone "
                                   f"{target_zone}.")
            if inst.vm_state == states.SHELVED:
                target = inst.host
            else:
                target = self._schedule(session, inst, target_zone, host)
            if not _set(session, inst.id, None, task_state=states.UNSHELVING):
                raise Conflict(state_message("unshelve", inst))
            api.record_action(session, ctx, inst, "unshelve")
            events.emit(session, "compute", "compute.instance.unshelve.start", inst.id,
                        inst.project_id)
            enqueue(session, "compute.unshelve", {
                "instance_id": inst.id, "host": target, "ctx": ctx_payload(ctx),
                **({"zone": zone} if zone is not _UNSET else {})},
                target=f"host:{target}", max_attempts=5)

    @staticmethod
    def _unshelve_args(args: Any, version: Version) -> tuple[Any, str | None]:
        """(zone: _UNSET, None (unpin, 2.91) or a name; host or None) per microversion:
        before 2.77 the body is not looked at; 2.77 ``{availability_zone}`` (required
        in an object) or null; 2.91 also ``host`` and a null zone."""
        if version < (2, 77) or args is None:
            return _UNSET, None
        if not isinstance(args, dict):
            raise BadRequest("Invalid input for field/attribute unshelve.")
        allowed = {"availability_zone", "host"} if version >= (2, 91) else \
            {"availability_zone"}
        extra = set(args) - allowed
        if extra:
            raise BadRequest("Additional properties are not allowed "
                             f"({', '.join(sorted(extra))} was unexpected)")
        if version < (2, 91) and "availability_zone" not in args:
            raise BadRequest("'availability_zone' is a required property")
        zone: Any = args.get("availability_zone", _UNSET)
        if zone is None and version < (2, 91) or (
                zone is not None and zone is not _UNSET and (
                    not isinstance(zone, str) or not zone.strip() or len(zone) > 255)):
            raise BadRequest("Invalid input for field/attribute availability_zone.")
        host = args.get("host")
        if host is not None and (not isinstance(host, str) or not host):
            raise BadRequest("Invalid input for field/attribute host.")
        return zone, host

    def _schedule(self, session: Any, inst: Instance, zone: Any, host: str | None) -> str:
        """The host an offloaded server comes back on: the zone it is pinned to (or
        the one the unshelve names), the host an admin named (2.91; still filtered),
        its group's policy and its boot's hints (Nova's RequestSpec)."""
        spec = dataclasses.replace(
            spec_for_instance(session, inst, requested_host=host, ignore_source=False),
            zone=zone if isinstance(zone, str) else None)
        try:
            return select_destination(session, self.api.conf, spec)
        except NoValidHost as exc:
            raise Conflict(f"No valid host was found to unshelve {inst.id}: {exc}") \
                from None


def _check(inst: Instance, allowed: tuple[str, ...], label: str) -> None:
    if inst.vm_state not in allowed or inst.task_state is not None:
        raise Conflict(state_message(label, inst))


# ---------------------------------------------------------------- the host's part
def _step(services: Any, instance_id: str, expect: str, new: str) -> None:
    with services.db.session() as session:
        if not _set(session, instance_id, expect, task_state=new):
            raise RuntimeError(f"instance {instance_id} left task state {expect}")


def _image_status(services: Any, image_id: str) -> str | None:
    with services.db.session(readonly=True) as session:
        row = session.get(ImageRow, image_id)
        return None if row is None else row.status


def _make_image(ctx: JobContext, inst: Instance, image_id: str) -> None:
    """The stopped guest's root disk as the image: a snapshot of the disk, cloned into
    the images pool (or extracted and uploaded when the store is elsewhere)."""
    services = ctx.services
    engine, pool = services.stores.vms, services.stores.vms_pool
    name, snap = disks.root_name(inst.id), disk_snap(image_id)
    with engine.open(pool, name) as disk:
        if snap not in {s.name for s in disk.list_snaps()}:
            disk.create_snap(snap)
    crash.fault("shelve", "after-disk-snap")
    store = services.image.store
    fmt = services.conf.compute.snapshot_image_format or "raw"
    marks = {"image_state": "available"}
    if not (fmt == "raw" and same_cluster(getattr(store, "engine", None), engine)):
        _standard(ctx, inst, image_id, fmt, marks)
        return
    with suppress(Exception):
        store.discard(image_id)  # a clone an attempt cut off left behind
    with engine.open(pool, name) as disk:
        if not disk.is_protected_snap(snap):
            disk.protect_snap(snap)
    engine.clone(pool, name, snap, store.pool, image_id)
    with engine.open(store.pool, image_id) as img:
        img.create_snap("snap")
        img.protect_snap("snap")
        size = img.size()
    location = engine.location(store.pool, image_id, "snap")
    if not services.image.set_properties(image_id, marks, activate=True, hash_after=True,
                                         size=size, virtual_size=size, store=store.name,
                                         location=location):
        raise RuntimeError(f"image {image_id} was deleted during the shelve")


@handler("compute.shelve")
def shelve(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, image_id, rctx = p["instance_id"], p["image_id"], ctx_from(p["ctx"])
    event = "compute_shelve_instance"
    tasks = (states.SHELVING, states.SHELVING_IMAGE_PENDING_UPLOAD,
             states.SHELVING_IMAGE_UPLOADING)
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state not in tasks:
            undo(services, rctx, instance_id, image_id, {})
            return {"skipped": "not shelving"}
        _event(services, instance_id, rctx.request_id, event)
        drv = services.virt
        try:
            if inst.task_state == states.SHELVING:
                if drv.pid(instance_id) is not None or drv.power_state(
                        instance_id) == PowerState.SUSPENDED:
                    drv.stop(instance_id, services.conf.compute.shutdown_timeout)
                sweep_disk_snaps(services, instance_id)
                _step(services, instance_id, states.SHELVING,
                      states.SHELVING_IMAGE_PENDING_UPLOAD)
                inst.task_state = states.SHELVING_IMAGE_PENDING_UPLOAD
            if _image_status(services, image_id) != "active":
                if _image_status(services, image_id) not in ("queued", "saving"):
                    raise RuntimeError(f"image {image_id} was deleted before its data "
                                       "was made")
                if inst.task_state == states.SHELVING_IMAGE_PENDING_UPLOAD:
                    _step(services, instance_id, states.SHELVING_IMAGE_PENDING_UPLOAD,
                          states.SHELVING_IMAGE_UPLOADING)
                _make_image(ctx, inst, image_id)
            elif inst.task_state == states.SHELVING_IMAGE_PENDING_UPLOAD:
                _step(services, instance_id, states.SHELVING_IMAGE_PENDING_UPLOAD,
                      states.SHELVING_IMAGE_UPLOADING)
        except (LeaseLost, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - image undone, the server as it is
            LOG.warning("instance %s: shelve failed: %s", instance_id, exc)
            undo(services, rctx, instance_id, image_id, {})
            pw = drv.power_state(instance_id)
            with services.db.session() as session:
                session.execute(update(Instance).where(
                    Instance.id == instance_id, Instance.task_state.in_(tasks)).values(
                    task_state=None, power_state=int(pw), updated_at=now(),
                    vm_state=vm_state_for(pw, inst.vm_state)))
                events.emit(session, "compute", "compute.instance.shelve.error",
                            instance_id, inst.project_id, error=str(exc)[:255])
            _event(services, instance_id, rctx.request_id, event, "Error",
                   f"{type(exc).__name__}: {exc}")
            return {"error": str(exc)}
        offload_time = services.conf.compute.shelved_offload_time
        with services.db.session() as session:
            meta = {**(inst.system_metadata or {}), "shelved_at": iso(now()),
                    "shelved_image_id": image_id, "shelved_host": inst.host or ""}
            if not _set(session, instance_id, states.SHELVING_IMAGE_UPLOADING,
                        vm_state=states.SHELVED, power_state=int(PowerState.SHUTDOWN),
                        task_state=states.SHELVING_OFFLOADING if offload_time == 0 else None,
                        system_metadata=meta):
                return {"skipped": "state changed during the shelve"}
            events.emit(session, "compute", "compute.instance.shelve.end", instance_id,
                        inst.project_id, image_id=image_id)
            if offload_time >= 0:
                enqueue(session, "compute.shelve_offload", {
                    "instance_id": instance_id, "ctx": p["ctx"],
                    **({"auto": True} if offload_time > 0 else {})},
                    target=ctx.target, max_attempts=5, delay=max(offload_time, 0))
    _event(services, instance_id, rctx.request_id, event, "Success")
    return {"shelved": instance_id, "image_id": image_id}


@handler("compute.shelve_offload")
def shelve_offload(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rctx = p["instance_id"], ctx_from(p["ctx"])
    event = "compute_shelve_offload_instance"
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted:
            return {"skipped": "gone"}
        if p.get("auto"):  # shelved_offload_time passed: only a server still shelved
            if inst.vm_state != states.SHELVED or inst.task_state is not None:
                return {"skipped": "not shelved"}
            with services.db.session() as session:
                if not _set(session, instance_id, None,
                            task_state=states.SHELVING_OFFLOADING):
                    return {"skipped": "not shelved"}
            inst.task_state = states.SHELVING_OFFLOADING
        volume_backed = not inst.image_ref
        expect = states.SHELVING if volume_backed and inst.task_state == states.SHELVING \
            else states.SHELVING_OFFLOADING
        if inst.task_state != expect:
            return {"skipped": "not offloading"}
        _event(services, instance_id, rctx.request_id, event)
        drv = services.virt
        try:
            if drv.pid(instance_id) is not None:
                drv.stop(instance_id, services.conf.compute.shutdown_timeout)
            crash.fault("shelve", "before-offload")
            drv.destroy(instance_id)
            disks.remove_root(services, instance_id)
        except (LeaseLost, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - still shelved, the action says why
            LOG.warning("instance %s: offload failed: %s", instance_id, exc)
            with services.db.session() as session:
                _set(session, instance_id, expect, task_state=None,
                     vm_state=states.SHELVED if not volume_backed else inst.vm_state)
            _event(services, instance_id, rctx.request_id, event, "Error",
                   f"{type(exc).__name__}: {exc}")
            return {"error": str(exc)}
        with services.db.session() as session:
            meta = dict(inst.system_metadata or {})
            if volume_backed:
                meta.update({"shelved_at": iso(now()), "shelved_host": inst.host or ""})
            _set(session, instance_id, expect, vm_state=states.SHELVED_OFFLOADED,
                 task_state=None, power_state=int(PowerState.NOSTATE), host=None,
                 system_metadata=meta)
            events.emit(session, "compute", "compute.instance.shelve_offload.end",
                        instance_id, inst.project_id)
    _event(services, instance_id, rctx.request_id, event, "Success")
    return {"offloaded": instance_id}


def _delete_image(services: Any, inst: Instance, image_id: str | None,
                  request_id: str | None = None) -> None:
    """The shelved image goes once nothing needs it (Nova deletes it after unshelve
    and with the server); a failure is logged, never the server's."""
    if not image_id:
        return
    try:
        services.image.delete(_admin(inst, request_id), image_id)
    except NotFound:
        pass
    except StratoError as exc:
        LOG.warning("instance %s: shelved image %s not deleted: %s", inst.id, image_id,
                    exc.message)


@handler("compute.unshelve")
def unshelve(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rctx, host = p["instance_id"], ctx_from(p["ctx"]), p["host"]
    event = "compute_unshelve_instance"
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.UNSHELVING:
            return {"skipped": "not unshelving"}
        _event(services, instance_id, rctx.request_id, event)
        meta = dict(inst.system_metadata or {})
        image_id = meta.get("shelved_image_id")
        drv = services.virt
        try:
            if inst.vm_state == states.SHELVED:
                if drv.pid(instance_id) is None:
                    drv.start(instance_id)
            else:
                if inst.image_ref and not image_id:
                    raise RuntimeError("the shelved image is unknown")
                engine, pool = services.stores.vms, services.stores.vms_pool
                if inst.image_ref and not engine.exists(pool, disks.root_name(instance_id)):
                    disks.create_root(services, instance_id, str(image_id),
                                      int(inst.flavor.get("root_gb") or 0))
                    crash.fault("unshelve", "after-root-clone")
                if inst.image_ref:  # no longer a child of the image, which then goes
                    with engine.open(pool, disks.root_name(instance_id)) as disk:
                        with suppress(errors.ImageNotFound):
                            disk.parent_info()
                            disk.flatten()
                with services.db.session() as session:
                    values: dict[str, Any] = {"host": host}
                    if "zone" in p:
                        values["availability_zone"] = p["zone"] or host_zone(session, host)
                    _set(session, instance_id, states.UNSHELVING, **values)
                inst.host = host
                if drv.pid(instance_id) is None:
                    spec, attached = _spec(services, rctx, inst, bdms)
                    drv.spawn(spec)
                    for b in attached:  # connected to this host again
                        services.compute.volume_actions.complete_attachment(
                            rctx, b.attachment_id)
            power = drv.power_state(instance_id)
        except (LeaseLost, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - stays shelved, nothing half made
            LOG.warning("instance %s: unshelve failed: %s", instance_id, exc)
            if inst.vm_state == states.SHELVED_OFFLOADED:
                with suppress(Exception):
                    drv.destroy(instance_id)
                    if inst.image_ref:
                        disks.remove_root(services, instance_id)
            with services.db.session() as session:
                _set(session, instance_id, states.UNSHELVING, task_state=None,
                     **({"host": None} if inst.vm_state == states.SHELVED_OFFLOADED
                        else {}))
            _event(services, instance_id, rctx.request_id, event, "Error",
                   f"{type(exc).__name__}: {exc}")
            return {"error": str(exc)}
        _delete_image(services, inst, image_id, rctx.request_id)  # before: a re-run
        with services.db.session() as session:  # still knows the image, a crash here
            rest = {k: v for k, v in meta.items() if k not in SHELVED_KEYS}
            if not _set(session, instance_id, states.UNSHELVING, vm_state=states.ACTIVE,
                        task_state=None, power_state=int(power), system_metadata=rest):
                return {"skipped": "state changed during the unshelve"}
            events.emit(session, "compute", "compute.instance.unshelve.end", instance_id,
                        inst.project_id)
    _event(services, instance_id, rctx.request_id, event, "Success")
    return {"unshelved": instance_id, "host": host}


def forget(services: Any, instance_id: str) -> None:
    """A deleted server's shelved image (Nova deletes it with the server)."""
    inst, _ = _load(services, instance_id)
    if inst is not None:
        _delete_image(services, inst, (inst.system_metadata or {}).get("shelved_image_id"))
