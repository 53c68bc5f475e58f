"""Resize and cold migration: ``resize``, ``migrate``, ``confirmResize``,
``revertResize`` and the automatic confirm (``[compute] resize_confirm_window``).

The API checks, picks the destination with the scheduler and records in one
transaction (task ``resize_prep``, a ``pre-migrating`` migration whose ``dest_compute``
is the claim, the quota of the growth reserved, old and new flavor, source and
destination in the system metadata) and enqueues ``compute.resize`` on the source host.
A ``migrate`` is the same move with the same flavor (migration type ``migration``).
The job walks Nova's task states, each step idempotent so a restart continues where a
kill stopped it:

- ``resize_prep``: the guest is stopped (its vCPUs and RAM change with the restart);
- ``resize_migrating``: a block-store snapshot of the root disk, so a revert gets the
  old disk back exactly (the engines' ``rollback_to_snap``);
- ``resize_migrated``: the root disk grown to the new flavor;
- ``resize_finish``: the new flavor in the guest's spec and the record, the guest
  started again if it ran → ``resized`` (VERIFY_RESIZE).  When the destination is
  another host, ``compute.finish_resize`` does this step there
  (:mod:`strato.compute.cold_migrate`) on the same disks and the server's host flips.

Confirm drops the snapshot (and, after a move, the source's guest directory, on the
source host); revert (``resize_reverting``) rolls the disk back to it, drops it and
restarts the guest with the old flavor (after a move: the destination lets the guest
go, then the source restarts it).  A failure before VERIFY_RESIZE does the same as a
revert and leaves the server as it was, on its host, with a fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import disks, migrations, ports, states
from strato.compute.api import ComputeAPI, P, ctx_payload, now, state_message
from strato.compute.manager import _event, _fault, _load, _set, instance_lock, vm_state_for
from strato.compute.models import ComputeNode, Instance
from strato.compute.scheduler import NoValidHost
from strato.compute.views import Version, flavor_snapshot
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash, errors
from strato.virt.qemu import PowerState
from strato.virt.qemu.errors import InstanceNotFound

LOG = logging.getLogger(__name__)

ACTIONS = ("resize", "confirmResize", "revertResize", "migrate")
RULES = {"resize": P + "servers:resize", "confirmResize": P + "servers:confirm_resize",
         "revertResize": P + "servers:revert_resize",
         "migrate": P + "os-migrate-server:migrate"}
#: the job's steps, in order
STEPS = (states.RESIZE_PREP, states.RESIZE_MIGRATING, states.RESIZE_MIGRATED,
         states.RESIZE_FINISH)
#: the system metadata keys a resize in flight keeps
KEYS = ("old_flavor", "new_flavor", "old_vm_state", "resize_snap", "resize_reservations",
        "resize_down", "migration_id", "resize_source", "resize_dest")
#: ``migrate``'s ``host`` (2.56)
MIGRATE_HOST_VERSION = (2, 56)
DISK_CONFIGS = ("AUTO", "MANUAL")
#: seconds between ACPI power-off requests while the guest does not go
SHUTDOWN_RETRY = 5.0


def snap_name(migration_id: int) -> str:
    return f"resize-{migration_id}"


class Resizes:
    """The three actions' API part: validate, authorize, record, enqueue."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version = (2, 1)) -> None:
        if name == "resize":
            self.resize(ctx, server_id, args)
        elif name == "migrate":
            self.migrate(ctx, server_id, args, version)
        elif name == "confirmResize":
            self.finish(ctx, server_id, "confirmResize", states.RESIZE_CONFIRMING,
                        "compute.resize_confirm", "confirming")
        else:
            self.finish(ctx, server_id, "revertResize", states.RESIZE_REVERTING,
                        "compute.resize_revert", "reverting")

    def resize(self, ctx: RequestContext, server_id: str, args: Any) -> None:
        if not isinstance(args, dict) or "flavorRef" not in args:
            raise BadRequest("Invalid input for field/attribute resize. Value: "
                             f"{args!r}. 'flavorRef' is a required property")
        extra = set(args) - {"flavorRef", "OS-DCF:diskConfig"}
        if extra:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} "
                             "were unexpected)")
        if args.get("OS-DCF:diskConfig", "AUTO") not in DISK_CONFIGS:
            raise BadRequest("Invalid input for field/attribute OS-DCF:diskConfig.")
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, RULES["resize"])
            self.api._check_lock(ctx, inst)
            if inst.vm_state not in (states.ACTIVE, states.STOPPED) \
                    or inst.task_state is not None:
                raise Conflict(state_message("resize", inst))
            old, old_id, image_backed = dict(inst.flavor), inst.flavor_id, bool(inst.image_ref)
        flavor = self.api._flavor(ctx, args["flavorRef"])
        new = flavor_snapshot(flavor)
        if flavor.id == old_id:
            raise BadRequest("When resizing, instances must change flavor!")
        if image_backed:
            if new["root_gb"] == 0 and old["root_gb"] != 0:
                raise BadRequest("Unable to resize disk down: Resize to zero disk flavor "
                                 "is not allowed.")
            if new["root_gb"] < old["root_gb"]:
                raise BadRequest("Resize error: Unable to resize disk down.")
        up = {"cores": max(0, new["vcpus"] - old["vcpus"]),
              "ram": max(0, new["memory_mb"] - old["memory_mb"])}
        down = {"cores": max(0, old["vcpus"] - new["vcpus"]),
                "ram": max(0, old["memory_mb"] - new["memory_mb"])}
        same_host = bool(self.api.conf.DEFAULT.allow_resize_to_same_host)
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id)
            if inst.vm_state not in (states.ACTIVE, states.STOPPED) \
                    or inst.task_state is not None:
                raise Conflict(state_message("resize", inst))
            ids = self.api.quota.reserve(session, inst.project_id, up)
            dest = _place(session, self.api.conf, inst, new, same_host=same_host,
                          only_host_fallback=True)
            self._start(session, ctx, inst, "resize", old, new, dest, ids, down)

    def migrate(self, ctx: RequestContext, server_id: str, args: Any,
                version: Version) -> None:
        """Nova's cold migration (admin): the resize flow with the same flavor to
        another host, the scheduler's or (2.56) the one named."""
        host = None
        if version >= MIGRATE_HOST_VERSION and args is not None:
            if not isinstance(args, dict):
                raise BadRequest(f"Invalid input for field/attribute migrate. Value: "
                                 f"{args!r}. {args!r} is not of type 'object', 'null'")
            extra = set(args) - {"host"}
            if extra:
                raise BadRequest("Additional properties are not allowed "
                                 f"({', '.join(sorted(extra))} were unexpected)")
            host = args.get("host")
            if host is not None and (not isinstance(host, str) or not host.strip()
                                     or len(host) > 255):
                raise BadRequest(f"Invalid input for field/attribute host. Value: {host!r}.")
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, RULES["migrate"])
            self.api._check_lock(ctx, inst)
            if inst.vm_state not in (states.ACTIVE, states.STOPPED) \
                    or inst.task_state is not None:
                raise Conflict(state_message("migrate", inst))
            if host is not None:
                if host == inst.host:
                    raise BadRequest("Cannot migrate to the host where the server resides.")
                if session.get(ComputeNode, host) is None:
                    raise BadRequest(f"Compute host {host} could not be found.")
            flavor = dict(inst.flavor)
            dest = _place(session, self.api.conf, inst, flavor, requested_host=host)
            # no growth, nothing freed (the keys a resize has: quota calls need them)
            self._start(session, ctx, inst, "migrate", flavor, flavor, dest, [],
                        {"cores": 0, "ram": 0})

    def _start(self, session: Any, ctx: RequestContext, inst: Instance, label: str,
               old: dict[str, Any], new: dict[str, Any], dest: str, ids: list[Any],
               down: dict[str, int]) -> None:
        """The claim (a migration record to ``dest``), the task state and the job on
        the source host, in the caller's transaction (the scheduler's)."""
        mid = migrations.record(session, ctx, inst.id, inst.host, inst.flavor_id,
                                new.get("id") or inst.flavor_id, dest=dest,
                                migration_type="resize" if label == "resize" else "migration")
        meta = {k: v for k, v in (inst.system_metadata or {}).items() if k not in KEYS}
        meta.update(old_flavor=old, new_flavor=new, old_vm_state=inst.vm_state,
                    resize_snap=snap_name(mid), resize_reservations=ids,
                    resize_down=down, migration_id=mid, resize_source=inst.host,
                    resize_dest=dest)
        done = session.execute(update(Instance).where(
            Instance.id == inst.id, Instance.vm_state == inst.vm_state,
            Instance.task_state.is_(None)).values(
            task_state=states.RESIZE_PREP, system_metadata=meta, updated_at=now())
        ).rowcount
        if not done:
            raise Conflict(state_message(label, inst))
        self.api.record_action(session, ctx, inst, label)
        events.emit(session, "compute", "compute.instance.resize.prep.start", inst.id,
                    inst.project_id, new_flavor=new["id"], dest=dest)
        enqueue(session, "compute.resize", {"instance_id": inst.id,
                                            "ctx": ctx_payload(ctx)},
                target=f"host:{inst.host}", max_attempts=5)

    def finish(self, ctx: RequestContext, server_id: str, label: str, task: str,
               job: str, status: str) -> None:
        """confirmResize / revertResize: only in VERIFY_RESIZE (409 otherwise)."""
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, RULES[label])
            self.api._check_lock(ctx, inst)
            if inst.vm_state != states.RESIZED or inst.task_state is not None:
                raise Conflict(state_message(label, inst))
            request(session, inst, ctx, label, task, job, status)


def _place(session: Any, conf: Any, inst: Instance, flavor: dict[str, Any], *,
           requested_host: str | None = None, same_host: bool = False,
           only_host_fallback: bool = False) -> str:
    """The destination of a resize/migration, chosen inside the caller's transaction
    (the claim is its migration record).  The source is a candidate when
    ``same_host`` (``allow_resize_to_same_host``); with ``only_host_fallback`` a cloud
    whose one compute host is the server's resizes there (a single-box strato)."""
    from strato.compute.scheduler import select_destination, spec_for_instance

    def pick(ignore_source: bool) -> str:
        return select_destination(session, conf, spec_for_instance(
            session, inst, flavor=flavor, requested_host=requested_host,
            ignore_source=ignore_source))

    try:
        return pick(not same_host)
    except NoValidHost as exc:
        hosts = set(session.scalars(select(ComputeNode.host)))
        if same_host or not only_host_fallback or requested_host or hosts - {inst.host}:
            raise BadRequest(str(exc)) from None
    try:
        return pick(False)
    except NoValidHost as exc:
        raise BadRequest(str(exc)) from None


def _moved(meta: dict[str, Any]) -> bool:
    """A move between two hosts (not a same-host resize)."""
    return bool(meta.get("resize_dest")) and meta.get("resize_dest") != meta.get(
        "resize_source")


def request(session: Any, inst: Instance, ctx: RequestContext, label: str, task: str,
            job: str, status: str) -> bool:
    """Move a resized server to ``task`` and enqueue ``job`` (the API and the automatic
    confirm); False when it is no longer in VERIFY_RESIZE.  A confirm runs on the
    source host (it cleans the source), a revert on the server's host (the
    destination lets the guest go first)."""
    done = session.execute(update(Instance).where(
        Instance.id == inst.id, Instance.vm_state == states.RESIZED,
        Instance.task_state.is_(None)).values(task_state=task, updated_at=now())).rowcount
    if not done:
        raise Conflict(state_message(label, inst))
    meta = inst.system_metadata or {}
    ComputeAPI.record_action(session, ctx, inst, label)
    migrations.set_status(session, meta.get("migration_id"), status)
    target = meta["resize_source"] if job == "compute.resize_confirm" and _moved(meta) \
        else inst.host
    enqueue(session, job, {"instance_id": inst.id, "ctx": ctx_payload(ctx)},
            target=f"host:{target}", max_attempts=5)
    return True


# ---------------------------------------------------------------- the work
def _root(services: Any, instance_id: str) -> Any:
    return services.stores.vms.open(services.stores.vms_pool, disks.root_name(instance_id))


def _has_snap(services: Any, instance_id: str, snap: str) -> bool:
    try:
        with _root(services, instance_id) as disk:
            return snap in {s.name for s in disk.list_snaps()}
    except errors.ImageNotFound:
        return False


def _stop_guest(services: Any, instance_id: str) -> None:
    """A clean shutdown as Nova's libvirt driver does it: the ACPI request repeated
    every few seconds (a guest still booting misses the first), then a hard stop when
    ``shutdown_timeout`` runs out."""
    drv = services.virt
    deadline = time.monotonic() + services.conf.compute.shutdown_timeout
    while drv.pid(instance_id) is not None and time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a monitor that is going away
            drv.qmp(instance_id, "system_powerdown")
        retry = min(deadline, time.monotonic() + SHUTDOWN_RETRY)
        while drv.pid(instance_id) is not None and time.monotonic() < retry:
            time.sleep(0.2)
    with contextlib.suppress(InstanceNotFound):
        drv.stop(instance_id, 0)  # gone already, or killed now


def _apply_flavor(services: Any, instance_id: str, flavor: dict[str, Any],
                  run: bool) -> PowerState:
    """The guest's spec takes the flavor's vCPUs and RAM; started when ``run``."""
    drv = services.virt
    spec = dataclasses.replace(drv.spec(instance_id), memory_mb=flavor["memory_mb"],
                               vcpus=flavor["vcpus"])
    if run and drv.pid(instance_id) is None:
        ports.replug(services, spec.nics)
        drv.start(instance_id, spec)
    elif drv.pid(instance_id) is None:  # a stopped server starts later with it
        path = drv.paths(instance_id).spec
        tmp = path.with_suffix(".resize.tmp")
        tmp.write_text(spec.to_json())
        os.replace(tmp, path)
    return drv.power_state(instance_id)


def _restore_disk(services: Any, instance_id: str, snap: str) -> None:
    """The root disk as it was at ``snap`` (size too), and the snapshot gone; a re-run
    after both finds no snapshot and does nothing."""
    if not _has_snap(services, instance_id, snap):
        return
    with _root(services, instance_id) as disk:
        size = next(s.size for s in disk.list_snaps() if s.name == snap)
        disk.rollback_to_snap(snap)
        if disk.size() != size:  # librbd and the local engine restore it; make sure
            disk.resize(size)
        crash.fault("resize", "after-rollback")
        disk.remove_snap(snap)


def _drop_snap(services: Any, instance_id: str, snap: str) -> None:
    if not _has_snap(services, instance_id, snap):
        return
    with _root(services, instance_id) as disk:
        if disk.is_protected_snap(snap):
            disk.unprotect_snap(snap)
        disk.remove_snap(snap)


def _meta(inst: Instance) -> dict[str, Any]:
    return dict(inst.system_metadata or {})


def _cleared(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in KEYS}


def _advance(services: Any, instance_id: str, expect: str, new: str) -> None:
    with services.db.session() as session:
        if not _set(session, instance_id, expect, task_state=new):
            raise _Lost(f"instance {instance_id} left {expect}")


class _Lost(Exception):  # noqa: N818 - a signal
    """The instance left the state the job drives (deleted meanwhile)."""


def commit_finish(services: Any, inst: Instance, meta: dict[str, Any], mid: Any,
                  new: dict[str, Any], power: Any, **values: Any) -> bool:
    """The end of a resize's finish, same host or not (``values``: ``host=`` the
    destination): VERIFY_RESIZE with the new flavor, the quota growth committed, the
    migration ``finished`` -- one transaction.  False when the server left
    ``resize_finish`` meanwhile (deleted)."""
    with services.db.session() as session:
        finished = _set(session, inst.id, states.RESIZE_FINISH,
                        vm_state=states.RESIZED, task_state=None, power_state=int(power),
                        flavor=new, flavor_id=new["id"], **values)
        if finished:  # one transaction with the state: the growth is in use now
            quota = services.compute.quota
            quota.commit(session, list(meta.get("resize_reservations") or []))
            quota.release(session, inst.project_id, meta.get("resize_down") or {})
            session.execute(update(Instance).where(Instance.id == inst.id).values(
                system_metadata={**meta, "resize_reservations": []}))
            migrations.set_status(session, mid, "finished")
            events.emit(session, "compute", "compute.instance.finish_resize.end",
                        inst.id, inst.project_id, new_flavor=new["id"], **values)
    return bool(finished)


@handler("compute.resize")
def resize_job(ctx: JobContext) -> dict[str, Any]:
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx_req = ctx.payload["ctx"].get("request_id")
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None:
            return {"skipped": "no instance"}
        meta = _meta(inst)
        if inst.deleted or inst.task_state not in STEPS:
            if inst.deleted or inst.task_state == states.DELETING:
                _drop_reservations(services, meta)
            return {"skipped": f"not resizing ({inst.task_state})"}
        new, snap, mid = meta["new_flavor"], meta["resize_snap"], meta["migration_id"]
        task = inst.task_state
        if task == states.RESIZE_FINISH and _moved(meta):
            return {"skipped": "finishing on " + meta["resize_dest"]}
        try:
            if task == states.RESIZE_PREP:
                _event(services, instance_id, rctx_req, "compute_prep_resize")
                _stop_guest(services, instance_id)
                with services.db.session() as session:
                    migrations.set_status(session, mid, "migrating")
                    events.emit(session, "compute", "compute.instance.resize.prep.end",
                                instance_id, inst.project_id)
                _advance(services, instance_id, task, states.RESIZE_MIGRATING)
                _event(services, instance_id, rctx_req, "compute_prep_resize", "Success")
                task = states.RESIZE_MIGRATING
            if task == states.RESIZE_MIGRATING:
                _event(services, instance_id, rctx_req, "compute_resize_instance")
                _stop_guest(services, instance_id)  # a restart may have found it running
                if inst.image_ref and not _has_snap(services, instance_id, snap):
                    with _root(services, instance_id) as disk:
                        disk.create_snap(snap)
                ctx.checkpoint(snap=snap)
                crash.fault("resize", "after-snap")
                with services.db.session() as session:
                    migrations.set_status(session, mid, "post-migrating")
                _advance(services, instance_id, task, states.RESIZE_MIGRATED)
                task = states.RESIZE_MIGRATED
            if task == states.RESIZE_MIGRATED:
                if inst.image_ref:
                    with _root(services, instance_id) as disk:
                        if disk.size() < new["root_gb"] << 30:
                            disk.resize(new["root_gb"] << 30)
                crash.fault("resize", "after-grow")
                _event(services, instance_id, rctx_req, "compute_resize_instance", "Success")
                if _moved(meta):  # the destination finishes: one transaction with the step
                    with services.db.session() as session:
                        if not _set(session, instance_id, task,
                                    task_state=states.RESIZE_FINISH):
                            raise _Lost(f"instance {instance_id} left {task}")
                        enqueue(session, "compute.finish_resize", dict(ctx.payload),
                                target=f"host:{meta['resize_dest']}", max_attempts=5)
                    return {"migrated": instance_id, "dest": meta["resize_dest"]}
                _advance(services, instance_id, task, states.RESIZE_FINISH)
                task = states.RESIZE_FINISH
            _event(services, instance_id, rctx_req, "compute_finish_resize")
            power = _apply_flavor(services, instance_id, new,
                                  meta["old_vm_state"] == states.ACTIVE)
        except _Lost:
            _drop_reservations(services, meta)
            return {"skipped": "instance left the resize"}
        except Exception as exc:  # noqa: BLE001 - undone: the server as it was, a fault
            LOG.warning("instance %s: resize failed: %s", instance_id, exc)
            return _fail(services, ctx, inst, task, exc)
        finished = commit_finish(services, inst, meta, mid, new, power)
        if not finished:  # deleted meanwhile
            _drop_reservations(services, meta)
            return {"skipped": "state changed during the resize"}
        _event(services, instance_id, rctx_req, "compute_finish_resize", "Success")
        return {"resized": instance_id}


def _drop_reservations(services: Any, meta: dict[str, Any]) -> None:
    """The server went (deleted during the resize): the growth is not needed now."""
    with services.db.session() as session:
        services.compute.quota.rollback(session, list(meta.get("resize_reservations") or []))


def _fail(services: Any, ctx: JobContext, inst: Instance, task: str,
          exc: BaseException | None, fault: dict[str, Any] | None = None) -> dict[str, Any]:
    """Back to the old flavor and disk, the old power state, the growth's quota back
    (on the source host; ``fault``: what failed on the destination)."""
    meta = _meta(inst)
    fault = fault if fault is not None else _fault(exc or RuntimeError("resize failed"))
    try:
        _restore_disk(services, inst.id, meta["resize_snap"])
        _apply_flavor(services, inst.id, meta["old_flavor"],
                      meta["old_vm_state"] == states.ACTIVE)
    except Exception as undo:  # noqa: BLE001 - the record says ERROR then
        LOG.warning("instance %s: resize undo failed: %s", inst.id, undo)
        after = states.ERROR
    else:
        after = meta["old_vm_state"]
    power = services.virt.power_state(inst.id)
    with services.db.session() as session:
        services.compute.quota.rollback(session, list(meta.get("resize_reservations") or []))
        _set(session, inst.id, task, vm_state=after, task_state=None,
             power_state=int(power), fault=fault, system_metadata=_cleared(meta))
        migrations.set_status(session, meta.get("migration_id"), "error")
        events.emit(session, "compute", "compute.instance.resize.error", inst.id,
                    inst.project_id, error=fault["message"])
    request_id = ctx.payload["ctx"].get("request_id")
    event = {states.RESIZE_PREP: "compute_prep_resize",
             states.RESIZE_FINISH: "compute_finish_resize"}.get(task, "compute_resize_instance")
    _event(services, inst.id, request_id, event, "Error", fault["details"], fault["message"])
    return {"error": fault["message"]}


@handler("compute.resize_confirm")
def confirm_job(ctx: JobContext) -> dict[str, Any]:
    """The saved snapshot goes; the server is ACTIVE or SHUTOFF as its guest is.  After
    a move this runs on the source host: the guest's directory there goes too (never
    the disks: the destination runs on them)."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    request_id = ctx.payload["ctx"].get("request_id")
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.RESIZE_CONFIRMING:
            return {"skipped": "not confirming"}
        meta = _meta(inst)
        _event(services, instance_id, request_id, "compute_confirm_resize")
        try:
            _drop_snap(services, instance_id, meta.get("resize_snap", ""))
            if _moved(meta) and services.conf.DEFAULT.host != inst.host:
                services.virt.destroy(instance_id)
        except Exception as exc:  # noqa: BLE001 - still VERIFY_RESIZE: may be retried
            LOG.warning("instance %s: confirm failed: %s", instance_id, exc)
            with services.db.session() as session:
                _set(session, instance_id, states.RESIZE_CONFIRMING, task_state=None)
                migrations.set_status(session, meta.get("migration_id"), "finished")
            _event(services, instance_id, request_id, "compute_confirm_resize", "Error",
                   str(exc))
            return {"error": str(exc)}
        # after a move the guest runs elsewhere: its host's last report is the truth
        p = PowerState(inst.power_state or 0) if services.conf.DEFAULT.host != inst.host \
            else services.virt.power_state(instance_id)
        vm_state = states.ACTIVE if p == PowerState.RUNNING else vm_state_for(
            p, states.STOPPED)
        with services.db.session() as session:
            _set(session, instance_id, states.RESIZE_CONFIRMING, vm_state=vm_state,
                 task_state=None, power_state=int(p), system_metadata=_cleared(meta))
            migrations.set_status(session, meta.get("migration_id"), "confirmed")
            events.emit(session, "compute", "compute.instance.resize.confirm.end",
                        instance_id, inst.project_id)
    _event(services, instance_id, request_id, "compute_confirm_resize", "Success")
    return {"confirmed": instance_id}


@handler("compute.resize_revert")
def revert_job(ctx: JobContext) -> dict[str, Any]:
    """The guest stopped, the root disk rolled back to the saved snapshot (its data
    and size), the old flavor back; the guest started again if it ran before."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    request_id = ctx.payload["ctx"].get("request_id")
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.RESIZE_REVERTING:
            return {"skipped": "not reverting"}
        meta = _meta(inst)
        if _moved(meta):
            from strato.compute import cold_migrate

            return cold_migrate.revert_here(ctx, inst, meta)
        old = meta["old_flavor"]
        _event(services, instance_id, request_id, "compute_revert_resize")
        try:
            _stop_guest(services, instance_id)
            _restore_disk(services, instance_id, meta["resize_snap"])
            _event(services, instance_id, request_id, "compute_revert_resize", "Success")
            _event(services, instance_id, request_id, "compute_finish_revert_resize")
            power = _apply_flavor(services, instance_id, old,
                                  meta["old_vm_state"] == states.ACTIVE)
        except Exception as exc:  # noqa: BLE001 - the server is in ERROR, with a fault
            LOG.warning("instance %s: revert failed: %s", instance_id, exc)
            fault = _fault(exc)
            with services.db.session() as session:
                _set(session, instance_id, states.RESIZE_REVERTING, vm_state=states.ERROR,
                     task_state=None, fault=fault)
                migrations.set_status(session, meta.get("migration_id"), "error")
            _event(services, instance_id, request_id, "compute_finish_revert_resize",
                   "Error", fault["details"], fault["message"])
            return {"error": str(exc)}
        return reverted(services, inst, meta, power, request_id)


def reverted(services: Any, inst: Instance, meta: dict[str, Any], power: PowerState,
             request_id: str | None) -> dict[str, Any]:
    """The record of a finished revert: the old flavor and vm_state, the quota back
    (the caller holds the instance lock)."""
    instance_id, old, new = inst.id, meta["old_flavor"], meta["new_flavor"]
    with services.db.session() as session:
        if not _set(session, instance_id, states.RESIZE_REVERTING,
                    vm_state=meta["old_vm_state"], task_state=None,
                    power_state=int(power), flavor=old, flavor_id=old["id"],
                    system_metadata=_cleared(meta)):
            return {"skipped": "state changed during the revert"}
        quota = services.compute.quota  # usage back to the old flavor's
        grew = {"cores": max(0, new["vcpus"] - old["vcpus"]),
                "ram": max(0, new["memory_mb"] - old["memory_mb"])}
        quota.release(session, inst.project_id, grew)
        quota.release(session, inst.project_id,
                      {k: -v for k, v in (meta.get("resize_down") or {}).items()})
        migrations.set_status(session, meta.get("migration_id"), "reverted")
        events.emit(session, "compute", "compute.instance.resize.revert.end",
                    instance_id, inst.project_id)
    _event(services, instance_id, request_id, "compute_finish_revert_resize", "Success")
    return {"reverted": instance_id}


# ---------------------------------------------------------------- auto-confirm
def confirm_expired(services: Any, host: str, window: float) -> int:
    """Nova's ``_poll_unconfirmed_resizes``: resizes in VERIFY_RESIZE longer than
    ``window`` seconds are confirmed (as an admin of their project); returns how many."""
    cutoff = now() - timedelta(seconds=window)
    count = 0
    with services.db.session() as session:
        rows = list(session.scalars(select(Instance).where(
            Instance.host == host, Instance.deleted.is_(False),
            Instance.vm_state == states.RESIZED, Instance.task_state.is_(None),
            Instance.updated_at < cutoff)))
        for inst in rows:
            ctx = RequestContext(user_id=inst.user_id, project_id=inst.project_id,
                                 roles=["admin"], request_id=f"req-{os.urandom(16).hex()}")
            with contextlib.suppress(Conflict):
                count += request(session, inst, ctx, "confirmResize",
                                 states.RESIZE_CONFIRMING, "compute.resize_confirm",
                                 "confirming")
    return count


def start_auto_confirm(services: Any, host: str, stop: threading.Event) -> None:
    """The periodic confirm, when ``[compute] resize_confirm_window`` > 0."""
    window = float(services.conf.compute.resize_confirm_window)
    if window <= 0:
        return

    def loop() -> None:
        while not stop.wait(min(window, 5.0)):
            try:
                n = confirm_expired(services, host, window)
                if n:
                    LOG.info("auto-confirmed %d resizes older than %ss", n, window)
            except Exception:  # noqa: BLE001 - the next round tries again
                LOG.exception("automatic resize confirm failed")

    threading.Thread(target=loop, name="compute-resize-confirm", daemon=True).start()


def reconcile(services: Any, inst: Instance) -> bool:
    """After a restart, a resize task whose job is gone gets a job again (the steps
    continue or undo from where they are), on the host that step runs on (a move's
    finish on its destination, its confirm on its source); True when handled."""
    from strato.jobs.models import PENDING, RUNNING, Job

    task, meta = inst.task_state or "", _meta(inst)
    moved, here = _moved(meta), inst.host
    if task == states.RESIZE_FINISH and moved:
        job, here = "compute.finish_resize", meta["resize_dest"]
    elif task in STEPS:
        job = "compute.resize"
    elif task == states.RESIZE_CONFIRMING:
        job = "compute.resize_confirm"
        here = meta["resize_source"] if moved else here
    elif task == states.RESIZE_REVERTING:
        job = "compute.resize_finish_revert" if moved and inst.host == meta[
            "resize_source"] else "compute.resize_revert"
    else:
        return False
    with services.db.session() as session:
        queued = session.scalar(select(Job.id).where(
            Job.state.in_((PENDING, RUNNING)), Job.name.like("compute.%"),
            Job.payload["instance_id"].as_string() == inst.id).limit(1))
        if queued is None:
            enqueue(session, job, {"instance_id": inst.id, "ctx": {
                "user_id": inst.user_id, "project_id": inst.project_id, "roles": ["admin"],
                "request_id": None}}, target=f"host:{here}", max_attempts=5)
    return True


# the cross-host steps' handlers (compute.finish_resize, ...) register with this module
from strato.compute import cold_migrate  # noqa: E402,F401
