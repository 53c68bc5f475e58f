"""Live migration, the API side: ``os-migrateLive`` and a server's migrations in
progress (``/servers/{id}/migrations``: list, show with memory and disk figures,
abort (2.24), force-complete (2.22)).

``os-migrateLive`` checks, places the server with the scheduler and records the claim in
one transaction (a ``live-migration`` migration record with ``dest_compute``, task
``migrating``, the instance action) and enqueues the job on the SOURCE host
(``strato.compute.live_migration_manager``).  Abort and force-complete are requests the
source's job reads between two polls of QEMU's migration: a flag in the instance's
``system_metadata["live_migration"]`` (the job owns the flow; nothing else acts on
the guest meanwhile).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from strato.compute import migrations, states
from strato.compute.api import ComputeAPI, P, ctx_payload, now, state_message
from strato.compute.migration_models import Migration
from strato.compute.models import ComputeNode, Instance
from strato.compute.views import Version, iso
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.jobs.models import Job
from strato.jobs.queue import enqueue

ACTIONS = ("os-migrateLive",)
RULE = P + "os-migrate-server:migrate_live"
SHOW_RULE = P + "servers:migrations:show"
INDEX_RULE = P + "servers:migrations:index"
DELETE_RULE = P + "servers:migrations:delete"
FORCE_RULE = P + "servers:migrations:force_complete"
#: the system_metadata key of a live migration in flight
KEY = "live_migration"
#: Nova's statuses of a live migration still in progress
IN_PROGRESS = ("queued", "preparing", "running")
JOB = "compute.live_migration"

_TRUE = {True, "true", "True", "TRUE", "1", "yes", "on", "y", "t"}
_FALSE = {False, "false", "False", "FALSE", "0", "no", "off", "n", "f"}


def _bool(name: str, value: Any, auto: bool = False) -> bool | str:
    """Nova's ``parameter_types.boolean`` (and ``"auto"`` for block_migration 2.25)."""
    if auto and value == "auto":
        return "auto"
    if value in _TRUE and not isinstance(value, float):
        return True
    if value in _FALSE and not isinstance(value, float):
        return False
    raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value!r}. "
                     f"{value!r} is not valid under any of the given schemas")


def parse_body(args: Any, version: Version) -> tuple[str | None, bool | str, bool]:
    """(host, block_migration, force) from Nova's body for ``version``."""
    if not isinstance(args, dict):
        raise BadRequest(f"Invalid input for field/attribute os-migrateLive. Value: "
                         f"{args!r}. {args!r} is not of type 'object'")
    allowed = {"host", "block_migration"}
    required = ["block_migration", "host"]
    if version < (2, 25):
        allowed.add("disk_over_commit")
        required.append("disk_over_commit")
    if (2, 30) <= version < (2, 68):
        allowed.add("force")
    extra = sorted(set(args) - allowed)
    if extra:
        raise BadRequest("Additional properties are not allowed ("
                         f"{', '.join(repr(e) for e in extra)} "
                         f"{'was' if len(extra) == 1 else 'were'} unexpected)")
    for key in required:
        if key not in args:
            raise BadRequest(f"Invalid input for field/attribute os-migrateLive. Value: "
                             f"{args!r}. '{key}' is a required property")
    host = args["host"]
    if host is not None and (not isinstance(host, str) or not host.strip()
                             or len(host) > 255):
        raise BadRequest(f"Invalid input for field/attribute host. Value: {host!r}. "
                         f"{host!r} is not valid under any of the given schemas")
    block = _bool("block_migration", args["block_migration"], auto=version >= (2, 25))
    if "disk_over_commit" in args:
        _bool("disk_over_commit", args["disk_over_commit"])
    force = bool(_bool("force", args["force"])) if "force" in args else False
    return host, block, force


def shared_storage(api: ComputeAPI, inst: Instance) -> bool:
    """The instance's disks are seen by every host: on Ceph (``rbd``), or none at all
    (booted from a volume)."""
    return not inst.image_ref or api.conf.storage.vms_engine == "rbd"


class LiveMigrations:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db

    # ------------------------------------------------------------ os-migrateLive
    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> None:
        from strato.compute.hosts import host_is_up
        from strato.compute.scheduler import NoValidHost, select_destination, spec_for_instance

        host, block, force = parse_body(args, version)
        conf = self.api.conf
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, RULE)
            self.api._check_lock(ctx, inst)
            if inst.vm_state not in (states.ACTIVE, states.PAUSED) \
                    or inst.task_state is not None:
                raise Conflict(state_message("os-migrateLive", inst))
            if host is not None:
                if session.get(ComputeNode, host) is None:
                    raise BadRequest(f"Compute host {host} could not be found.")
                if host == inst.host:
                    raise BadRequest(f"Unable to migrate instance ({inst.id}) to current "
                                     f"host ({inst.host}).")
                if not host_is_up(session, conf, host):
                    raise BadRequest(f"Compute service of {host} is unavailable at this "
                                     "time.")
            shared = shared_storage(self.api, inst)
            use_block = (not shared) if block == "auto" else bool(block)
            where = host or "the destination"
            if use_block and shared:
                raise BadRequest(f"Migration pre-check error: {where} is not on local "
                                 "storage: Block migration can not be used with shared "
                                 "storage.")
            if not use_block and not shared:
                raise BadRequest(f"Migration pre-check error: {where} is not on shared "
                                 "storage: Shared storage live-migration requires either "
                                 "shared storage or boot-from-volume with no local disks.")
            try:
                dest = select_destination(session, conf, spec_for_instance(
                    session, inst, requested_host=host, force=force))
            except NoValidHost as exc:
                raise BadRequest(str(exc) or "No valid host was found.") from None
            if dest == inst.host:  # a scheduler that ignored ignore_hosts
                raise BadRequest(f"Unable to migrate instance ({inst.id}) to current host "
                                 f"({inst.host}).")
            mid = migrations.record(session, ctx, inst.id, inst.host, inst.flavor_id,
                                    inst.flavor_id, dest=dest,
                                    migration_type="live-migration", status="queued")
            job = enqueue(session, JOB, {
                "instance_id": inst.id, "migration_id": mid, "dest": dest,
                "block": use_block, "ctx": ctx_payload(ctx)},
                target=f"host:{inst.host}", max_attempts=3)
            meta = {k: v for k, v in (inst.system_metadata or {}).items() if k != KEY}
            meta[KEY] = {"migration_id": mid, "job_id": job.id, "source": inst.host,
                         "dest": dest, "block": use_block, "vm_state": inst.vm_state}
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.vm_state == inst.vm_state,
                Instance.task_state.is_(None)).values(
                task_state=states.MIGRATING, system_metadata=meta, updated_at=now())
            ).rowcount
            if not done:
                raise Conflict(state_message("os-migrateLive", inst))
            self.api.record_action(session, ctx, inst, "live-migration")

    # ------------------------------------------------------------ server migrations
    def _row(self, session: Any, ctx: RequestContext, server_id: str, rule: str,
             migration_id: str) -> tuple[Instance, Migration]:
        inst = self.api.get_row(session, ctx, server_id, rule)
        try:
            mid = int(migration_id)
        except ValueError:
            raise NotFound(f"Migration {migration_id} not found for instance "
                           f"{server_id}") from None
        m = session.get(Migration, mid)
        if m is None or m.instance_uuid != inst.id or m.deleted:
            raise NotFound(f"Migration {migration_id} not found for instance {inst.id}")
        return inst, m

    def list(self, ctx: RequestContext, server_id: str, version: Version) -> dict[str, Any]:
        """``GET /servers/{id}/migrations`` (2.23): the live migrations in progress."""
        with self.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id, INDEX_RULE)
            rows = list(session.scalars(select(Migration).where(
                Migration.instance_uuid == inst.id, Migration.deleted.is_(False),
                Migration.migration_type == "live-migration",
                Migration.status.in_(IN_PROGRESS)).order_by(Migration.id.desc())))
            return {"migrations": [view(m, _figures(session, inst, m), version)
                                   for m in rows]}

    def show(self, ctx: RequestContext, server_id: str, migration_id: str,
             version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            try:
                inst, m = self._row(session, ctx, server_id, SHOW_RULE, migration_id)
            except NotFound:
                raise NotFound(f"In-progress live migration {migration_id} is not found "
                               f"for server {server_id}.") from None
            if m.migration_type != "live-migration" or m.status not in IN_PROGRESS:
                raise NotFound(f"In-progress live migration {migration_id} is not found "
                               f"for server {server_id}.")
            return {"migration": view(m, _figures(session, inst, m), version)}

    def abort(self, ctx: RequestContext, server_id: str, migration_id: str,
              version: Version) -> None:
        """``DELETE /servers/{id}/migrations/{mid}`` (2.24; queued/preparing too from
        2.65): the source's job cancels the migration; the guest stays on the source."""
        allowed = IN_PROGRESS if version >= (2, 65) else ("running",)
        self._request(ctx, server_id, migration_id, DELETE_RULE, "abort live migration",
                      allowed, "abort")

    def force_complete(self, ctx: RequestContext, server_id: str, migration_id: str,
                       args: Any) -> None:
        """``POST /servers/{id}/migrations/{mid}/action {"force_complete": null}``
        (2.22): the guest is paused so the migration converges (no post-copy)."""
        if not isinstance(args, dict) or set(args) != {"force_complete"} \
                or args["force_complete"] is not None:
            raise BadRequest("Invalid input for field/attribute force_complete: the body "
                             "must be {\"force_complete\": null}.")
        self._request(ctx, server_id, migration_id, FORCE_RULE, "force_complete",
                      ("running",), "force")

    def _request(self, ctx: RequestContext, server_id: str, migration_id: str, rule: str,
                 method: str, allowed: tuple[str, ...], flag: str) -> None:
        with self.db.session() as session:
            inst, m = self._row(session, ctx, server_id, rule, migration_id)
            self.api._check_lock(ctx, inst)
            if m.migration_type != "live-migration":
                raise BadRequest(f"Migration {m.id} for instance {inst.id} is not a live "
                                 "migration.")
            if inst.task_state != states.MIGRATING:
                raise Conflict(f"Instance {inst.id} is in an invalid state for "
                               f"'{method}'")
            if m.status not in allowed:
                raise Conflict(f"Migration {m.id} state of instance {inst.id} is "
                               f"{m.status}. Cannot {method} while the migration is in "
                               "this state.")
            row = session.scalars(select(Instance).where(Instance.id == inst.id)
                                  .with_for_update()).one()
            meta = dict(row.system_metadata or {})
            live = dict(meta.get(KEY) or {})
            if live.get("migration_id") != m.id:
                raise Conflict(f"Migration {m.id} state of instance {inst.id} is "
                               f"{m.status}. Cannot {method} while the migration is in "
                               "this state.")
            live[flag] = True
            meta[KEY] = live
            session.execute(update(Instance).where(Instance.id == inst.id).values(
                system_metadata=meta))
            self.api.record_action(session, ctx, inst, "live_migration_abort"
                                   if flag == "abort" else "live_migration_force_complete")


def _figures(session: Any, inst: Instance, m: Migration) -> dict[str, int]:
    """The memory and disk figures the source's job saved as its progress."""
    live = (inst.system_metadata or {}).get(KEY) or {}
    if live.get("migration_id") != m.id or not live.get("job_id"):
        return {}
    job = session.get(Job, live["job_id"])
    return dict((job.progress or {}).get("figures") or {}) if job is not None else {}


def view(m: Migration, figures: dict[str, int], version: Version) -> dict[str, Any]:
    """Nova's server migration (``GET /servers/{id}/migrations[/{mid}]``)."""
    body: dict[str, Any] = {
        "id": m.id, "server_uuid": m.instance_uuid, "status": m.status,
        "source_compute": m.source_compute, "source_node": m.source_node,
        "dest_compute": m.dest_compute, "dest_node": m.dest_node, "dest_host": m.dest_host,
        "created_at": iso(m.created_at), "updated_at": iso(m.updated_at)}
    for key in ("memory_total_bytes", "memory_processed_bytes", "memory_remaining_bytes",
                "disk_total_bytes", "disk_processed_bytes", "disk_remaining_bytes"):
        body[key] = int(figures.get(key, 0))
    if version >= (2, 59):
        body["uuid"] = m.uuid
    if version >= (2, 80):
        body["user_id"], body["project_id"] = m.user_id, m.project_id
    return body
