"""Nova's ``evacuate`` (admin): a server whose host is down is rebuilt on another host
on the SAME disks (the block store is shared: RBD images, or the local engine's files
on one machine), with its volumes and its config drive; and the returning host's
agent lets go of the guests evacuated from it (Nova's ``_destroy_evacuated_instances``).

The API refuses while the server's host is up (Nova's 400 "Compute service of <host>
is still in use."), schedules the destination and records, in one transaction, an
``evacuation`` migration (``accepted``; its ``dest_compute`` is the claim), task state
``rebuilding`` and the ``compute.evacuate`` job on the destination.  The job walks
Nova's rebuild task states: ``rebuilding`` (the server's host flips to this host, the
migration ``pre-migrating``), ``rebuild_block_device_mapping`` (volumes reconnected
here at spawn), ``rebuild_spawning`` (the root disk kept as it is — never recreated
from the image while it exists —, the config drive written again with the new admin
password, the guest started; a STOPPED server stays stopped) → migration ``done``.  A
failure leaves the server in ERROR on the destination with a fault (migration
``failed``): a rebuild or delete goes there.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import configdrive, disks, guestinfo, migrations, routing, states
from strato.compute.api import ComputeAPI, P, ctx_from, ctx_payload, now, state_message
from strato.compute.manager import (
    _event,
    _fault,
    _load,
    _set,
    _spec,
    forget_admin_pass,
    instance_lock,
)
from strato.compute.migration_models import Migration
from strato.compute.models import BlockDevice, ComputeNode, Instance
from strato.compute.reads_models import ServiceRecord
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.validation import Bool, Obj, Str, validate

LOG = logging.getLogger(__name__)

ACTIONS = ("evacuate",)
RULE = P + "os-evacuate"
#: Nova's ``@check_instance_state(vm_state=[ACTIVE, STOPPED, ERROR])``
ALLOWED = (states.ACTIVE, states.STOPPED, states.ERROR)
TASKS = (states.REBUILDING, states.REBUILD_BLOCK_DEVICE_MAPPING, states.REBUILD_SPAWNING)
KEYS = ("evacuate_migration_id", "evacuate_source")
EVENT = "compute_rebuild_instance"
#: evacuation records the returning source host still has to act on (Nova's filter)
PENDING_ON_SOURCE = ("accepted", "pre-migrating", "done")
_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def body_schema(version: Version) -> Obj:
    """Nova's evacuate schemas: 2.1 (``onSharedStorage`` required), 2.14 (gone), 2.29
    (``force``), 2.68 (``force`` gone again)."""
    fields: dict[str, Any] = {"host": Str(255, min=1), "adminPass": Str(255)}
    required: tuple[str, ...] = ()
    if version < (2, 14):
        fields["onSharedStorage"] = Bool(strings=True)
        required = ("onSharedStorage",)
    if (2, 29) <= version < (2, 68):
        fields["force"] = Bool(strings=True)
    return Obj(fields, required=required, extra=None)


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}.")


class Evacuate:
    """``POST /servers/{id}/action {"evacuate": {...}}``."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> dict[str, Any] | None:
        """The response body (``adminPass`` before 2.14), or None (200, no body)."""
        ref = validate(body_schema(version), args)
        host = ref.get("host")
        force = _bool(ref.get("force", False), "force")
        shared = _bool(ref["onSharedStorage"], "onSharedStorage") \
            if version < (2, 14) else None
        if force and not host:
            raise BadRequest("Can't force to a non-provided destination")
        if shared is None:
            password = ref.get("adminPass") or guestinfo.generate_password()
        elif "adminPass" in ref:
            if shared:
                raise BadRequest("admin password can't be changed on existing disk")
            password = ref["adminPass"]
        else:
            password = None if shared else guestinfo.generate_password()
        api = self.api
        with self.db.session() as session:
            inst = api.get_row(session, ctx, server_id, RULE)
            if host is not None and not self._is_compute_host(session, host):
                raise NotFound(f"Compute host {host} not found.")
            if inst.host == host:
                raise BadRequest("The target host can't be the same one.")
            if inst.vm_state not in ALLOWED or inst.task_state is not None:
                raise Conflict(state_message("evacuate", inst))
            if not inst.host:
                raise Conflict(f"Cannot 'evacuate' instance {inst.id}: it was never "
                               "scheduled to a host.")
            from strato.compute.hosts import host_is_up

            if host_is_up(session, api.conf, inst.host):
                raise BadRequest(f"Compute service of {inst.host} is still in use.")
            from strato.compute.scheduler import (
                NoValidHost,
                select_destination,
                spec_for_instance,
            )

            try:
                dest = select_destination(session, api.conf, spec_for_instance(
                    session, inst, requested_host=host, force=force))
            except NoValidHost as exc:
                raise BadRequest(str(exc)) from None
            source = inst.host
            mid = migrations.record(session, ctx, inst.id, source, inst.flavor_id,
                                    inst.flavor_id, dest=dest, migration_type="evacuation",
                                    status="accepted")
            meta = {k: v for k, v in (inst.system_metadata or {}).items() if k not in KEYS}
            meta.update(evacuate_migration_id=mid, evacuate_source=source)
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                Instance.vm_state.in_(ALLOWED), Instance.task_state.is_(None)).values(
                task_state=states.REBUILDING, system_metadata=meta, updated_at=now(),
                fault=None)).rowcount
            if not done:
                raise Conflict(state_message("evacuate", inst))
            api.record_action(session, ctx, inst, "evacuate")
            events.emit(session, "compute", "compute.instance.evacuate", inst.id,
                        inst.project_id, source=source, dest=dest)
            payload: dict[str, Any] = {"instance_id": inst.id, "ctx": ctx_payload(ctx)}
            if password is not None:
                payload["admin_pass"] = password  # the config drive's; the job drops it
            enqueue(session, "compute.evacuate", payload, target=f"host:{dest}",
                    max_attempts=5)
        if version < (2, 14) and api.conf.api.enable_instance_password \
                and password is not None:
            return {"adminPass": password}
        return None

    @staticmethod
    def _is_compute_host(session: Any, host: str) -> bool:
        return session.get(ComputeNode, host) is not None or session.scalar(
            select(ServiceRecord.id).where(ServiceRecord.host == host,
                                           ServiceRecord.binary == "nova-compute")
            .limit(1)) is not None


# ---------------------------------------------------------------- the work
def _to(session: Any, instance_id: str, expect: str, **values: Any) -> None:
    if not _set(session, instance_id, expect, **values):
        raise RuntimeError(f"instance {instance_id} left {expect} during the evacuation")


@handler("compute.evacuate")
def evacuate_job(ctx: JobContext) -> dict[str, Any]:
    """Rebuild the server here (the destination) on its own disks."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    rctx = ctx_from(ctx.payload["ctx"])
    rid = rctx.request_id
    here = services.conf.DEFAULT.host
    with instance_lock(instance_id):
        inst, bdms = _load(services, instance_id)
        if inst is None or inst.deleted or inst.task_state not in TASKS:
            return {"skipped": "not evacuating"}
        meta = dict(inst.system_metadata or {})
        mid = meta.get("evacuate_migration_id")
        if mid is None:
            return {"skipped": "not an evacuation"}
        _event(services, instance_id, rid, EVENT)
        drv = services.virt
        try:
            task = inst.task_state
            if task == states.REBUILDING:
                with services.db.session() as session:  # from now on jobs come here
                    _to(session, instance_id, task, host=here,
                        task_state=states.REBUILD_BLOCK_DEVICE_MAPPING)
                    migrations.set_status(session, mid, "pre-migrating")
                    # what was queued for the dead host follows the guest
                    routing.retarget_pending(session, instance_id, here)
                inst.host, task = here, states.REBUILD_BLOCK_DEVICE_MAPPING
            if task == states.REBUILD_BLOCK_DEVICE_MAPPING:
                # volumes keep their attachments; _spec reconnects them to this host
                with services.db.session() as session:
                    _to(session, instance_id, task, task_state=states.REBUILD_SPAWNING)
                task = states.REBUILD_SPAWNING
            if inst.image_ref and not services.stores.vms.exists(
                    services.stores.vms_pool, disks.root_name(instance_id)):
                # no shared disk (lost with its host): a fresh one from the image
                disks.create_root(services, instance_id, inst.image_ref,
                                  inst.flavor["root_gb"])
            if configdrive.required(services, inst):
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
                drv.stop(instance_id, 0)
                after = states.STOPPED
            power = drv.power_state(instance_id)
        except Exception as exc:  # noqa: BLE001 - every failure ends in ERROR with a fault
            LOG.warning("instance %s: evacuation to %s failed: %s", instance_id, here, exc)
            forget_admin_pass(services, ctx)
            fault = _fault(exc)
            with services.db.session() as session:
                row = session.get(Instance, instance_id)
                if row is not None and row.task_state in TASKS:
                    _set(session, instance_id, row.task_state, vm_state=states.ERROR,
                         task_state=None, fault=fault,
                         power_state=int(drv.power_state(instance_id)),
                         system_metadata={k: v for k, v in meta.items() if k not in KEYS})
                    events.emit(session, "compute", "compute.instance.evacuate.error",
                                instance_id, row.project_id, error=fault["message"])
                migrations.set_status(session, mid, "failed")
            _event(services, instance_id, rid, EVENT, "Error", fault["details"],
                   fault["message"])
            return {"error": str(exc)}
        with services.db.session() as session:
            if not _set(session, instance_id, states.REBUILD_SPAWNING, vm_state=after,
                        task_state=None, power_state=int(power), launched_at=now(),
                        system_metadata={k: v for k, v in meta.items() if k not in KEYS}):
                return {"skipped": "state changed during the evacuation"}
            session.execute(update(BlockDevice).where(
                BlockDevice.instance_uuid == instance_id,
                BlockDevice.attachment_id.is_not(None)).values(status="attached"))
            migrations.set_status(session, mid, "done")
            events.emit(session, "compute", "compute.instance.evacuate.end", instance_id,
                        inst.project_id, host=here)
    _event(services, instance_id, rid, EVENT, "Success")
    return {"evacuated": instance_id, "host": here}


# ---------------------------------------------------------------- the source's return
def destroy_evacuated(services: Any, host: str) -> set[str]:
    """At the agent's start, before anything else touches the guests: every local
    guest of a server evacuated from ``host`` is destroyed (its QEMU killed, its
    directory removed — never its disks, which the server runs on elsewhere) and the
    evacuation marked ``completed``.  Returns those servers' ids (the agent leaves
    them alone: they are the destination's now)."""
    drv = services.virt
    local = set(drv.list_instances())
    with services.db.session(readonly=True) as session:
        rows = list(session.execute(select(
            Migration.id, Migration.instance_uuid, Migration.status).where(
            Migration.source_compute == host, Migration.migration_type == "evacuation",
            Migration.status.in_(PENDING_ON_SOURCE), Migration.deleted.is_(False))))
    done: set[str] = set()
    for mid, instance_id, status in rows:
        with instance_lock(instance_id):
            if instance_id in local:
                LOG.info("instance %s was evacuated from %s: destroying its local guest "
                         "(its disks stay)", instance_id, host)
                drv.destroy(instance_id)
            if status == "done":  # one still under way is the destination's to finish
                with services.db.session() as session:
                    migrations.set_status(session, mid, "completed")
        done.add(instance_id)
    return done


def destroy_strays(services: Any, host: str) -> set[str]:
    """At the agent's start, after :func:`destroy_evacuated`: local guests of deleted
    servers (Nova reaps those too), and of servers that moved away from this host for
    good (a migration from here ``confirmed``/``completed``/``done`` and the server
    elsewhere, in no task and not in VERIFY_RESIZE from here), are destroyed — never
    their disks.  A renamed host or a server merely listed elsewhere keeps its guest:
    only the records' word that it left is taken.  Returns the ids destroyed."""
    drv = services.virt
    gone: set[str] = set()
    for instance_id in drv.list_instances():
        with services.db.session(readonly=True) as session:
            inst = session.get(Instance, instance_id)
            if inst is not None and not inst.deleted:
                left = inst.host != host and inst.task_state is None and not (
                    inst.vm_state == states.RESIZED
                    and (inst.system_metadata or {}).get("resize_source") == host)
                if not left or session.scalar(select(Migration.id).where(
                        Migration.instance_uuid == instance_id,
                        Migration.source_compute == host,
                        Migration.status.in_(("confirmed", "completed", "done")))
                        .limit(1)) is None:
                    continue
        with instance_lock(instance_id):
            LOG.info("instance %s is not %s's (%s): destroying its local guest (its disks "
                     "stay)", instance_id, host, "deleted" if inst is None or inst.deleted
                     else f"on {inst.host}")
            drv.destroy(instance_id)
        gone.add(instance_id)
    return gone
