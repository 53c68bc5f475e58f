"""The two-host half of a resize or cold migration (Nova's ``finish_resize``,
``revert_resize``, ``finish_revert_resize``), on the same disks: the block store is
shared (Ceph RBD images; the local engine's files on one machine), so nothing is
copied — the guest stops on the source and starts on the destination.

- ``compute.finish_resize`` (destination): the guest is defined here from the records
  (root disk, volumes reconnected to this host, config drive written again, ports
  plugged) with the new flavor and started if it ran; the server's ``host`` flips in
  the transaction that makes it VERIFY_RESIZE.  A failure lets the local guest go and
  hands the undo to the source (``compute.resize_abort``): disk rolled back, old
  flavor, guest started there again, a fault.
- ``compute.resize_revert`` on a moved server (destination): the guest here is let go
  (never its disks), ``host`` flips back and ``compute.resize_finish_revert`` runs on
  the source: disk rolled back to the resize snapshot, the old flavor, the guest as
  it was.
- the confirm runs on the source (:func:`strato.compute.resize.confirm_job`).

An admin password given at boot lives only in the source's config drive: the drive
written on the destination has none (it is never stored).
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from typing import Any

from strato.compute import configdrive, migrations, states
from strato.compute.api import ctx_from
from strato.compute.manager import _event, _fault, _load, _set, _spec, instance_lock
from strato.compute.models import BlockDevice, Instance
from strato.compute.resize import (
    _drop_reservations,
    _fail,
    _meta,
    _restore_disk,
    _stop_guest,
    commit_finish,
    reverted,
)
from strato.context import RequestContext
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.virt.qemu import PowerState
from strato.virt.qemu.errors import InstanceNotFound

LOG = logging.getLogger(__name__)


def start_here(services: Any, rctx: RequestContext, inst: Instance,
               bdms: list[BlockDevice], flavor: dict[str, Any], run: bool) -> PowerState:
    """Define the guest on this host from its records with ``flavor`` (started when
    ``run``, else only its spec written, as a stopped guest has it); idempotent."""
    drv = services.virt
    inst.flavor = flavor  # a detached row: only the spec sees it
    if drv.pid(inst.id) is None:
        if configdrive.required(services, inst) and not configdrive.path(
                services, inst.id).exists():
            configdrive.write(services, inst.id)
        if services.metadata_server is not None:
            services.metadata_server.watch(inst.id)
        spec, attached = _spec(services, rctx, inst, bdms)
        if run:
            drv.spawn(spec)
        else:
            paths = drv.paths(inst.id)
            paths.dir.mkdir(parents=True, exist_ok=True)
            tmp = paths.spec.with_suffix(".move.tmp")
            tmp.write_text(spec.to_json())
            os.replace(tmp, paths.spec)
        for b in attached:
            services.compute.volume_actions.complete_attachment(rctx, b.attachment_id)
    return drv.power_state(inst.id)


def _let_go(services: Any, instance_id: str) -> None:
    """The guest gone from this host, its directory removed; the disks are the
    store's and stay.  QEMU is told to quit (no guest shutdown: what it wrote since
    the move is rolled back anyway), never killed first: a killed librbd client keeps
    the image's exclusive lock until its watch times out, and the source's rollback
    needs that lock now."""
    with suppress(InstanceNotFound):
        if services.virt.pid(instance_id) is not None:
            services.virt.stop(instance_id, 0)
    services.virt.destroy(instance_id)


@handler("compute.finish_resize")
def finish_job(ctx: JobContext) -> dict[str, Any]:
    """VERIFY_RESIZE on this host (the destination)."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    rid = ctx.payload["ctx"].get("request_id")
    here = services.conf.DEFAULT.host
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.RESIZE_FINISH:
            return {"skipped": "not finishing a resize"}
        meta = _meta(inst)
        if meta.get("resize_dest") != here:
            return {"skipped": f"the resize goes to {meta.get('resize_dest')}"}
        new, mid, source = meta["new_flavor"], meta["migration_id"], meta["resize_source"]
        _event(services, instance_id, rid, "compute_finish_resize")
        try:
            power = start_here(services, rctx, inst, bdms, new,
                               meta["old_vm_state"] == states.ACTIVE)
        except Exception as exc:  # noqa: BLE001 - undone on the source, with a fault
            LOG.warning("instance %s: finish of the move on %s failed: %s", instance_id,
                        here, exc)
            fault = _fault(exc)
            _let_go(services, instance_id)
            with services.db.session() as session:
                enqueue(session, "compute.resize_abort",
                        {**ctx.payload, "fault": fault, "task": states.RESIZE_FINISH},
                        target=f"host:{source}", max_attempts=5)
            return {"error": fault["message"]}
        finished = commit_finish(services, inst, meta, mid, new, power, host=here)
        if not finished:  # deleted meanwhile (on the source): nothing of it stays here
            _let_go(services, instance_id)
            _drop_reservations(services, meta)
            return {"skipped": "state changed during the resize"}
    _event(services, instance_id, rid, "compute_finish_resize", "Success")
    return {"resized": instance_id, "host": here}


@handler("compute.resize_abort")
def abort_job(ctx: JobContext) -> dict[str, Any]:
    """The destination could not finish: the server as it was, on this host (the
    source), with the destination's fault."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    task = ctx.payload.get("task", states.RESIZE_FINISH)
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != task:
            return {"skipped": "not finishing a resize"}
        return _fail(services, ctx, inst, task, None, fault=ctx.payload["fault"])


def revert_here(ctx: JobContext, inst: Instance, meta: dict[str, Any]) -> dict[str, Any]:
    """``compute.resize_revert`` of a moved server, on the destination (the caller
    holds the instance lock): the guest goes from here, the server's host back to the
    source, which finishes the revert."""
    services, instance_id = ctx.services, inst.id
    rid = ctx.payload["ctx"].get("request_id")
    source = meta["resize_source"]
    if inst.host == source:  # a re-run after the flip: the source's job is queued
        return {"skipped": "reverting on " + source}
    _event(services, instance_id, rid, "compute_revert_resize")
    try:
        _let_go(services, instance_id)
        with services.db.session() as session:
            if not _set(session, instance_id, states.RESIZE_REVERTING, host=source):
                return {"skipped": "state changed during the revert"}
            enqueue(session, "compute.resize_finish_revert", dict(ctx.payload),
                    target=f"host:{source}", max_attempts=5)
    except Exception as exc:  # noqa: BLE001 - the server is in ERROR, with a fault
        return _revert_failed(services, inst, meta, rid, "compute_revert_resize", exc)
    _event(services, instance_id, rid, "compute_revert_resize", "Success")
    return {"reverting": instance_id, "to": source}


def _revert_failed(services: Any, inst: Instance, meta: dict[str, Any], rid: str | None,
                   event: str, exc: BaseException) -> dict[str, Any]:
    LOG.warning("instance %s: revert failed: %s", inst.id, exc)
    fault = _fault(exc)
    with services.db.session() as session:
        _set(session, inst.id, states.RESIZE_REVERTING, vm_state=states.ERROR,
             task_state=None, fault=fault)
        migrations.set_status(session, meta.get("migration_id"), "error")
    _event(services, inst.id, rid, event, "Error", fault["details"], fault["message"])
    return {"error": str(exc)}


@handler("compute.resize_finish_revert")
def finish_revert_job(ctx: JobContext) -> dict[str, Any]:
    """On the source: the root disk rolled back to the resize snapshot (data and
    size), the guest defined again with the old flavor, started if it ran."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    rid = ctx.payload["ctx"].get("request_id")
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.RESIZE_REVERTING \
                or inst.host != services.conf.DEFAULT.host:
            return {"skipped": "not reverting here"}
        meta = _meta(inst)
        _event(services, instance_id, rid, "compute_finish_revert_resize")
        try:
            if services.virt.pid(instance_id) is not None:
                _stop_guest(services, instance_id)
            _restore_disk(services, instance_id, meta["resize_snap"])
            power = start_here(services, rctx, inst, bdms, meta["old_flavor"],
                               meta["old_vm_state"] == states.ACTIVE)
        except Exception as exc:  # noqa: BLE001 - the server is in ERROR, with a fault
            return _revert_failed(services, inst, meta, rid, "compute_finish_revert_resize",
                                  exc)
        return reverted(services, inst, meta, power, rid)
