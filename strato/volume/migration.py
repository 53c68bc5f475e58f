"""Volume migration between backends: ``os-migrate_volume`` and ``os-retype`` with
``migration_policy=on-demand`` (Cinder's generic host-assisted migration).

The volume keeps its id and its store name ``volume-<id>``; backends are pools of the
block store, so the data moves to the destination backend's pool under that name
(no ``name_id`` indirection is needed: ``os-vol-mig-status-attr:name_id`` stays null).

Steps of the ``volume.migrate`` job, each one safe to repeat after a crash:

1. ``migration_status`` ``starting`` → ``migrating``;
2. copy the head's data into ``volume-<id>.migrating`` in the destination pool, then
   rename it ``volume-<id>`` (so a whole image there means a whole copy);
3. ``completing``, then one transaction: ``host`` (and for a retype the type, its
   quota and the status) change and ``migration_status`` is ``success``;
4. the source image is removed (through the source driver: a clone releases its
   parent).  The job's payload says where the source was, so a crash here is finished
   by the retried job.

A failure before the swap removes the partial copy and leaves the volume where it was,
``migration_status`` ``error``; its data was never touched.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from strato import events
from strato.context import RequestContext
from strato.exceptions import BadRequest
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash
from strato.volume.api import MIGRATING, VolumeAPI, _flag, type_name
from strato.volume.driver import ParentNotReleased, _ChunkStream, volume_name
from strato.volume.models import Snapshot, Volume, VolumeType
from strato.volume.scheduler import BackendState, NoValidBackend, Request, choose

LOG = logging.getLogger(__name__)

ACTIONS = ("os-migrate_volume",)
# A migration in one of these holds the volume: no other change may start.
IN_PROGRESS = MIGRATING
TMP_SUFFIX = ".migrating"


def _type_deltas(type_name: str, size: int) -> dict[str, int]:
    """What a retype moves: the per-type counts only (the totals stay)."""
    return {f"volumes_{type_name}": 1, f"gigabytes_{type_name}": size}


def migrating(vol: Volume) -> bool:
    return vol.migration_status in IN_PROGRESS


class VolumeMigration:
    def __init__(self, api: VolumeAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    # ------------------------------------------------------------ requests
    def migrate_volume(self, ctx: RequestContext, volume_id: str, args: Any,
                       version: tuple[int, int]) -> None:
        """``os-migrate_volume`` (admin; Cinder's order: 400 body, 404, 403): ``host``
        (``host@backend[#pool]``) or, from 3.16, ``cluster``; ``force_host_copy``
        (every strato migration is a host copy) and ``lock_volume`` (the volume is
        ``maintenance`` meanwhile)."""
        if not isinstance(args, dict):
            raise BadRequest("os-migrate_volume needs a host.")
        host, cluster = args.get("host"), args.get("cluster") if version >= (3, 16) else None
        if host is not None and cluster is not None:
            raise BadRequest("Invalid input: give a host or a cluster, not both.")
        target = host if host is not None else cluster
        if not isinstance(target, str) or not target:
            raise BadRequest("os-migrate_volume needs a host"
                             + (" or a cluster." if version >= (3, 16) else "."))
        _flag(args.get("force_host_copy", False), "force_host_copy")
        lock = _flag(args.get("lock_volume", False), "lock_volume")
        with self.db.session() as session:
            vol = self.api.get_volume_row(session, ctx, volume_id)  # 404 before 403
            self.policy.enforce(ctx, "volume_extension:volume_admin_actions:migrate_volume",
                                {"project_id": vol.project_id})
            dest = self._backend_named(target)
            self._check(session, vol, dest)
            self.start(session, ctx, vol, dest, "maintenance" if lock else None)

    def _backend_named(self, target: str) -> str:
        """The backend ``host@backend[#pool]`` (or a bare backend name) names; 400 when
        there is none such."""
        hostpart, _, rest = target.partition("@")
        backend, _, pool = (rest or target).partition("#")
        if rest and hostpart != self.api.conf.DEFAULT.host:
            backend = ""
        found = self.api.backends.get(backend)
        if found is None or (pool and pool != found.pool):
            raise BadRequest(f"Invalid host: no volume backend {target!r} is enabled.")
        return backend

    def _check(self, session: Any, vol: Volume, dest: str) -> None:
        """Cinder's refusals, all 400: not available, migrating, placed on ``dest``
        already, with snapshots, attached."""
        if vol.host is None:
            raise BadRequest(f"Invalid volume: volume {vol.id} is not placed on a backend.")
        if migrating(vol):
            raise BadRequest(f"Invalid volume: volume {vol.id} is already being migrated.")
        if vol.status == "in-use" or vol.attach_status == "attached":
            raise BadRequest("Invalid volume: in-use volume migration is not supported.")
        if vol.status != "available":
            raise BadRequest(f"Invalid volume: volume status must be available "
                             f"(status {vol.status}).")
        if self.api.backend_of(vol.host) == dest:
            raise BadRequest("Invalid host: the destination host must be different than "
                             "the current host.")
        snaps = session.scalar(select(func.count()).select_from(Snapshot).where(
            Snapshot.volume_id == vol.id))
        if snaps:
            raise BadRequest(f"Invalid volume: volume {vol.id} must not have snapshots "
                             "to be migrated.")

    def retype_backend(self, session: Any, vol: Volume, new: VolumeType) -> str:
        """The backend a retype to ``new`` migrates to: the scheduler's choice among the
        others (the same filters and weighers as a create, in the volume's zone)."""
        conf = self.api.conf.volume
        allocated: dict[str, float] = {}
        for host, size in session.execute(select(Volume.host, Volume.size).where(
                Volume.host.is_not(None), Volume.status != "error")):
            name = self.api.backend_of(host)
            allocated[name] = allocated.get(name, 0) + size
        current = self.api.backend_of(vol.host or "")
        states = [BackendState(b, allocated.get(b.name, 0), conf.reserved_percentage,
                               conf.max_over_subscription_ratio)
                  for b in self.api.backends.values() if b.name != current]
        try:
            return choose(states, Request(vol.size, vol.availability_zone,
                                          dict(new.extra_specs or {})),
                          conf.scheduler_default_filters, conf.scheduler_default_weighers, {
                              "capacity_weight_multiplier": conf.capacity_weight_multiplier,
                              "allocated_capacity_weight_multiplier":
                                  conf.allocated_capacity_weight_multiplier}).name
        except NoValidBackend as exc:
            raise BadRequest(f"Invalid volume type: no backend can take volume type "
                             f"{new.name}: {exc}") from None

    def start(self, session: Any, ctx: RequestContext, vol: Volume, dest: str,
              status: str | None, new_type: VolumeType | None = None) -> None:
        """Record the migration and enqueue its job in the caller's transaction.  A
        retype reserves the new type's quota now (413 when it does not fit) and holds
        the volume ``retyping``; a plain migration leaves it ``available`` (or
        ``maintenance`` when locked)."""
        reservations: list[int] = []
        if new_type is not None:
            reservations = self.api.quota.reserve(session, vol.project_id,
                                                  _type_deltas(new_type.name, vol.size))
        previous = vol.status
        if not self.api.set_status(session, Volume, vol.id, previous, status or previous,
                                   migration_status="starting"):
            raise BadRequest(f"Volume {vol.id} changed state; try again.")
        src = self.api.backend_of(vol.host or "")
        enqueue(session, "volume.migrate", {
            "volume_id": vol.id, "src": src, "dest": dest, "previous": previous,
            "new_type_id": new_type.id if new_type else None,
            "reservations": reservations, "request_id": ctx.request_id},
            target=f"volume:{dest}", max_attempts=5)
        events.emit(session, "volume", "volume.migrate.start", vol.id, vol.project_id,
                    src=src, dest=dest, new_type=new_type.name if new_type else None)


# ------------------------------------------------------------------ the job
def _same_store(src: Any, dest: Any) -> bool:
    return bool(src.engine is dest.engine or src.engine.fsid() == dest.engine.fsid())


def _copy(src: Any, dest: Any, volume_id: str) -> None:
    """The source head's data into ``volume-<id>`` of the destination pool, whole or
    not at all: a copy under a temporary name, then a rename."""
    name, tmp = volume_name(volume_id), volume_name(volume_id) + TMP_SUFFIX
    if dest.engine.exists(dest.opt.pool, name):
        return  # a crash after the rename: the copy is whole
    if dest.engine.exists(dest.opt.pool, tmp):
        dest.engine.remove(dest.opt.pool, tmp)  # a crash during the copy
    with src.engine.open(src.opt.pool, name, read_only=True) as image:
        if _same_store(src, dest):
            image.copy(dest.opt.pool, tmp)
        else:  # another block store: stream the raw data across
            stream = io.BufferedReader(_ChunkStream(image.iter_chunks()), 8 << 20)
            dest.engine.import_from(dest.opt.pool, tmp, stream, order=dest.opt.order)
    crash.point("volume.migrate", "after-copy")
    dest.engine.rename(dest.opt.pool, tmp, name)


def _discard_copy(dest: Any, volume_id: str) -> None:
    for name in (volume_name(volume_id) + TMP_SUFFIX, volume_name(volume_id)):
        if dest.engine.exists(dest.opt.pool, name):
            dest.engine.remove(dest.opt.pool, name)


def _fail(ctx: JobContext, exc: BaseException) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    api, volume_id = services.volume, p["volume_id"]
    dest = services.volume_drivers[p["dest"]]
    try:
        _discard_copy(dest, volume_id)
    except Exception as cleanup:  # noqa: BLE001 - retried by the job
        LOG.warning("volume %s: partial copy not removed yet: %s", volume_id, cleanup)
        raise
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        api.quota.rollback(session, list(p["reservations"]))
        if vol is None:
            return {"error": str(exc)}
        vol.migration_status = "error"
        vol.status = p["previous"]
        vol.fault = f"{type(exc).__name__}: {exc}"
        vol.updated_at = datetime.now(UTC)
        events.emit(session, "volume", "volume.migrate.error", volume_id, vol.project_id,
                    error=str(exc))
    return {"error": str(exc)}


@handler("volume.migrate")
def migrate_volume(ctx: JobContext) -> dict[str, Any]:
    services, p = ctx.services, ctx.payload
    api, volume_id = services.volume, p["volume_id"]
    src, dest = services.volume_drivers[p["src"]], services.volume_drivers[p["dest"]]
    src_host, dest_host = api.host_of(p["src"]), api.host_of(p["dest"])
    same_pool = _same_store(src, dest) and src.opt.pool == dest.opt.pool
    with services.db.session() as session:
        vol = session.get(Volume, volume_id)
        if vol is None:
            return {"skipped": "gone"}
        swapped = vol.host == dest_host and vol.migration_status == "success"
        if not swapped:
            if vol.host != src_host or not migrating(vol):
                return {"skipped": f"{vol.migration_status} on {vol.host}"}
            vol.migration_status = "migrating"
    if not swapped:
        try:
            if not same_pool:
                _copy(src, dest, volume_id)
        except Exception as exc:  # noqa: BLE001 - the source is whole: report, no retry
            LOG.warning("volume %s: migration to %s failed: %s", volume_id, p["dest"], exc)
            return _fail(ctx, exc)
        with services.db.session() as session:
            vol = session.get(Volume, volume_id)
            if vol is None:
                return {"skipped": "gone"}
            vol.migration_status = "completing"
        crash.point("volume.migrate", "before-swap")
        with services.db.session() as session:
            vol = session.get(Volume, volume_id)
            if vol is None:
                return {"skipped": "gone"}
            changes: dict[str, Any] = {}
            if p.get("new_type_id"):
                old_name = type_name(session, vol)
                new = session.get(VolumeType, p["new_type_id"])
                api.quota.commit(session, list(p["reservations"]))
                api.quota.release(session, vol.project_id, _type_deltas(old_name, vol.size))
                vol.volume_type_id = p["new_type_id"]
                changes = {"old_type": old_name, "new_type": new.name if new else None}
                events.emit(session, "volume", "volume.retype", vol.id, vol.project_id,
                            **changes)
            vol.host = dest_host
            vol.status = p["previous"]
            vol.migration_status = "success"
            vol.updated_at = datetime.now(UTC)
            events.emit(session, "volume", "volume.migrate.end", vol.id, vol.project_id,
                        host=dest_host, **changes)
    crash.point("volume.migrate", "after-swap")
    if same_pool:
        return {"migrated": volume_id, "copied": False}
    _remove_source(ctx, src, volume_id)
    return {"migrated": volume_id, "host": dest_host}


def _remove_source(ctx: JobContext, src: Any, volume_id: str) -> None:
    """The source image goes (kept as ``.deleted`` while clones of it need it); what it
    held on a parent is released, now or by a ``volume.release`` job."""
    if "parent" not in ctx.progress:
        parent = src.parent_of(volume_id)
        ctx.checkpoint(parent=list(parent) if parent else None)
    left: tuple[str, str, str] | None = None
    try:
        src.delete_volume(volume_id)
    except ParentNotReleased as exc:
        left = exc.parent
    parent = ctx.progress.get("parent")
    if left is None and parent:
        try:
            src.release(tuple(parent))
        except Exception as exc:  # noqa: BLE001 - garbage on another image: retried
            LOG.warning("volume %s: parent %s not released yet: %s", volume_id, parent, exc)
            left = tuple(parent)  # type: ignore[assignment]
    if left is not None:
        with ctx.services.db.session() as session:
            enqueue(session, "volume.release", {"parent": list(left)},
                    target=f"volume:{ctx.payload['src']}", max_attempts=10)
