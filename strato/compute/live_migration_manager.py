"""Live migration, the hosts' side: jobs on the source and the destination host.

Nova's RPC calls between the two computes are jobs here, each on its host's queue.
The destination's jobs run while the instance's ``host`` is still the source: their
payload says ``"host_bound": True`` (a guard that re-routes a guest's jobs to its
current host must leave them where they are).

1. ``compute.live_migration`` on the SOURCE (enqueued by the API): reads the guest's
   spec and PCI slots, enqueues ``compute.pre_live_migration`` on the destination and
   waits for its result (the incoming URI, NBD exports), then mirrors the disks (block
   migration) and migrates, polling QEMU; between polls it saves the memory/disk
   figures (``server migration show``) and reads abort / force-complete requests.
2. ``compute.pre_live_migration`` on the DESTINATION: the guest's spec rewritten for
   this host (its instances dir, the same disks, or for block migration a new disk in
   the block store: a copy-on-write child of the same parent, so only the top layer is
   mirrored), QEMU started with ``-incoming``.
3. At the switch-over (QEMU's migration ``completed``, the source ``postmigrate``) one
   transaction moves the instance: ``host`` = destination, task cleared,
   record ``completed``, ``compute.post_live_migration_at_destination`` enqueued there.
   The source QEMU and its directory go (and the source disk of a block migration).
4. Any failure or an abort before the switch-over: the migration cancelled, the guest
   running on the source, ``compute.rollback_live_migration_at_destination`` removes
   what the destination made; the record ``error`` (``cancelled`` for an abort), the
   task cleared, the action's event Error.

A retried source job (its worker died) never starts a new migration: it reads where
QEMU is -- ``postmigrate`` after a completed migration: the switch-over is committed;
a migration still running (QEMU kept going without the worker): it is followed again;
otherwise the guest runs on the source and the migration is rolled back.  An agent
start-up does the same for a ``migrating`` instance whose job is gone
(``reconcile``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import configdrive, disks, migrations, ports, states
from strato.compute.api import now
from strato.compute.live_migration import KEY
from strato.compute.manager import _event, _fault, _load, instance_lock
from strato.compute.migration_models import Migration
from strato.compute.models import Instance
from strato.jobs import queue
from strato.jobs.models import DONE, FAILED
from strato.jobs.queue import enqueue
from strato.jobs.worker import Interrupted, JobContext, LeaseLost, PermanentError, handler
from strato.storage import errors
from strato.virt.qemu import DiskSpec, GuestSpec, PowerState, migration
from strato.virt.qemu.errors import VirtError

LOG = logging.getLogger(__name__)
#: seconds the source waits for the destination to get ready
PREPARE_TIMEOUT = 180.0
#: seconds between saves of the migration's figures (and reads of abort/force)
REPORT_EVERY = 0.25


def migrating_name(instance_id: str) -> str:
    """The destination's new root disk of a block migration until the source's goes
    (on one machine both hosts see one local store)."""
    return f"{disks.root_name(instance_id)}.migrating"


#: QEMU's migration statuses of a migration under way
_ACTIVE = ("active", "setup", "device", "pre-switchover", "cancelling", "wait-unplug")


class _Aborted(Exception):  # noqa: N818 - a signal
    """An abort was requested (``DELETE /servers/{id}/migrations/{mid}``)."""


def _ctx_request_id(payload: dict[str, Any]) -> str | None:
    return (payload.get("ctx") or {}).get("request_id")


def _live(inst: Instance) -> dict[str, Any]:
    return dict((inst.system_metadata or {}).get(KEY) or {})


def _update_live(services: Any, instance_id: str, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the instance's live-migration record (row locked: the API
    writes abort/force flags into the same dict)."""
    with services.db.session() as session:
        row = session.scalars(select(Instance).where(Instance.id == instance_id)
                              .with_for_update()).one()
        meta = dict(row.system_metadata or {})
        live = {**dict(meta.get(KEY) or {}), **values}
        meta[KEY] = live
        session.execute(update(Instance).where(Instance.id == instance_id).values(
            system_metadata=meta))
        return live


def _status(services: Any, mid: int) -> str | None:
    with services.db.session(readonly=True) as session:
        m = session.get(Migration, mid)
        return None if m is None else m.status


def _set_status(services: Any, mid: int, status: str) -> None:
    with services.db.session() as session:
        migrations.set_status(session, mid, status)


def _admin_ctx(inst: Instance) -> dict[str, Any]:
    return {"user_id": inst.user_id, "project_id": inst.project_id, "roles": ["admin"],
            "request_id": None}


# ---------------------------------------------------------------- the source
@handler("compute.live_migration")
def live_migration_job(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, mid = p["instance_id"], int(p["migration_id"])
    rid = _ctx_request_id(p)
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.MIGRATING \
                or _live(inst).get("migration_id") != mid:
            return {"skipped": "not migrating"}
        here = services.conf.DEFAULT.host
        if inst.host != here:
            return {"skipped": f"the instance is on {inst.host}"}
        drv = services.virt
        live = _live(inst)
        qstatus, mstatus = migration.source_status(drv, instance_id)
        # a QEMU that came here by migration reports that one as completed: a first
        # attempt is fresh unless QEMU is migrating or migrated (a released job's rerun)
        fresh = ctx.attempt == 1 and not p.get("resolve") and qstatus != "postmigrate" \
            and mstatus not in _ACTIVE
        if not fresh:
            LOG.info("instance %s: live migration %s resumed: QEMU %s, migration %s",
                     instance_id, mid, qstatus, mstatus)
            if qstatus == "postmigrate" and mstatus == "completed":
                return _switch_over(services, ctx, inst, live, p, {"status": "completed"})
            if mstatus in _ACTIVE and live.get("incoming"):
                return _follow(services, ctx, inst, live, p, _incoming(live["incoming"]),
                               start=False)
            if qstatus is None:
                return _lost(services, ctx, inst, live, p)
            return _rollback(services, ctx, inst, live, p,
                             VirtError("the live migration was interrupted"))
        _event(services, instance_id, rid, "compute_live_migration")
        if live.get("abort"):
            return _rollback(services, ctx, inst, live, p, _Aborted())
        _set_status(services, mid, "preparing")
        try:
            incoming, sync = _prepare_dest(services, ctx, inst, p)
            live = _update_live(services, instance_id, incoming=_incoming_dict(incoming),
                                sync=sync)
            _set_status(services, mid, "running")
            return _follow(services, ctx, inst, live, p, incoming, sync)
        except (Interrupted, LeaseLost):
            raise
        except Exception as exc:  # noqa: BLE001 - rolled back: the guest stays here
            LOG.warning("instance %s: live migration %s failed: %s", instance_id, mid, exc)
            return _rollback(services, ctx, inst, _live_now(services, instance_id), p, exc)


def _live_now(services: Any, instance_id: str) -> dict[str, Any]:
    inst, _ = _load(services, instance_id)
    return _live(inst) if inst is not None else {}


def _incoming_dict(inc: migration.Incoming) -> dict[str, Any]:
    return {"uuid": inc.uuid, "uri": inc.uri, "multifd": inc.multifd,
            "nbd": {k: list(v) for k, v in inc.nbd.items()}}


def _incoming(d: dict[str, Any]) -> migration.Incoming:
    return migration.Incoming(d["uuid"], d["uri"], int(d.get("multifd") or 0),
                              {k: (v[0], int(v[1]), v[2]) for k, v in d["nbd"].items()})


def _prepare_dest(services: Any, ctx: JobContext, inst: Instance,
                  p: dict[str, Any]) -> tuple[migration.Incoming, dict[str, str]]:
    """``pre_live_migration`` on the destination; its answer (waits for its job)."""
    drv = services.virt
    spec = drv.spec(inst.id)
    state = drv._state(inst.id)
    # the RAM size QEMU was given (a guest started by an older strato: whole MiB)
    src = {"spec": spec.to_json(), "slots": state["slots"],
           "memory": state.get("memory") or str(spec.memory_mb),
           "instances_path": str(drv.state_dir), "root": None}
    if p["block"] and inst.image_ref:
        with services.stores.vms.open(services.stores.vms_pool,
                                      disks.root_name(inst.id)) as img:
            try:
                parent: list[str] | None = list(img.parent_info())
            except errors.ImageNotFound:
                parent = None
            src["root"] = {"size": img.size(), "parent": parent,
                           "snaps": len(img.list_snaps())}
    with services.db.session() as session:
        job = enqueue(session, "compute.pre_live_migration", {
            "instance_id": inst.id, "migration_id": p["migration_id"],
            "block": p["block"], "source": src, "ctx": p["ctx"], "host_bound": True},
            target=f"host:{p['dest']}", max_attempts=2)
        job_id = job.id
    _update_live(services, inst.id, prepare_job=job_id)
    deadline = time.monotonic() + PREPARE_TIMEOUT
    while True:
        row = queue.get(services.db, job_id)
        if row is not None and row.state == DONE:
            res = row.result or {}
            if "error" in res or "uri" not in res:
                raise VirtError(f"the destination could not prepare: {res.get('error')}")
            return _incoming(res), dict(res.get("sync") or {})
        if row is not None and row.state == FAILED:
            raise VirtError(f"the destination could not prepare: {row.error}")
        if _live_now(services, inst.id).get("abort"):
            raise _Aborted()
        if time.monotonic() > deadline:
            raise VirtError(f"the destination {p['dest']} did not prepare within "
                            f"{PREPARE_TIMEOUT:.0f}s")
        ctx.checkpoint(step="preparing")
        time.sleep(0.05)


class _Control:
    """Asked by ``migration.migrate``/``mirror`` between polls: saves the figures every
    ``REPORT_EVERY`` seconds and answers the abort/force requests the API recorded."""

    def __init__(self, services: Any, ctx: JobContext, instance_id: str,
                 timeout: float) -> None:
        self.services, self.ctx, self.instance_id = services, ctx, instance_id
        self.next = 0.0
        self.deadline = time.monotonic() + timeout if timeout > 0 else None
        self.disk = {"disk_total_bytes": 0, "disk_processed_bytes": 0,
                     "disk_remaining_bytes": 0}
        self.answer: str | None = None

    def __call__(self, info: dict[str, Any]) -> str | None:
        t = time.monotonic()
        if self.deadline is not None and t > self.deadline:
            return "abort"
        if t < self.next:
            return self.answer
        self.next = t + REPORT_EVERY
        figures = dict(self.disk)
        if info.get("status") == "mirroring":
            d = info["disk"]
            figures.update(disk_total_bytes=d["total"], disk_processed_bytes=d["transferred"],
                           disk_remaining_bytes=max(0, d["total"] - d["transferred"]))
            self.disk = dict(figures)
        ram = info.get("ram") or {}
        if ram:
            figures.update(memory_total_bytes=ram.get("total", 0),
                           memory_processed_bytes=ram.get("transferred", 0),
                           memory_remaining_bytes=ram.get("remaining", 0))
            if self.disk["disk_total_bytes"]:  # the mirrors are in sync from here
                figures.update(disk_processed_bytes=self.disk["disk_total_bytes"],
                               disk_remaining_bytes=0)
        self.ctx.checkpoint(figures=figures)
        live = _live_now(self.services, self.instance_id)
        self.answer = "abort" if live.get("abort") else "force" if live.get("force") \
            else None
        return self.answer


def _follow(services: Any, ctx: JobContext, inst: Instance, live: dict[str, Any],
            p: dict[str, Any], incoming: migration.Incoming,
            sync: dict[str, str] | None = None, start: bool = True) -> dict[str, Any]:
    """Mirror (block), migrate (``start``; else follow the migration QEMU is already
    running), then the switch-over -- or the rollback."""
    drv, conf = services.virt, services.conf.compute
    control = _Control(services, ctx, inst.id, float(conf.live_migration_completion_timeout))
    try:
        if start:
            if incoming.block:
                migration.mirror(drv, inst.id, incoming, sync=sync, control=control)
            bw = int(conf.live_migration_bandwidth) << 20 or migration.DEFAULT_BANDWIDTH
            info = migration.migrate(drv, inst.id, incoming, bandwidth=bw,
                                     downtime_ms=int(conf.live_migration_downtime),
                                     control=control)
        else:
            info = _wait_running(drv, inst.id, incoming, control)
    except (Interrupted, LeaseLost):
        raise  # the worker stops: QEMU goes on, the job's rerun follows it
    except Exception as exc:  # noqa: BLE001 - rolled back: the guest stays here
        aborted = isinstance(exc, migration.MigrationCancelled) and control.answer == "abort"
        LOG.warning("instance %s: live migration failed%s: %s", inst.id,
                    " (aborted)" if aborted else "", exc)
        return _rollback(services, ctx, inst, _live_now(services, inst.id), p,
                         _Aborted() if aborted else exc, incoming)
    return _switch_over(services, ctx, inst, _live_now(services, inst.id), p, info, incoming)


def _wait_running(drv: Any, uuid: str, incoming: migration.Incoming,
                  control: Any) -> dict[str, Any]:
    """A migration QEMU kept running while no job watched it: followed to its end."""
    while True:
        info: dict[str, Any] = drv.qmp(uuid, "query-migrate")
        st = info.get("status")
        if st == "pre-switchover":
            with drv._lock(uuid), drv.monitor(uuid) as mon:
                migration._complete_mirrors(mon, incoming, 60.0)
                mon.execute("migrate-continue", {"state": "pre-switchover"})
            continue
        if st == "completed":
            return info
        if st in ("failed", "cancelled", None):
            raise VirtError(f"migration of {uuid}: {st}")
        if control(info) == "abort":
            raise migration.MigrationCancelled(f"migration of {uuid} aborted")
        time.sleep(0.05)


def _switch_over(services: Any, ctx: JobContext, inst: Instance, live: dict[str, Any],
                 p: dict[str, Any], info: dict[str, Any],
                 incoming: migration.Incoming | None = None) -> dict[str, Any]:
    """The guest runs on the destination: one transaction moves the instance there and
    completes the record; then the source's QEMU (and block-migrated disk) go."""
    mid, dest, rid = int(p["migration_id"]), p["dest"], _ctx_request_id(p)
    was = live.get("vm_state") or states.ACTIVE
    if incoming is None and live.get("incoming"):
        incoming = _incoming(live["incoming"])
    if incoming is not None and incoming.block:
        # the destination is held until its disks are complete: mirrors first
        migration.complete_mirrors(services.virt, inst.id, incoming)
    resume = was == states.ACTIVE and bool(
        info.get("forced") or live.get("force") or (incoming and incoming.block))
    meta = {k: v for k, v in (inst.system_metadata or {}).items() if k != KEY}
    power = PowerState.PAUSED if was == states.PAUSED else PowerState.RUNNING
    with services.db.session() as session:
        done = session.execute(update(Instance).where(
            Instance.id == inst.id, Instance.task_state == states.MIGRATING,
            Instance.host == inst.host).values(
            host=dest, task_state=None, vm_state=was, power_state=int(power),
            system_metadata=meta, updated_at=now())).rowcount
        if done:
            migrations.set_status(session, mid, "completed")
            _bind_ports(session, inst.id, dest)
            enqueue(session, "compute.post_live_migration_at_destination", {
                "instance_id": inst.id, "migration_id": mid, "block": p["block"],
                "resume": resume, "source": inst.host, "ctx": p["ctx"],
                "incoming": live.get("incoming")}, target=f"host:{dest}", max_attempts=10)
            events.emit(session, "compute", "compute.instance.live_migration._post.end",
                        inst.id, inst.project_id, host=dest)
    if not done:  # deleted meanwhile: the delete (on this host) never sees the copy
        LOG.warning("instance %s: left the migration before its switch-over", inst.id)
        with services.db.session() as session:
            enqueue(session, "compute.rollback_live_migration_at_destination", {
                "instance_id": inst.id, "migration_id": mid, "block": p["block"],
                "ctx": p["ctx"], "host_bound": True}, target=f"host:{dest}",
                max_attempts=10)
            migrations.set_status(session, mid, "error")
    migration.complete_source(services.virt, inst.id, incoming)
    if p["block"] and inst.image_ref and done:
        _remove_source_root(services, inst.id)
    ctx.checkpoint(figures={**(ctx.progress.get("figures") or {}),
                            "memory_remaining_bytes": 0, "disk_remaining_bytes": 0})
    _event(services, inst.id, rid, "compute_live_migration", "Success")
    return {"migrated": inst.id, "dest": dest, "downtime_ms": info.get("downtime"),
            "total_ms": info.get("total-time")}


def _bind_ports(session: Any, instance_id: str, host: str) -> None:
    """The instance's Neutron ports are bound to its new host (``binding:host_id``), in
    the switch-over's transaction.  The data plane of each host (its bridges, taps,
    tunnels between hosts) is the network service's: a guest on ports keeps its NICs
    only where that host's data plane serves the port's network."""
    from strato.network.models import Port

    session.execute(update(Port).where(Port.device_id == instance_id,
                                       Port.binding_host_id != "").values(
        binding_host_id=host))


def _remove_source_root(services: Any, instance_id: str) -> None:
    """The source's disk after a block migration (the destination has its copy)."""
    for i in range(50):
        try:
            disks.remove_root(services, instance_id)
            return
        except errors.ImageBusy:  # the source QEMU's last close
            time.sleep(0.1 * (i + 1))


def _rollback(services: Any, ctx: JobContext, inst: Instance, live: dict[str, Any],
              p: dict[str, Any], exc: BaseException,
              incoming: migration.Incoming | None = None) -> dict[str, Any]:
    """Before the switch-over: the guest keeps running here; the destination cleans."""
    mid, rid = int(p["migration_id"]), _ctx_request_id(p)
    aborted = isinstance(exc, _Aborted)
    if incoming is None and live.get("incoming"):
        incoming = _incoming(live["incoming"])
    drv = services.virt
    if migration.source_status(drv, inst.id) == ("postmigrate", "completed"):
        # past the switch-over: the guest runs over there; never resume this copy.
        # The job's retry commits the switch-over.
        raise VirtError(f"the switch-over of {inst.id} failed after the migration: {exc}")
    migration.abort_source(drv, inst.id, incoming)
    was = live.get("vm_state") or states.ACTIVE
    if was == states.ACTIVE:
        migration.resume_source(drv, inst.id)
    power = drv.power_state(inst.id)
    meta = {k: v for k, v in (inst.system_metadata or {}).items() if k != KEY}
    fault = None if aborted else _fault(exc)
    with services.db.session() as session:
        values: dict[str, Any] = {"task_state": None, "system_metadata": meta,
                                  "power_state": int(power), "updated_at": now()}
        if power in (PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NOSTATE):
            values["vm_state"] = states.ERROR
        session.execute(update(Instance).where(
            Instance.id == inst.id, Instance.task_state == states.MIGRATING)
            .values(**values))
        migrations.set_status(session, mid, "cancelled" if aborted else "error")
        enqueue(session, "compute.rollback_live_migration_at_destination", {
            "instance_id": inst.id, "migration_id": mid, "block": p["block"],
            "ctx": p["ctx"], "host_bound": True}, target=f"host:{p['dest']}",
            max_attempts=10)
        events.emit(session, "compute", "compute.instance.live_migration._rollback.end",
                    inst.id, inst.project_id)
    if aborted:
        _event(services, inst.id, rid, "compute_live_migration", "Error",
               details="The live migration was aborted.")
    else:
        assert fault is not None
        _event(services, inst.id, rid, "compute_live_migration", "Error",
               fault["details"], fault["message"])
    return {"cancelled" if aborted else "error": str(exc) or "aborted"}


def _lost(services: Any, ctx: JobContext, inst: Instance, live: dict[str, Any],
          p: dict[str, Any]) -> dict[str, Any]:
    """No QEMU here any more (the source host died mid-flow): the destination says
    whether the guest runs there."""
    with services.db.session() as session:
        enqueue(session, "compute.live_migration_resolve", {
            "instance_id": inst.id, "migration_id": p["migration_id"],
            "source": inst.host, "block": p["block"], "ctx": p["ctx"],
            "host_bound": True}, target=f"host:{p['dest']}", max_attempts=5)
    return {"resolving": inst.id}


# ---------------------------------------------------------------- the destination
def _dest_spec(services: Any, inst: Instance, source: dict[str, Any],
               block: bool) -> GuestSpec:
    """The source's spec for this host: this host's instances dir in every path (the
    kernel cache, the config drive, the metadata socket), the same disks; a block
    migration's root disk is the new one."""
    text = source["spec"].replace(source["instances_path"], str(services.virt.state_dir))
    spec = GuestSpec.from_json(text)
    if inst.kernel_id:
        disks.cached_image_file(services, inst.kernel_id)
        if inst.ramdisk_id:
            disks.cached_image_file(services, inst.ramdisk_id)
    if any(c.device_id == configdrive.DEVICE_ID for c in spec.cdroms):
        # rewritten here from the instance's record (no admin password: it went to the
        # first drive only)
        services.virt.paths(inst.id).dir.mkdir(parents=True, exist_ok=True)
        configdrive.write(services, inst.id, None)
    if block and inst.image_ref:
        root = f"{services.stores.vms_pool}/{disks.root_name(inst.id)}"
        new = f"{services.stores.vms_pool}/{migrating_name(inst.id)}"
        spec = spec.with_disks([_with_source(d, new) if d.source == root else d
                                for d in spec.disks])
    return spec


def _with_source(d: DiskSpec, source: str) -> DiskSpec:
    return dataclasses.replace(d, source=source)


def _new_root(services: Any, inst: Instance, root: dict[str, Any]) -> str:
    """The block migration's destination disk: a copy-on-write child of the source's
    parent when there is one (only the top layer is then mirrored: ``sync=top``), else
    an empty image; the source's size.  Returns the mirror's sync mode."""
    engine, pool = services.stores.vms, services.stores.vms_pool
    name = migrating_name(inst.id)
    if engine.exists(pool, name):  # a retried prepare
        engine.remove(pool, name)
    top = False
    if root.get("parent") and not root.get("snaps"):
        disks.create_root(services, inst.id, inst.image_ref, 0, name=name)
        with engine.open(pool, name) as img:
            try:
                top = list(img.parent_info()) == list(root["parent"])
            except errors.ImageNotFound:
                top = False
        if not top:
            engine.remove(pool, name)
    if not top:
        engine.create(pool, name, int(root["size"]))
    with engine.open(pool, name) as img:
        if img.size() < int(root["size"]):
            img.resize(int(root["size"]))
    return "top" if top else "full"


def _remove_new_root(services: Any, instance_id: str) -> None:
    engine, pool = services.stores.vms, services.stores.vms_pool
    name = migrating_name(instance_id)
    for i in range(50):
        try:
            if engine.exists(pool, name):
                disks.remove_root(services, instance_id, name=name)
            return
        except errors.ImageBusy:
            time.sleep(0.1 * (i + 1))


@handler("compute.pre_live_migration")
def pre_live_migration_job(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rid = p["instance_id"], _ctx_request_id(p)
    drv = services.virt
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.MIGRATING \
                or _live(inst).get("migration_id") != int(p["migration_id"]):
            raise PermanentError("the instance is no longer migrating")
        _event(services, instance_id, rid, "compute_pre_live_migration")
        try:
            if instance_id in drv.list_instances() or drv.paths(instance_id).dir.exists():
                drv.destroy(instance_id)  # a retried prepare's leftovers
            block = bool(p["block"]) and bool(inst.image_ref)
            sync: dict[str, str] = {}
            spec = _dest_spec(services, inst, p["source"], block)
            if block:
                mode = _new_root(services, inst, p["source"]["root"])
                sync = {d.device_id: mode for d in spec.disks
                        if d.source and d.source.endswith(migrating_name(instance_id))}
            ports.replug(services, spec.nics)
            inc = migration.prepare_incoming(
                drv, spec, host=services.conf.compute.live_migration_inbound_addr,
                block=tuple(sync) if block else False, slots=p["source"]["slots"],
                memory=p["source"].get("memory"))
        except Exception as exc:
            LOG.warning("instance %s: pre_live_migration failed: %s", instance_id, exc)
            with contextlib.suppress(Exception):
                drv.destroy(instance_id)
            _remove_new_root(services, instance_id)
            fault = _fault(exc)
            _event(services, instance_id, rid, "compute_pre_live_migration", "Error",
                   fault["details"], fault["message"])
            raise PermanentError(str(exc)) from exc
        _event(services, instance_id, rid, "compute_pre_live_migration", "Success")
        return {**_incoming_dict(inc), "sync": sync}


@handler("compute.post_live_migration_at_destination")
def post_live_migration_job(ctx: JobContext) -> dict[str, Any]:
    """The guest runs here: NBD exports dropped, a force-complete's pause undone; a
    block-migrated disk takes the instance's root disk name once the source's is gone."""
    services, p = ctx.services, ctx.payload
    instance_id, rid = p["instance_id"], _ctx_request_id(p)
    drv = services.virt
    with instance_lock(instance_id):
        _event(services, instance_id, rid, "compute_post_live_migration_at_destination")
        inc = _incoming(p["incoming"]) if p.get("incoming") else None
        if drv.pid(instance_id) is not None:
            migration.finish_dest(drv, instance_id, inc, resume=bool(p.get("resume")))
        inst, _ = _load(services, instance_id)
        if p["block"] and inst is not None and inst.image_ref and not inst.deleted:
            engine, pool = services.stores.vms, services.stores.vms_pool
            name = migrating_name(instance_id)
            if engine.exists(pool, name):
                if engine.exists(pool, disks.root_name(instance_id)):
                    raise VirtError("the source's disk is not removed yet")  # retried
                engine.rename(pool, name, disks.root_name(instance_id))
            _spec_source(drv, instance_id, f"{pool}/{name}",
                         f"{pool}/{disks.root_name(instance_id)}")
        if drv.pid(instance_id) is not None:
            p_state = drv.power_state(instance_id)
            with services.db.session() as session:
                session.execute(update(Instance).where(
                    Instance.id == instance_id, Instance.host == services.conf.DEFAULT.host,
                    Instance.task_state.is_(None)).values(power_state=int(p_state)))
        _event(services, instance_id, rid, "compute_post_live_migration_at_destination",
               "Success")
        return {"finished": instance_id}


def _spec_source(drv: Any, instance_id: str, old: str, new: str) -> None:
    """The stored spec names the renamed disk (later starts resolve it by name)."""
    path = drv.paths(instance_id).spec
    try:
        spec = GuestSpec.from_json(path.read_text())
    except FileNotFoundError:
        return
    if any(d.source == old for d in spec.disks):
        spec = spec.with_disks([_with_source(d, new) if d.source == old else d
                                for d in spec.disks])
        drv._save_spec(spec)


@handler("compute.rollback_live_migration_at_destination")
def rollback_at_destination_job(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    instance_id, rid = p["instance_id"], _ctx_request_id(p)
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is not None and inst.host == services.conf.DEFAULT.host \
                and not inst.deleted:
            return {"skipped": "the guest lives here"}
        _event(services, instance_id, rid, "compute_rollback_live_migration_at_destination")
        migration.abort_dest(services.virt, instance_id)
        if p.get("block"):
            _remove_new_root(services, instance_id)
        _event(services, instance_id, rid, "compute_rollback_live_migration_at_destination",
               "Success")
        return {"rolled_back": instance_id}


@handler("compute.live_migration_resolve")
def resolve_job(ctx: JobContext) -> dict[str, Any]:
    """On the destination, for a source that lost its QEMU mid-flow: a guest running
    here after a completed migration is the instance (it moves here); anything else
    here is removed and the instance, with no guest anywhere, is in ERROR."""
    services, p = ctx.services, ctx.payload
    instance_id, mid = p["instance_id"], int(p["migration_id"])
    drv = services.virt
    here = services.conf.DEFAULT.host
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state != states.MIGRATING:
            return {"skipped": "not migrating"}
        st = None
        if drv.pid(instance_id) is not None:
            with contextlib.suppress(Exception):
                st = drv.qmp(instance_id, "query-status")["status"]
        meta = {k: v for k, v in (inst.system_metadata or {}).items() if k != KEY}
        with services.db.session() as session:
            if st in ("running", "paused"):
                session.execute(update(Instance).where(
                    Instance.id == instance_id, Instance.task_state == states.MIGRATING)
                    .values(host=here, task_state=None, system_metadata=meta,
                            vm_state=states.ACTIVE if st == "running" else states.PAUSED,
                            power_state=int(drv.power_state(instance_id)),
                            updated_at=now()))
                migrations.set_status(session, mid, "completed")
                moved = True
            else:
                session.execute(update(Instance).where(
                    Instance.id == instance_id, Instance.task_state == states.MIGRATING)
                    .values(task_state=None, vm_state=states.ERROR, system_metadata=meta,
                            power_state=int(PowerState.NOSTATE), updated_at=now()))
                migrations.set_status(session, mid, "error")
                moved = False
        if not moved:
            migration.abort_dest(drv, instance_id)
            if p.get("block"):
                _remove_new_root(services, instance_id)
        elif p.get("block"):
            engine, pool = services.stores.vms, services.stores.vms_pool
            with contextlib.suppress(errors.ImageNotFound, errors.ImageBusy):
                disks.remove_root(services, instance_id)
            if engine.exists(pool, migrating_name(instance_id)):
                with contextlib.suppress(errors.ImageExists):
                    engine.rename(pool, migrating_name(instance_id),
                                  disks.root_name(instance_id))
                    _spec_source(drv, instance_id,
                                 f"{pool}/{migrating_name(instance_id)}",
                                 f"{pool}/{disks.root_name(instance_id)}")
        return {"moved" if moved else "lost": instance_id}


# ---------------------------------------------------------------- agent start-up
def reconcile(services: Any, inst: Instance) -> bool:
    """A ``migrating`` instance of this (source) host with no job behind it: the job
    again, in resolve mode (it never starts a new migration: it completes the
    switch-over, follows a running migration, or rolls back); True when handled."""
    if inst.task_state != states.MIGRATING:
        return False
    live = _live(inst)
    if not live.get("migration_id"):
        with services.db.session() as session:
            session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.task_state == states.MIGRATING)
                .values(task_state=None, updated_at=now()))
        return True
    with services.db.session() as session:
        enqueue(session, "compute.live_migration", {
            "instance_id": inst.id, "migration_id": live["migration_id"],
            "dest": live["dest"], "block": bool(live.get("block")), "resolve": True,
            "ctx": _admin_ctx(inst)}, target=f"host:{inst.host}", max_attempts=3)
    return True


def in_flight_to(services: Any, host: str) -> list[tuple[str, int]]:
    """(instance, migration) of live migrations in progress whose destination is
    ``host`` (diagnostics: what a restarted destination agent may find half made)."""
    with services.db.session(readonly=True) as session:
        rows = session.execute(select(Migration.instance_uuid, Migration.id).where(
            Migration.dest_compute == host, Migration.migration_type == "live-migration",
            Migration.status.in_(("queued", "preparing", "running")))).all()
    return [(str(a), int(b)) for a, b in rows]
