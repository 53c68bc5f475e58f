"""The compute agent's job handlers (target ``host:<host>``): builds, power actions,
volume attach/detach and deletes, each finishing its state machine.

Handlers are idempotent and serialised per instance (one agent per host runs them).
A build that fails removes what it made (root clone, volumes it created, the guest),
rolls the quota back and leaves the instance in ERROR with a fault.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import bootinfo, configdrive, disks, guestnet, ports, states
from strato.compute.api import ctx_from, instance_deltas, now
from strato.compute.models import BlockDevice, Instance, InstanceAction, InstanceActionEvent
from strato.compute.views import iso
from strato.context import RequestContext
from strato.exceptions import NotFound, StratoError
from strato.jobs.models import Job
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.virt.guestbuild import CMDLINE
from strato.virt.qemu import CdromSpec, DiskSpec, GuestSpec, PowerState, node_prefix, throttle
from strato.virt.qemu.errors import InstanceNotFound, VirtError

LOG = logging.getLogger(__name__)
_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


@contextmanager
def instance_lock(instance_id: str) -> Iterator[None]:
    with _GUARD:
        lock = _LOCKS.setdefault(instance_id, threading.Lock())
    with lock:
        yield


# ---------------------------------------------------------------- action events
def _event(services: Any, instance_id: str, request_id: str | None, event: str,
           result: str | None = None, tb: str | None = None,
           details: str | None = None) -> None:
    """Start (result None) or finish an instance action's event. A failed one keeps
    ``details``, the fault message 2.84 shows (default: ``tb``, a one-line error)."""
    if not request_id:
        return
    with services.db.session() as session:
        action = session.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == instance_id,
            InstanceAction.request_id == request_id)).first()
        if action is None:
            return
        row = session.scalars(select(InstanceActionEvent).where(
            InstanceActionEvent.action_id == action.id, InstanceActionEvent.event == event,
            InstanceActionEvent.finish_time.is_(None))).first()
        if result is None:
            if row is None:
                session.add(InstanceActionEvent(action_id=action.id, event=event,
                                                host=services.conf.DEFAULT.host,
                                                start_time=now()))
            return
        if row is None:
            row = InstanceActionEvent(action_id=action.id, event=event,
                                      host=services.conf.DEFAULT.host, start_time=now())
            session.add(row)
        row.finish_time, row.result, row.traceback = now(), result, tb
        row.details = (details or tb) if result == "Error" else None
        action.finish_time = action.updated_at = now()
        if result == "Error":
            action.message = "Error"


def _set(session: Any, instance_id: str, expect_task: str | None, **values: Any) -> bool:
    """Conditional state change: only while the instance is in ``expect_task``."""
    cond = Instance.task_state.is_(None) if expect_task is None else \
        Instance.task_state == expect_task
    return session.execute(update(Instance).where(
        Instance.id == instance_id, Instance.deleted.is_(False), cond).values(
        updated_at=now(), **values)).rowcount == 1


def _fault(exc: BaseException) -> dict[str, Any]:
    code = exc.status if isinstance(exc, StratoError) else 500
    return {"code": code, "message": f"{type(exc).__name__}: {exc}"[:255],
            "created": iso(now()),
            "details": traceback.format_exc()[-4000:]}


# ---------------------------------------------------------------- guest spec
def _volume_disk(services: Any, info: dict[str, Any], device: str,
                 volume_id: str, bus: str = "virtio") -> DiskSpec:
    data = info["data"]
    source = f"{data['pool']}/{data['name']}"
    drv = services.virt
    blockdev = drv.resolve(source, node_prefix(device)) if drv.resolve else data["blockdev"]
    if data.get("access_mode") == "ro":
        blockdev = {**blockdev, "read-only": True}
    return DiskSpec(device, blockdev, serial=volume_id[:20], source=source, bus=bus,
                    throttle=throttle.from_qos(data.get("qos_specs")))


def _nic_args(services: Any, inst: Instance, has_ports: bool = False) -> tuple[str, ...]:
    """The user-mode NIC (with this guest's metadata forward) and Nova's SMBIOS; a
    guest on network ports has no user-mode NIC."""
    smbios = guestnet.smbios_args(inst.id)
    if not inst.mac or has_ports:
        return smbios
    return guestnet.netdev_args(inst.mac, Path(services.virt.paths(inst.id).dir)) + smbios


def _attach_volume_bdm(services: Any, ctx: RequestContext, inst: Instance,
                       b: BlockDevice, bus: str = "virtio") -> DiskSpec:
    """Connect a reserved volume to this host; returns its disk on ``bus`` (attachment
    completed by the caller once QEMU has it)."""
    va = services.compute.volume_actions
    att = va.update_attachment(ctx, b.attachment_id, {"attachment": {"connector": {
        "host": services.conf.DEFAULT.host, "instance": inst.id,
        "mountpoint": f"/dev/{b.device_name}"}}})
    return _volume_disk(services, att["connection_info"], b.device_name, b.volume_id or "",
                        bus)


# ---------------------------------------------------------------- build
def _load(services: Any, instance_id: str) -> tuple[Instance | None, list[BlockDevice]]:
    with services.db.session(readonly=True) as session:
        inst = session.get(Instance, instance_id)
        if inst is None:
            return None, []
        bdms = list(session.scalars(select(BlockDevice).where(
            BlockDevice.instance_uuid == instance_id).order_by(BlockDevice.device_name)))
        session.expunge_all()
        return inst, bdms


def _ensure_volumes(services: Any, ctx: RequestContext, inst: Instance,
                    bdms: list[BlockDevice]) -> str | None:
    """Create the volumes the mappings ask for; None when all are available, else what
    is still being waited for."""
    vapi = services.volume
    waiting = None
    for b in bdms:
        if b.destination_type != "volume":
            continue
        if b.volume_id is None:
            body: dict[str, Any] = {"size": b.volume_size,
                                    "name": f"{inst.id}-{b.source_type}-vol"}
            if b.source_type == "image":
                body["imageRef"] = b.source_id
            elif b.source_type == "snapshot":
                body["snapshot_id"] = b.source_id
            vol = vapi.create(ctx, {"volume": body}, (3, 0))
            with services.db.session() as session:
                session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                    volume_id=vol["id"], created_volume=True))
            b.volume_id, b.created_volume = vol["id"], True
        status = vapi.show(ctx, b.volume_id, (3, 0))["status"]
        if status == "error":
            raise RuntimeError(f"volume {b.volume_id} for {b.device_name} went to error")
        if b.attachment_id is None:
            if status != "available":
                waiting = b.volume_id
                continue
            att = services.compute.volume_actions.create_attachment(ctx, {"attachment": {
                "volume_id": b.volume_id, "instance_uuid": inst.id}})
            with services.db.session() as session:
                session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                    attachment_id=att["id"]))
            b.attachment_id = att["id"]
    return waiting


def _spec(services: Any, ctx: RequestContext, inst: Instance,
          bdms: list[BlockDevice]) -> tuple[GuestSpec, list[BlockDevice]]:
    """The guest: a kernel when the image names one (AKI/ARI), else the firmware boots
    the root disk; buses, machine and devices from the boot properties the API kept."""
    boot = bootinfo.config(inst.boot_meta)
    disks_: list[DiskSpec] = []
    pending: list[BlockDevice] = []
    if inst.image_ref:
        name = disks.root_name(inst.id)
        pool = services.stores.vms_pool
        with services.stores.vms.open(pool, name) as img:
            disks_.append(DiskSpec("vda", img.blockdev_options(node_prefix("vda")),
                                   source=f"{pool}/{name}", bus=boot.disk_bus))
    for b in sorted(bdms, key=lambda b: (b.boot_index != 0, b.device_name)):
        if b.destination_type == "volume" and b.attachment_id:
            disks_.append(_attach_volume_bdm(services, ctx, inst, b, boot.disk_bus))
            pending.append(b)
    kernel = ramdisk = None
    cmdline = ""
    if inst.kernel_id:
        kernel = disks.cached_image_file(services, inst.kernel_id)
        ramdisk = disks.cached_image_file(services, inst.ramdisk_id) \
            if inst.ramdisk_id else None
        cmdline = (disks.image_property(services, inst.image_ref, "os_command_line")
                   if inst.image_ref else None) or CMDLINE
    cdroms: list[CdromSpec] = []
    if bootinfo.is_iso(services, inst.image_ref):  # after the blank root disk, as boot order
        cdroms.append(CdromSpec("cdrom0", disks.cached_image_file(services, inst.image_ref),
                                boot.cdrom_bus))
    fl = inst.flavor
    if inst.config_drive:
        cdroms.append(configdrive.cdrom(services, inst))
    nics = ports.plug_all(services, inst.id)  # before QEMU opens their taps
    spec = GuestSpec(inst.id, inst.name, fl["memory_mb"], fl["vcpus"], kernel, ramdisk,
                     cmdline, tuple(disks_), _nic_args(services, inst, bool(nics)),
                     firmware=boot.firmware, machine=boot.machine, cdroms=tuple(cdroms),
                     scsi_model=boot.scsi_model, rng=boot.rng, os_type=boot.os_type,
                     nics=nics)
    return spec, pending


@handler("compute.build")
def build(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.SPAWNING:
            return {"skipped": "not spawning"}
        _event(services, instance_id, rctx.request_id, "compute__do_build_and_run_instance")
        try:
            waiting = _ensure_volumes(services, rctx, inst, bdms)
            if waiting:
                tries = ctx.payload.get("tries", 0) + 1
                if tries > services.conf.compute.block_device_allocate_retries:
                    raise RuntimeError(f"volume {waiting} did not become available")
                with services.db.session() as session:
                    enqueue(session, "compute.build", {**ctx.payload, "tries": tries},
                            target=ctx.target, max_attempts=3,
                            delay=services.conf.compute.block_device_allocate_retries_interval)
                return {"waiting": waiting}
            if inst.image_ref:
                disks.create_root(services, instance_id, inst.image_ref, inst.flavor["root_gb"])
            ctx.checkpoint(step="disks")
            drv = services.virt
            _config_drive(services, ctx, inst)
            if services.metadata_server is not None:  # listening before the guest asks
                services.metadata_server.watch(instance_id)
            if drv.pid(instance_id) is None:
                spec, attached = _spec(services, rctx, inst, bdms)
                drv.spawn(spec)
            else:
                attached = [b for b in bdms if b.attachment_id]
            for b in attached:
                services.compute.volume_actions.complete_attachment(rctx, b.attachment_id)
            power = drv.power_state(instance_id)
        except Exception as exc:  # noqa: BLE001 - every failure ends in ERROR, cleaned up
            LOG.warning("instance %s: build failed: %s", instance_id, exc)
            forget_admin_pass(services, ctx)
            _fail_build(services, rctx, instance_id, exc)
            return {"error": str(exc)}
        with services.db.session() as session:
            row = session.get(Instance, instance_id)
            # read before the UPDATE, which also empties the loaded row's list
            reservations = list(row.reservations or [])
            if not _set(session, instance_id, states.SPAWNING, vm_state=states.ACTIVE,
                        task_state=None, power_state=int(power), launched_at=now(),
                        reservations=[], quota_committed=True):
                return {"skipped": "state changed during the build"}
            services.compute.quota.commit(session, reservations)
            session.execute(update(BlockDevice).where(
                BlockDevice.instance_uuid == instance_id,
                BlockDevice.attachment_id.is_not(None)).values(status="attached"))
            events.emit(session, "compute", "compute.instance.create.end", instance_id,
                        row.project_id)
        _event(services, instance_id, rctx.request_id, "compute__do_build_and_run_instance",
               "Success")
        return {"active": instance_id}


def _config_drive(services: Any, ctx: JobContext, inst: Instance) -> None:
    """Write the config drive when the instance needs one (Nova marks the instance
    ``config_drive`` then, whatever made it needed), and drop the admin password from
    the job: the drive was its only destination."""
    if configdrive.required(services, inst):
        if not inst.config_drive:
            with services.db.session() as session:
                session.execute(update(Instance).where(Instance.id == inst.id).values(
                    config_drive="True"))
            inst.config_drive = "True"
        admin_pass = ctx.payload.get("admin_pass")
        # a retried build whose password is already gone keeps the drive it wrote
        if admin_pass is not None or not configdrive.path(services, inst.id).exists():
            configdrive.write(services, inst.id, admin_pass)
    forget_admin_pass(services, ctx)


def forget_admin_pass(services: Any, ctx: JobContext) -> None:
    """Drop the admin password from the job's stored payload once the config drive
    holds it (it never stays in the job table)."""
    if "admin_pass" not in ctx.payload:
        return
    ctx.payload = {k: v for k, v in ctx.payload.items() if k != "admin_pass"}
    with services.db.session() as session:
        session.execute(update(Job).where(Job.id == ctx.job_id).values(payload=ctx.payload))


def _fail_build(services: Any, rctx: RequestContext, instance_id: str,
                exc: BaseException) -> None:
    fault = _fault(exc)
    _cleanup(services, rctx, instance_id, failed_build=True)
    with services.db.session() as session:
        row = session.get(Instance, instance_id)
        services.compute.quota.rollback(session, list(row.reservations or []))
        _set(session, instance_id, states.SPAWNING, vm_state=states.ERROR, task_state=None,
             power_state=0, fault=fault, reservations=[])
        events.emit(session, "compute", "compute.instance.create.error", instance_id,
                    row.project_id, error=fault["message"])
    _event(services, instance_id, rctx.request_id, "compute__do_build_and_run_instance",
           "Error", fault["details"], fault["message"])


def _cleanup(services: Any, rctx: RequestContext, instance_id: str,
             failed_build: bool = False) -> None:
    """Guest gone, volumes released (deleted when asked or made for a failed build),
    root disk removed by the store's rules."""
    with suppress(InstanceNotFound):
        if services.virt.pid(instance_id) is not None:
            services.virt.stop(instance_id, timeout=0)
    services.virt.destroy(instance_id)
    _, bdms = _load(services, instance_id)
    va = services.compute.volume_actions
    for b in bdms:
        if b.attachment_id:
            with suppress(NotFound):
                va.delete_attachment(rctx, b.attachment_id)
        delete = b.delete_on_termination or (failed_build and b.created_volume)
        if b.volume_id and delete:
            try:
                services.volume.delete(rctx, b.volume_id)
            except NotFound:
                pass
            except StratoError as exc:
                LOG.warning("instance %s: volume %s not deleted: %s", instance_id,
                            b.volume_id, exc.message)
        with services.db.session() as session:
            session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                attachment_id=None, status="detached"))
    disks.remove_root(services, instance_id)
    from strato.compute import rescue, shelve

    rescue.forget(services, instance_id)  # a rescue disk, a shelved image
    shelve.forget(services, instance_id)
    ports.deallocate(services, rctx, instance_id)  # the guest is gone: its taps too


# ---------------------------------------------------------------- power
def _do_power(services: Any, instance_id: str, action: str) -> None:
    drv = services.virt
    running = drv.pid(instance_id) is not None
    if action in ("start", "reboot", "reboot_hard", "resume") and (
            action != "reboot" or not running):
        with suppress(InstanceNotFound):
            ports.replug(services, drv.spec(instance_id).nics)
    if action == "stop":
        drv.stop(instance_id, services.conf.compute.shutdown_timeout)
    elif action == "start":
        if not running:  # a retried start (the agent died in it) finds the guest up
            drv.start(instance_id)
    elif action in ("reboot", "reboot_hard"):
        if running:
            drv.reboot(instance_id, hard=action == "reboot_hard",
                       timeout=services.conf.compute.shutdown_timeout)
        else:
            drv.start(instance_id)
    elif action == "pause":
        drv.pause(instance_id)
    elif action == "unpause":
        drv.unpause(instance_id)
    elif action == "suspend":
        drv.suspend(instance_id)
    elif action == "resume":
        drv.resume(instance_id)


@handler("compute.power")
def power(ctx: JobContext) -> dict[str, Any]:
    services, instance_id, action = ctx.services, ctx.payload["instance_id"], \
        ctx.payload["action"]
    _, task, after, _ = states.POWER_ACTIONS[action]
    event = f"compute_{action.replace('_hard', '')}_instance"
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != task:
            return {"skipped": "not in " + task}
        _event(services, instance_id, ctx.payload.get("request_id"), event)
        error = None
        try:
            _do_power(services, instance_id, action)
        except Exception as exc:  # noqa: BLE001 - the task state is always resolved
            LOG.warning("instance %s: %s failed: %s", instance_id, action, exc)
            error = exc
        p = services.virt.power_state(instance_id)
        if error is None and action == "stop":
            from strato.compute.snapshot_manager import sweep_disk_snaps

            sweep_disk_snaps(services, instance_id)  # left by snapshots while it ran
        with services.db.session() as session:
            if error is None:
                _set(session, instance_id, task, vm_state=after, task_state=None,
                     power_state=int(p))
            else:
                _set(session, instance_id, task, task_state=None, power_state=int(p),
                     vm_state=vm_state_for(p, inst.vm_state))
    _event(services, instance_id, ctx.payload.get("request_id"), event,
           "Error" if error else "Success",
           None if error is None else f"{type(error).__name__}: {error}")
    return {"action": action, "error": str(error) if error else None}


def vm_state_for(p: PowerState, current: str) -> str:
    """The vm_state a guest's real power state implies (for resolving half-done tasks)."""
    if p == PowerState.RUNNING:
        return states.ACTIVE
    if p == PowerState.PAUSED:
        return states.PAUSED
    if p == PowerState.SUSPENDED:
        return states.SUSPENDED
    if p in (PowerState.SHUTDOWN, PowerState.CRASHED):
        return states.STOPPED
    return current


# ---------------------------------------------------------------- volumes
@handler("compute.attach_volume")
def attach_volume(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    request_id = ctx.payload.get("request_id")
    with instance_lock(instance_id):
        with services.db.session(readonly=True) as session:
            b = session.get(BlockDevice, ctx.payload["bdm_id"])
            inst = session.get(Instance, instance_id)
            if b is None or b.status != "attaching" or inst is None or inst.deleted:
                return {"skipped": "not attaching"}
            session.expunge_all()
        _event(services, instance_id, request_id, "compute_attach_volume")
        try:
            drv = services.virt
            if drv.spec(instance_id).disk(b.device_name) is None:
                drv.attach_disk(instance_id, _attach_volume_bdm(
                    services, rctx, inst, b, bootinfo.attach_bus(inst.boot_meta)))
            services.compute.volume_actions.complete_attachment(rctx, b.attachment_id)
        except Exception as exc:  # noqa: BLE001 - undo the reservation and the record
            LOG.warning("instance %s: attach of %s failed: %s", instance_id, b.volume_id, exc)
            with suppress(VirtError):
                if services.virt.spec(instance_id).disk(b.device_name) is not None:
                    services.virt.detach_disk(instance_id, b.device_name)
            with suppress(NotFound):
                services.compute.volume_actions.delete_attachment(rctx, b.attachment_id)
            with services.db.session() as session:
                session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                    status="error", attachment_id=None))
                session.delete(session.get(BlockDevice, b.id))
            _event(services, instance_id, request_id, "compute_attach_volume", "Error",
                   str(exc))
            return {"error": str(exc)}
        with services.db.session() as session:
            session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                status="attached"))
        _event(services, instance_id, request_id, "compute_attach_volume", "Success")
        return {"attached": b.volume_id}


@handler("compute.detach_volume")
def detach_volume(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    request_id = ctx.payload.get("request_id")
    with instance_lock(instance_id):
        with services.db.session(readonly=True) as session:
            b = session.get(BlockDevice, ctx.payload["bdm_id"])
            if b is None or b.status != "detaching":
                return {"skipped": "not detaching"}
            session.expunge(b)
        _event(services, instance_id, request_id, "compute_detach_volume")
        try:
            drv = services.virt
            with suppress(InstanceNotFound):
                if drv.spec(instance_id).disk(b.device_name) is not None:
                    drv.detach_disk(instance_id, b.device_name)
        except Exception as exc:  # noqa: BLE001 - still attached: say so
            LOG.warning("instance %s: detach of %s failed: %s", instance_id, b.volume_id, exc)
            with services.db.session() as session:
                session.execute(update(BlockDevice).where(BlockDevice.id == b.id).values(
                    status="attached"))
            with suppress(StratoError):
                services.compute.volume_actions.dispatch(
                    rctx, b.volume_id, {"os-roll_detaching": {}}, (3, 0))
            _event(services, instance_id, request_id, "compute_detach_volume", "Error",
                   str(exc))
            return {"error": str(exc)}
        if b.attachment_id:
            with suppress(NotFound):
                services.compute.volume_actions.delete_attachment(rctx, b.attachment_id)
        with services.db.session() as session:
            session.delete(session.get(BlockDevice, b.id))
        _event(services, instance_id, request_id, "compute_detach_volume", "Success")
        return {"detached": b.volume_id}


# ---------------------------------------------------------------- delete
@handler("compute.delete")
def delete(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.DELETING:
            return {"skipped": "not deleting"}
        _event(services, instance_id, rctx.request_id, "compute_terminate_instance")
        _cleanup(services, rctx, instance_id)
        with services.db.session() as session:
            row = session.get(Instance, instance_id)
            quota = services.compute.quota
            if row.quota_committed:
                quota.release(session, row.project_id, instance_deltas(row.flavor))
            else:
                quota.rollback(session, list(row.reservations or []))
            _set(session, instance_id, states.DELETING, vm_state=states.DELETED,
                 task_state=None, power_state=0, terminated_at=now(), deleted=True,
                 reservations=[], quota_committed=False)
            events.emit(session, "compute", "compute.instance.delete.end", instance_id,
                        row.project_id)
    _event(services, instance_id, rctx.request_id, "compute_terminate_instance", "Success")
    return {"deleted": instance_id}


# ---------------------------------------------------------------- interfaces
@handler("compute.attach_interface")
def attach_interface(ctx: JobContext) -> dict[str, Any]:
    """Plug the port the API created (or bound) and hot-plug its NIC; on failure the
    port goes again (deleted, or unbound when it was the user's)."""
    services, instance_id, port_id = ctx.services, ctx.payload["instance_id"], \
        ctx.payload["port_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    request_id = ctx.payload.get("request_id")
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted:
            return {"skipped": "instance gone"}
        _event(services, instance_id, request_id, "compute_attach_interface")
        drv = services.virt
        try:
            net = ports.network_of(services)
            if net is None:
                raise RuntimeError("the network service is not available on this host")
            nic = ports.spec_of(net.plug(port_id))
            if drv.spec(instance_id).nic(port_id) is None:
                drv.attach_nic(instance_id, nic)
        except Exception as exc:  # noqa: BLE001 - revert: no NIC, no port
            LOG.warning("instance %s: attach of port %s failed: %s", instance_id, port_id,
                        exc)
            with suppress(VirtError):
                if drv.spec(instance_id).nic(port_id) is not None:
                    drv.detach_nic(instance_id, port_id)
            with suppress(StratoError):
                services.network.detach_port(rctx, instance_id, port_id)
            _event(services, instance_id, request_id, "compute_attach_interface", "Error",
                   str(exc))
            return {"error": str(exc)}
        with services.db.session() as session:
            session.execute(update(Instance).where(Instance.id == instance_id).values(
                updated_at=now()))
        _event(services, instance_id, request_id, "compute_attach_interface", "Success")
        return {"attached": port_id}


@handler("compute.detach_interface")
def detach_interface(ctx: JobContext) -> dict[str, Any]:
    """Unplug the NIC (the guest releases it), then the network service unplugs the
    port and deletes or unbinds it."""
    services, instance_id, port_id = ctx.services, ctx.payload["instance_id"], \
        ctx.payload["port_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    request_id = ctx.payload.get("request_id")
    with instance_lock(instance_id):
        _event(services, instance_id, request_id, "compute_detach_interface")
        try:
            with suppress(InstanceNotFound):
                if services.virt.spec(instance_id).nic(port_id) is not None:
                    services.virt.detach_nic(instance_id, port_id)
            services.network.detach_port(rctx, instance_id, port_id)
        except Exception as exc:  # noqa: BLE001 - still attached: say so
            LOG.warning("instance %s: detach of port %s failed: %s", instance_id, port_id,
                        exc)
            _event(services, instance_id, request_id, "compute_detach_interface", "Error",
                   str(exc))
            return {"error": str(exc)}
        with services.db.session() as session:
            session.execute(update(Instance).where(Instance.id == instance_id).values(
                updated_at=now()))
        _event(services, instance_id, request_id, "compute_detach_interface", "Success")
        return {"detached": port_id}
