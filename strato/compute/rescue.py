"""``rescue`` / ``unrescue`` (Nova's os-rescue), API part and the host's jobs.

Rescue stops the guest and boots it again from a fresh clone of the rescue image
(``rescue_image_ref``, else the server's own image) as ``<uuid>_disk.rescue``, with the
original root disk as the second disk (libvirt's layout: volumes are left out).  When
the rescue image has ``hw_rescue_device``/``hw_rescue_bus`` (stable device rescue,
2.87) every original disk keeps its device and place and the rescue disk is added
after them, first in boot order; a volume-backed server can only be rescued that way,
and only from 2.87 (before: 400, as Nova).

The guest's spec before the rescue is kept next to it (``unrescue.json``, as libvirt
keeps ``unrescue.xml``); unrescue boots that spec again and removes the rescue disk.
Both jobs look at where the guest is and continue from there, so a crash at any step
converges when the job runs again.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy import update

from strato import events
from strato.compute import disks, guestinfo, states
from strato.compute.api import ComputeAPI, P, ctx_from, ctx_payload, now, state_message
from strato.compute.manager import _event, _load, _set, instance_lock, vm_state_for
from strato.compute.models import Instance
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.jobs.queue import enqueue
from strato.jobs.worker import Interrupted, JobContext, LeaseLost, handler
from strato.storage import crash
from strato.virt.qemu import DiskSpec, GuestSpec, node_prefix
from strato.virt.qemu.errors import InstanceNotFound

LOG = logging.getLogger(__name__)
ACTIONS = ("rescue", "unrescue")
#: Nova's hw_rescue_device values this host can give (a disk; cdrom/floppy are not)
RESCUE_DEVICES = ("disk",)
RESCUE_BUSES = ("virtio", "scsi", "ide", "sata", "usb")


def _props(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if v is not None}


class Rescue:
    """os-rescue's API: checks, the task state, the action and the job."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> dict[str, Any] | None:
        if name == "rescue":
            return self.rescue(ctx, server_id, args, version)
        self.unrescue(ctx, server_id, args)
        return None

    def rescue(self, ctx: RequestContext, server_id: str, args: Any,
               version: Version) -> dict[str, Any]:
        if args is not None and not isinstance(args, dict):
            raise BadRequest("Invalid input for field/attribute rescue.")
        args = args or {}
        extra = set(args) - {"adminPass", "rescue_image_ref"}
        if extra:
            raise BadRequest("Additional properties are not allowed "
                             f"({', '.join(sorted(extra))} was unexpected)")
        password = args.get("adminPass")
        if password is not None and not isinstance(password, str):
            raise BadRequest("Invalid input for field/attribute adminPass.")
        ref = args.get("rescue_image_ref")
        if ref is not None and not isinstance(ref, str):
            raise BadRequest("Invalid input for field/attribute rescue_image_ref.")
        api = self.api
        with api.db.session(readonly=True) as session:
            inst = api.get_row(session, ctx, server_id, P + "os-rescue")
            api._check_lock(ctx, inst)
            _check(inst, (states.ACTIVE, states.STOPPED, states.ERROR), "rescue")
            bdms = api.bdms(session, [inst.id])[inst.id]
            session.expunge_all()
        volume_backed = not inst.image_ref
        image = self._rescue_image(ctx, inst, ref, bdms)
        props = _props(image)
        stable = "hw_rescue_device" in props or "hw_rescue_bus" in props
        if volume_backed and not (version >= (2, 87) and "hw_rescue_device" in props
                                  and "hw_rescue_bus" in props):
            raise BadRequest(f"Instance {inst.id} cannot be rescued: Cannot rescue a "
                             "volume-backed instance")
        device = str(props.get("hw_rescue_device") or "disk")
        bus = str(props.get("hw_rescue_bus") or (inst.boot_meta or {}).get(
            "hw_disk_bus") or "virtio")
        if stable and (device not in RESCUE_DEVICES or bus not in RESCUE_BUSES):
            raise BadRequest(f"Requested rescue device '{device}' on bus '{bus}' is not "
                             "supported")
        with api.db.session() as session:
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                Instance.vm_state == inst.vm_state, Instance.task_state.is_(None)).values(
                task_state=states.RESCUING, updated_at=now())).rowcount
            if not done:
                raise Conflict(f"Instance {inst.id} changed state; try again.")
            api.record_action(session, ctx, inst, "rescue")
            events.emit(session, "compute", "compute.instance.rescue.start", inst.id,
                        inst.project_id, rescue_image_name=image.get("name"))
            enqueue(session, "compute.rescue", {
                "instance_id": inst.id, "image_id": image["id"], "stable": stable,
                "bus": bus, "vm_state": inst.vm_state, "ctx": ctx_payload(ctx)},
                target=f"host:{inst.host}", max_attempts=3)
        if api.conf.api.enable_instance_password:
            return {"adminPass": password or guestinfo.generate_password()}
        return {}

    def _rescue_image(self, ctx: RequestContext, inst: Instance, ref: str | None,
                      bdms: list[Any]) -> dict[str, Any]:
        """The image the rescue disk is cloned from (Nova's UnsupportedRescueImage, 400,
        when it cannot be found or is a volume snapshot's image)."""
        image_id = ref or inst.image_ref
        if not image_id:  # volume-backed: the image the boot volume came from
            root = next((b for b in bdms if b.boot_index == 0 and b.volume_id), None)
            if root is not None:
                with suppress(NotFound):
                    meta = self.api.volumes.show(ctx, root.volume_id, (3, 0)).get(
                        "volume_image_metadata") or {}
                    image_id = meta.get("image_id") or ""
        try:
            image = self.api.images.show(ctx, image_id) if image_id else None
        except NotFound:
            image = None
        if image is None or image.get("status") != "active" or image.get(
                "block_device_mapping") or image.get("disk_format") in ("aki", "ari", "iso"):
            raise BadRequest(f"Requested rescue image '{image_id}' is not supported")
        return image

    def unrescue(self, ctx: RequestContext, server_id: str, args: Any) -> None:
        api = self.api
        with api.db.session() as session:
            inst = api.get_row(session, ctx, server_id, P + "os-unrescue")
            api._check_lock(ctx, inst)
            _check(inst, (states.RESCUED,), "unrescue")
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                Instance.vm_state == states.RESCUED, Instance.task_state.is_(None)).values(
                task_state=states.UNRESCUING, updated_at=now())).rowcount
            if not done:
                raise Conflict(state_message("unrescue", inst))
            api.record_action(session, ctx, inst, "unrescue")
            events.emit(session, "compute", "compute.instance.unrescue.start", inst.id,
                        inst.project_id)
            enqueue(session, "compute.unrescue", {
                "instance_id": inst.id, "ctx": ctx_payload(ctx)},
                target=f"host:{inst.host}", max_attempts=3)


def _check(inst: Instance, allowed: tuple[str, ...], label: str) -> None:
    if inst.vm_state not in allowed or inst.task_state is not None:
        raise Conflict(state_message(label, inst))


# ---------------------------------------------------------------- the host's part
def _saved(services: Any, instance_id: str) -> Path:
    return Path(services.virt.paths(instance_id).dir) / "unrescue.json"


def _rescue_source(services: Any, instance_id: str) -> str:
    return f"{services.stores.vms_pool}/{disks.rescue_name(instance_id)}"


def _in_rescue(spec: GuestSpec, source: str) -> bool:
    return any(d.source == source for d in spec.disks)


def _disk(services: Any, name: str, device: str, bus: str) -> DiskSpec:
    pool = services.stores.vms_pool
    with services.stores.vms.open(pool, name) as img:
        return DiskSpec(device, img.blockdev_options(node_prefix(device)),
                        source=f"{pool}/{name}", bus=bus)


def rescue_spec(services: Any, original: GuestSpec, inst: Instance, image_id: str,
                stable: bool, bus: str) -> GuestSpec:
    """The guest booting the rescue disk: first (in boot order and, unless stable, as
    ``vda`` with the original root as ``vdb``), the rescue image's kernel if it has
    one."""
    rname = disks.rescue_name(inst.id)
    if stable:
        used = {d.device_id for d in original.disks} | {c.device_id for c in original.cdroms}
        device = next(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used)
        new = [_disk(services, rname, device, bus), *original.disks]
    else:
        root = original.disk("vda")
        root_bus = root.bus if root is not None else "virtio"
        new = [_disk(services, rname, "vda", root_bus),
               _disk(services, disks.root_name(inst.id), "vdb", root_bus)]
    kernel, initramfs, cmdline = original.kernel, original.initramfs, original.cmdline
    image_kernel = disks.image_property(services, image_id, "kernel_id")
    if image_kernel:
        kernel = disks.cached_image_file(services, image_kernel)
        ramdisk = disks.image_property(services, image_id, "ramdisk_id")
        initramfs = disks.cached_image_file(services, ramdisk) if ramdisk else None
        cmdline = disks.image_property(services, image_id, "os_command_line") or cmdline
    return dataclasses.replace(original, disks=tuple(new), kernel=kernel,
                               initramfs=initramfs, cmdline=cmdline)


@handler("compute.rescue")
def rescue(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rctx = p["instance_id"], ctx_from(p["ctx"])
    event = "compute_rescue_instance"
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.RESCUING:
            return {"skipped": "not rescuing"}
        _event(services, instance_id, rctx.request_id, event)
        drv = services.virt
        source = _rescue_source(services, instance_id)
        try:
            saved = _saved(services, instance_id)
            if not saved.exists():  # written once: a re-run must not save the rescue spec
                current = drv.spec(instance_id)
                if _in_rescue(current, source):
                    raise RuntimeError("the guest runs a rescue spec with nothing saved")
                tmp = saved.with_suffix(".tmp")
                tmp.write_text(current.to_json())
                tmp.replace(saved)
            original = GuestSpec.from_json(saved.read_text())
            if not (drv.pid(instance_id) is not None
                    and _in_rescue(drv.spec(instance_id), source)):
                if drv.pid(instance_id) is not None:
                    drv.stop(instance_id, services.conf.compute.shutdown_timeout)
                ctx.checkpoint(step="stopped")
                disks.create_root(services, instance_id, p["image_id"],
                                  int(inst.flavor.get("root_gb") or 0),
                                  name=disks.rescue_name(instance_id))
                crash.fault("rescue", "after-rescue-disk")
                drv.start(instance_id, rescue_spec(services, original, inst, p["image_id"],
                                                   bool(p.get("stable")), p["bus"]))
                _settle(services, instance_id, p["image_id"])
            power = drv.power_state(instance_id)
        except (LeaseLost, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - back to the guest as it was
            LOG.warning("instance %s: rescue failed: %s", instance_id, exc)
            _restore(services, instance_id, start=p.get("vm_state") == states.ACTIVE)
            pw = drv.power_state(instance_id)
            with services.db.session() as session:
                _set(session, instance_id, states.RESCUING, task_state=None,
                     power_state=int(pw), vm_state=vm_state_for(pw, inst.vm_state))
                events.emit(session, "compute", "compute.instance.rescue.error",
                            instance_id, inst.project_id, error=str(exc)[:255])
            _event(services, instance_id, rctx.request_id, event, "Error",
                   f"{type(exc).__name__}: {exc}")
            return {"error": str(exc)}
        with services.db.session() as session:
            _set(session, instance_id, states.RESCUING, vm_state=states.RESCUED,
                 task_state=None, power_state=int(power))
            events.emit(session, "compute", "compute.instance.rescue.end", instance_id,
                        inst.project_id)
    _event(services, instance_id, rctx.request_id, event, "Success")
    return {"rescued": instance_id}


def _settle(services: Any, instance_id: str, image_id: str) -> None:
    """When the image has the guest agent: until it answers (at most
    ``shutdown_timeout``), so the rescued or restored guest is up when the server says
    so: a guest still booting ignores the ACPI power button and PCI unplugs, and the
    next stop or volume detach would wait out its whole timeout."""
    agent = disks.image_property(services, image_id, "hw_qemu_guest_agent") if image_id \
        else None
    if (agent or "").lower() not in ("yes", "true", "1", "on"):
        return
    with suppress(Exception):
        services.virt.wait_for_agent(instance_id,
                                     max(services.conf.compute.shutdown_timeout, 5))


def _restore(services: Any, instance_id: str, start: bool) -> None:
    """The guest back on its own spec (running when ``start``), the rescue disk and
    the saved spec gone.  Idempotent: each step looks at where the guest is."""
    drv = services.virt
    saved = _saved(services, instance_id)
    source = _rescue_source(services, instance_id)
    if saved.exists():
        original = GuestSpec.from_json(saved.read_text())
        try:
            current: GuestSpec | None = drv.spec(instance_id)
        except InstanceNotFound:
            current = None
        if current is None or _in_rescue(current, source):
            if drv.pid(instance_id) is not None:
                drv.stop(instance_id, services.conf.compute.shutdown_timeout)
            crash.fault("unrescue", "guest-stopped")
            drv.start(instance_id, original)  # the spec is stored as it starts
            if not start:
                drv.stop(instance_id, 0)
    if start and drv.pid(instance_id) is None:
        drv.start(instance_id)
    disks.remove_root(services, instance_id, disks.rescue_name(instance_id))
    saved.unlink(missing_ok=True)


@handler("compute.unrescue")
def unrescue(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rctx = p["instance_id"], ctx_from(p["ctx"])
    event = "compute_unrescue_instance"
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.UNRESCUING:
            return {"skipped": "not unrescuing"}
        _event(services, instance_id, rctx.request_id, event)
        error = None
        try:
            crash.fault("unrescue", "before-restore")
            _restore(services, instance_id, start=True)
            _settle(services, instance_id, inst.image_ref)
        except (LeaseLost, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - stays rescued, the action says why
            LOG.warning("instance %s: unrescue failed: %s", instance_id, exc)
            error = exc
        power = services.virt.power_state(instance_id)
        with services.db.session() as session:
            if error is None:
                _set(session, instance_id, states.UNRESCUING, vm_state=states.ACTIVE,
                     task_state=None, power_state=int(power))
                events.emit(session, "compute", "compute.instance.unrescue.end",
                            instance_id, inst.project_id)
            else:
                _set(session, instance_id, states.UNRESCUING, task_state=None,
                     power_state=int(power))
    _event(services, instance_id, rctx.request_id, event,
           "Error" if error else "Success",
           None if error is None else f"{type(error).__name__}: {error}")
    return {"unrescued": instance_id, "error": str(error) if error else None}


def forget(services: Any, instance_id: str) -> None:
    """A deleted instance's rescue disk (if it was deleted while rescued)."""
    disks.remove_root(services, instance_id, disks.rescue_name(instance_id))
