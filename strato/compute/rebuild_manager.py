"""The ``compute.rebuild`` job: Nova's rebuild on this host, step by task state.

``rebuilding``: the guest is powered off.  ``rebuild_block_device_mapping``: attached
volumes stay attached (they are reconnected at spawn).  ``rebuild_spawning``: the old
root disk is retired by the store's rules (kept as ``<disk>.<job>.deleted`` while
clones such as a createImage snapshot still need it, else removed) and a fresh clone of
the image takes its place; the config drive is written again; the guest boots.  A
server that was STOPPED is powered off again (Nova, since Queens); else it is ACTIVE.

Each step is idempotent and the job is durable: after a ``kill -9`` anywhere the job
is claimed again and continues from the task state (the root disk is replaced once per
job: the checkpoint says so).  Any failure ends in ERROR with a fault, never in a task
state without a job.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from sqlalchemy import update

from strato import events
from strato.compute import configdrive, disks, states
from strato.compute.api import ctx_from, now
from strato.compute.manager import (
    _event,
    _fault,
    _load,
    _set,
    _spec,
    forget_admin_pass,
    instance_lock,
)
from strato.compute.models import BlockDevice, Instance
from strato.jobs.worker import JobContext, handler
from strato.storage import crash
from strato.storage.refs import DELETED
from strato.virt.qemu import PowerState
from strato.virt.qemu.errors import InstanceNotFound

LOG = logging.getLogger(__name__)
EVENT = "compute_rebuild_instance"


def retire_root(services: Any, instance_id: str, token: str) -> None:
    """Remove the root disk, or keep it as ``<disk>.<token>.deleted`` while snapshots
    of it still have clones.  A unique name per rebuild: a second rebuild may retire
    again while the first retired disk still serves its clones."""
    name = disks.root_name(instance_id)
    disks.remove_root(services, instance_id, kept_as=f"{name}.{token}{DELETED}")


def _power_off(services: Any, instance_id: str, timeout: float) -> None:
    with suppress(InstanceNotFound):
        if services.virt.pid(instance_id) is not None:
            services.virt.stop(instance_id, timeout)


def _to(session: Any, instance_id: str, expect: str, task: str) -> None:
    if not _set(session, instance_id, expect, task_state=task):
        raise RuntimeError(f"instance {instance_id} left {expect} during the rebuild")


@handler("compute.rebuild")
def rebuild(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    rid = rctx.request_id
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state not in (
                states.REBUILDING, states.REBUILD_BLOCK_DEVICE_MAPPING,
                states.REBUILD_SPAWNING):
            return {"skipped": "not rebuilding"}
        _event(services, instance_id, rid, EVENT)
        drv = services.virt
        try:
            task = inst.task_state
            if task == states.REBUILDING:
                _power_off(services, instance_id, services.conf.compute.shutdown_timeout)
                with services.db.session() as session:
                    _to(session, instance_id, task, states.REBUILD_BLOCK_DEVICE_MAPPING)
                task = states.REBUILD_BLOCK_DEVICE_MAPPING
                crash.fault("rebuild", "after-power-off")
            if task == states.REBUILD_BLOCK_DEVICE_MAPPING:
                # volumes keep their attachments; spawn reconnects them
                with services.db.session() as session:
                    _to(session, instance_id, task, states.REBUILD_SPAWNING)
                task = states.REBUILD_SPAWNING
            if not ctx.progress.get("root_replaced"):
                _power_off(services, instance_id, 0)  # never a disk swap under a guest
                if inst.image_ref:
                    retire_root(services, instance_id, f"r{ctx.job_id}")
                    crash.fault("rebuild", "after-retire-root")
                    disks.create_root(services, instance_id, inst.image_ref,
                                      inst.flavor["root_gb"])
                ctx.checkpoint(root_replaced=True)
            crash.fault("rebuild", "before-spawn")
            if configdrive.required(services, inst):
                if not inst.config_drive:
                    with services.db.session() as session:
                        session.execute(update(Instance).where(Instance.id == instance_id)
                                        .values(config_drive="True"))
                    inst.config_drive = "True"
                configdrive.write(services, instance_id, ctx.payload.get("admin_pass"))
            forget_admin_pass(services, ctx)
            if services.metadata_server is not None:
                services.metadata_server.watch(instance_id)
            if drv.pid(instance_id) is None:
                spec, attached = _spec(services, rctx, inst, bdms)
                drv.spawn(spec)
                for b in attached:
                    services.compute.volume_actions.complete_attachment(rctx,
                                                                        b.attachment_id)
            after = states.ACTIVE
            if inst.vm_state == states.STOPPED:  # Nova keeps a stopped server stopped
                _power_off(services, instance_id, 0)
                after = states.STOPPED
            power = drv.power_state(instance_id)
        except Exception as exc:  # noqa: BLE001 - every failure ends in ERROR with a fault
            LOG.warning("instance %s: rebuild failed: %s", instance_id, exc)
            forget_admin_pass(services, ctx)
            fault = _fault(exc)
            with services.db.session() as session:
                row = session.get(Instance, instance_id)
                if row is not None and row.task_state in (
                        states.REBUILDING, states.REBUILD_BLOCK_DEVICE_MAPPING,
                        states.REBUILD_SPAWNING):
                    _set(session, instance_id, row.task_state, vm_state=states.ERROR,
                         task_state=None, fault=fault,
                         power_state=int(drv.power_state(instance_id)))
                    events.emit(session, "compute", "compute.instance.rebuild.error",
                                instance_id, row.project_id, error=fault["message"])
            _event(services, instance_id, rid, EVENT, "Error", fault["details"],
                   fault["message"])
            return {"error": str(exc)}
        with services.db.session() as session:
            if not _set(session, instance_id, states.REBUILD_SPAWNING, vm_state=after,
                        task_state=None, power_state=int(power), launched_at=now()):
                return {"skipped": "state changed during the rebuild"}
            session.execute(update(BlockDevice).where(
                BlockDevice.instance_uuid == instance_id,
                BlockDevice.attachment_id.is_not(None)).values(status="attached"))
            events.emit(session, "compute", "compute.instance.rebuild.end", instance_id,
                        inst.project_id, image_ref=inst.image_ref)
    _event(services, instance_id, rid, EVENT, "Success")
    return {"rebuilt": instance_id, "power": PowerState(power).name}
