"""Cinder backups: validation, policy, quota, records and jobs (the work is in
``strato.backup.manager``).

A backup reads a block-store snapshot of its volume (a hidden ``backup.<id>`` one, or
the volume snapshot it was asked to back up) and copies it into the backup store, a
backend apart from the volume's.  The newest backup's hidden snapshot stays on the
volume as the base of the next incremental backup; older ones go.  Quotas
``backups``/``backup_gigabytes`` count a backup from its create (an errored one too,
as Cinder) until it is deleted.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select, update

from strato import events
from strato.backup.models import Backup
from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound, StratoError
from strato.jobs.queue import enqueue
from strato.volume.api import (
    VolumeAPI,
    _next_href,
    _page,
    _text,
    _truthy,
    iso,
    volume_deltas,
)
from strato.volume.models import Snapshot, Volume

#: what export records name as the service that holds the data (Cinder names its
#: backup driver's class; clients, Tempest too, expect that module prefix)
BACKUP_SERVICE = "cinder.backup.drivers.strato.BackupStore"
#: Cinder's statuses a backup may be deleted in (``force``: an admin, any settled one)
DELETABLE = ("available", "error")
FORCE_DELETABLE = ("available", "error", "error_deleting", "creating", "restoring")
MAX_ATTEMPTS = 5


def backup_deltas(size: int) -> dict[str, int]:
    return {"backups": 1, "backup_gigabytes": size}


def hidden_snapshot(backup_id: str) -> str:
    """The block-store snapshot a backup read its volume at (kept as the next base)."""
    return f"backup.{backup_id}"


def set_status(session: Any, backup_id: str, expected: str, new: str,
               **values: Any) -> bool:
    """A conditional status change; False when the backup is not in ``expected``."""
    result = session.execute(update(Backup).where(
        Backup.id == backup_id, Backup.status == expected).values(
        status=new, updated_at=datetime.now(UTC), **values))
    return result.rowcount == 1


def delete_refusals(b: Backup, has_dependents: bool, force: bool = False
                    ) -> list[tuple[str, StratoError]]:
    """Why Cinder's backup delete refuses ``b`` now, as (reason, error) in the order the
    delete checks them; [] when it may go.  Shared by the delete and the lineage API's
    delete blockers.  ``has_dependents``: incremental backups are based on it."""
    out: list[tuple[str, StratoError]] = []
    allowed = FORCE_DELETABLE if force else DELETABLE
    if b.status not in allowed:
        out.append(("busy", BadRequest(f"Invalid backup: Backup status must be "
                                       f"{' or '.join(allowed)}.")))
    if has_dependents:
        out.append(("has_dependent_backups", BadRequest(
            "Invalid backup: Incremental backups exist for this backup.")))
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on", "t", "y")
    return bool(value)


class BackupAPI:
    def __init__(self, volume: VolumeAPI) -> None:
        self.volume = volume
        self.db, self.policy, self.conf = volume.db, volume.policy, volume.conf

    # ------------------------------------------------------------ views
    def links(self, project_id: str, backup_id: str) -> list[dict[str, str]]:
        return self.volume.links("backups", project_id, backup_id)

    def summary(self, b: Backup, version: tuple[int, int], metadata: bool = False
                ) -> dict[str, Any]:
        """Cinder's summary (list, create, update, import); ``metadata`` (create and
        update from 3.43) adds the backup's metadata."""
        view: dict[str, Any] = {"id": b.id, "name": b.name,
                                "links": self.links(b.project_id, b.id)}
        if metadata and version >= (3, 43):
            view["metadata"] = dict(b.metadata_ or {})
        return view

    def detail(self, session: Any, ctx: RequestContext, b: Backup,
               version: tuple[int, int]) -> dict[str, Any]:
        dependent = session.scalar(select(exists().where(Backup.parent_id == b.id)))
        view: dict[str, Any] = {
            "id": b.id, "status": b.status, "size": b.size, "object_count": b.object_count,
            "availability_zone": b.availability_zone, "container": b.container,
            "created_at": iso(b.created_at), "updated_at": iso(b.updated_at),
            "name": b.name, "description": b.description, "fail_reason": b.fail_reason,
            "volume_id": b.volume_id, "links": self.links(b.project_id, b.id),
            "is_incremental": b.parent_id is not None,
            "has_dependent_backups": bool(dependent), "snapshot_id": b.snapshot_id,
            "data_timestamp": iso(b.data_timestamp),
        }
        if version >= (3, 18) and self.policy.allowed(
                ctx, "backup:backup_project_attribute", {"project_id": b.project_id}):
            view["os-backup-project-attr:project_id"] = b.project_id
        if version >= (3, 43):
            view["metadata"] = dict(b.metadata_ or {})
        if version >= (3, 56):
            view["user_id"] = b.user_id
        if version >= (3, 64):
            view["encryption_key_id"] = None
        return view

    # ------------------------------------------------------------ lookups
    def get_row(self, session: Any, ctx: RequestContext, backup_id: str) -> Backup:
        b = session.get(Backup, backup_id)
        if b is None or not (ctx.is_admin or b.project_id == ctx.project_id):
            raise NotFound(f"Backup {backup_id} could not be found.")
        return b

    def _enforce(self, ctx: RequestContext, rule: str, b: Backup | None = None) -> None:
        self.policy.enforce(ctx, rule, {"project_id": b.project_id if b else ctx.project_id})

    # ------------------------------------------------------------ create
    def create(self, ctx: RequestContext, body: dict[str, Any],
               version: tuple[int, int]) -> dict[str, Any]:
        ref = body["backup"]
        if "metadata" in ref and version < (3, 43):
            raise BadRequest("Additional properties are not allowed ('metadata' was "
                             "unexpected)")
        if "availability_zone" in ref and version < (3, 51):
            raise BadRequest("Additional properties are not allowed ('availability_zone' "
                             "was unexpected)")
        name, description = _text(ref, "name"), _text(ref, "description")
        incremental, force = _bool(ref.get("incremental")), _bool(ref.get("force"))
        snapshot_id = ref.get("snapshot_id")
        metadata = dict(ref.get("metadata") or {})
        self._enforce(ctx, "backup:create")
        with self.db.session() as session:
            vol = self.volume.get_volume_row(session, ctx, ref["volume_id"])
            zone = ref.get("availability_zone") or vol.availability_zone
            if zone != vol.availability_zone:
                raise BadRequest(f"Invalid availability zone: {zone}.")
            snap = None
            if snapshot_id:
                snap = self.volume.get_snapshot_row(session, ctx, snapshot_id)
                if snap.volume_id != vol.id:
                    raise BadRequest(f"Invalid volume: Snapshot {snapshot_id} is not a "
                                     f"snapshot of volume {vol.id}.")
                if snap.status != "available":
                    raise BadRequest(f"Invalid snapshot: Snapshot to be backed up must be "
                                     f"available, but the current status is "
                                     f"\"{snap.status}\".")
            if vol.status not in ("available", "in-use"):
                raise BadRequest(f"Invalid volume: Volume to be backed up must be available "
                                 f"or in-use, but the current status is \"{vol.status}\".")
            if vol.status == "in-use" and not snap and not force:
                raise BadRequest("Invalid volume: Backing up an in-use volume must use the "
                                 "force flag.")
            if vol.host is None:
                raise BadRequest(f"Invalid volume: Volume {vol.id} has no data yet.")
            parent_id = None
            if incremental:
                latest = session.scalars(select(Backup).where(
                    Backup.volume_id == vol.id, Backup.status == "available",
                    Backup.data.is_not(None)).order_by(
                    Backup.data_timestamp.desc(), Backup.created_at.desc())).first()
                if latest is None:
                    raise BadRequest("Invalid backup: No backups available to do an "
                                     "incremental backup.")
                parent_id = latest.id
            reservations = self.volume.quota.reserve(session, vol.project_id,
                                                     backup_deltas(vol.size))
            # Cinder commits a backup's quota at once: an errored one counts until deleted.
            self.volume.quota.commit(session, reservations)
            now = datetime.now(UTC)
            b = Backup(id=str(uuid.uuid4()), volume_id=vol.id, snapshot_id=snapshot_id,
                       project_id=vol.project_id, user_id=ctx.user_id, name=name,
                       description=description, container=ref.get("container"),
                       availability_zone=zone, status="creating", size=vol.size,
                       object_count=0, parent_id=parent_id, incremental=incremental,
                       data_timestamp=snap.created_at if snap else now,
                       metadata_=metadata, host=vol.host, previous_status=vol.status,
                       reservations=[], quota_committed=True, created_at=now,
                       updated_at=now)
            if snap is not None:
                busy = VolumeAPI.set_status(session, Snapshot, snap.id, "available",
                                            "backing-up")
            else:
                busy = VolumeAPI.set_status(session, Volume, vol.id, vol.status,
                                            "backing-up")
            if not busy:
                raise BadRequest(f"Invalid volume: Volume {vol.id} changed state; try again.")
            session.add(b)
            enqueue(session, "backup.create", {"backup_id": b.id,
                                               "request_id": ctx.request_id},
                    target=VolumeAPI.target_of(vol.host), max_attempts=MAX_ATTEMPTS)
            events.emit(session, "backup", "backup.create.start", b.id, b.project_id,
                        volume_id=vol.id, incremental=incremental)
            session.flush()
            return self.summary(b, version, metadata=True)

    # ------------------------------------------------------------ reads
    def show(self, ctx: RequestContext, backup_id: str, version: tuple[int, int]) -> dict:
        with self.db.session(readonly=True) as session:
            b = self.get_row(session, ctx, backup_id)
            self._enforce(ctx, "backup:get", b)
            return self.detail(session, ctx, b, version)

    def list(self, ctx: RequestContext, params: dict[str, str], version: tuple[int, int],
             detail: bool, url: str) -> dict[str, Any]:
        self._enforce(ctx, "backup:get_all")
        query = select(Backup)
        if not (ctx.is_admin and _truthy(params.get("all_tenants"))):
            query = query.where(Backup.project_id == ctx.project_id)
        elif params.get("project_id"):
            query = query.where(Backup.project_id == params["project_id"])
        for key in ("name", "status", "volume_id", "availability_zone", "snapshot_id",
                    "parent_id"):
            if key in params:
                query = query.where(getattr(Backup, key) == params[key])
        with self.db.session(readonly=True) as session:
            count = len(list(session.scalars(query)))
            rows = _page(session, query, Backup, params)
            items = [self.detail(session, ctx, b, version) if detail
                     else self.summary(b, version) for b in rows["items"]]
        out: dict[str, Any] = {"backups": items}
        if rows["next"]:
            out["backups_links"] = [{"rel": "next",
                                     "href": _next_href(url, params, rows["next"])}]
        if version >= (3, 45) and _truthy(params.get("with_count")):
            out["count"] = count
        return out

    # ------------------------------------------------------------ update (3.9)
    def update(self, ctx: RequestContext, backup_id: str, body: dict[str, Any],
               version: tuple[int, int]) -> dict[str, Any]:
        if version < (3, 9):
            raise NotFound("The resource could not be found.")
        ref = body["backup"]
        if "metadata" in ref and version < (3, 43):
            raise BadRequest("Additional properties are not allowed ('metadata' was "
                             "unexpected)")
        with self.db.session() as session:
            b = self.get_row(session, ctx, backup_id)
            self._enforce(ctx, "backup:update", b)
            for key in ("name", "description"):
                if key in ref:
                    setattr(b, key, _text(ref, key))
            if "metadata" in ref:
                b.metadata_ = dict(ref["metadata"] or {})
            b.updated_at = datetime.now(UTC)
            session.flush()
            return self.summary(b, version, metadata=True)

    # ------------------------------------------------------------ delete
    def delete(self, ctx: RequestContext, backup_id: str, force: bool = False) -> None:
        with self.db.session() as session:
            b = self.get_row(session, ctx, backup_id)
            if force:
                self._enforce(ctx, "volume_extension:backup_admin_actions:force_delete", b)
            else:
                self._enforce(ctx, "backup:delete", b)
            refusals = delete_refusals(
                b, bool(session.scalar(select(exists().where(Backup.parent_id == b.id)))),
                force)
            if refusals:
                raise refusals[0][1]
            if not set_status(session, b.id, b.status, "deleting"):
                raise BadRequest(f"Backup {b.id} changed state; try again.")
            enqueue(session, "backup.delete", {"backup_id": b.id, "previous": b.status,
                                               "request_id": ctx.request_id},
                    target=VolumeAPI.target_of(b.host) if b.host else "any",
                    max_attempts=MAX_ATTEMPTS)
            events.emit(session, "backup", "backup.delete.start", b.id, b.project_id)


    # ------------------------------------------------------------ restore
    def restore(self, ctx: RequestContext, backup_id: str, body: dict[str, Any],
                version: tuple[int, int]) -> dict[str, Any]:
        ref = body.get("restore") or {}
        volume_id, name = ref.get("volume_id"), _text(ref, "name")
        with self.db.session() as session:
            b = self.get_row(session, ctx, backup_id)
            self._enforce(ctx, "backup:restore", b)
            if b.status != "available":
                raise BadRequest("Invalid backup: Backup status must be available.")
            if volume_id:
                if name:
                    raise BadRequest("Invalid input: a name is only given to a new "
                                     "volume.")
                vol = self.volume.get_volume_row(session, ctx, volume_id)
                if vol.status != "available":
                    raise BadRequest(f"Invalid volume: Volume to be restored to must be "
                                     f"available, but the current status is "
                                     f"\"{vol.status}\".")
                if vol.size < b.size:
                    raise BadRequest(f"Invalid volume: volume size {vol.size} is too small "
                                     f"to restore backup of size {b.size}.")
                if vol.host is None:
                    raise BadRequest(f"Invalid volume: Volume {vol.id} has no data yet.")
                if not VolumeAPI.set_status(session, Volume, vol.id, "available",
                                            "restoring-backup"):
                    raise BadRequest(f"Volume {vol.id} changed state; try again.")
                new = False
            else:
                vol = self._new_volume(session, ctx, b, name)
                new = True
            _start_restore(session, ctx, b, vol, new)
            return {"backup_id": b.id, "volume_id": vol.id, "volume_name": vol.name or ""}

    def _new_volume(self, session: Any, ctx: RequestContext, b: Backup,
                    name: str | None, size: int | None = None, type_ref: str | None = None,
                    description: str | None = None,
                    metadata: dict[str, str] | None = None) -> Volume:
        """The volume a restore makes (Cinder's ``restore_backup_<id>``): the backup's
        size (or more), the default type (or ``type_ref``), on the source volume's
        backend (or the first one), counted against the volume quotas from now."""
        vtype = self.volume.volume_type(session, type_ref, ctx)
        size = size or b.size
        src = session.get(Volume, b.volume_id)
        host = src.host if src is not None and src.host else self.volume.host_of(
            next(iter(self.volume.backends)))
        reservations = self.volume.quota.reserve(session, ctx.project_id,
                                                 volume_deltas(vtype.name, size))
        vol = Volume(id=str(uuid.uuid4()), name=name or f"restore_backup_{b.id}",
                     description=description, project_id=ctx.project_id,
                     user_id=ctx.user_id, size=size, status="restoring-backup",
                     volume_type_id=vtype.id,
                     availability_zone=self.conf.volume.storage_availability_zone,
                     host=host, metadata_=dict(metadata or {}), image_metadata={},
                     reservations=reservations)
        session.add(vol)
        events.emit(session, "volume", "volume.create.start", vol.id, vol.project_id,
                    size=size)
        session.flush()
        return vol

    def create_volume(self, ctx: RequestContext, ref: dict[str, Any],
                      version: tuple[int, int]) -> dict[str, Any]:
        """``POST /volumes`` with ``backup_id`` (3.47): a new volume restored from the
        backup, as a restore into a new volume (the backup ``restoring``)."""
        self.policy.enforce(ctx, "volume:create", {"project_id": ctx.project_id})
        size = ref.get("size")
        size = int(size) if size not in (None, "") else None
        with self.db.session() as session:
            b = self.get_row(session, ctx, str(ref["backup_id"]))
            self._enforce(ctx, "backup:restore", b)
            if b.status != "available":
                raise BadRequest("Invalid backup: Backup status must be available.")
            if size is not None and size < b.size:
                raise BadRequest(f"Invalid input received: volume size {size} is smaller "
                                 f"than the backup's ({b.size} GiB).")
            vol = self._new_volume(session, ctx, b, _text(ref, "name"), size,
                                   ref.get("volume_type"), _text(ref, "description"),
                                   {str(k): str(v) for k, v in
                                    (ref.get("metadata") or {}).items()})
            _start_restore(session, ctx, b, vol, True)
            vtype = self.volume.volume_type(session, ref.get("volume_type"), ctx)
            return self.volume.volume_view(vol, ctx, vtype, version)

    # ------------------------------------------------------------ export / import
    def export_record(self, ctx: RequestContext, backup_id: str) -> dict[str, str]:
        with self.db.session(readonly=True) as session:
            b = self.get_row(session, ctx, backup_id)
            self._enforce(ctx, "backup:backup-export", b)
            if b.status != "available" or b.data is None:
                raise BadRequest("Invalid backup: Backup status must be available and "
                                 f"not {b.status}.")
            record = {k: getattr(b, k) for k in (
                "id", "volume_id", "snapshot_id", "project_id", "user_id", "name",
                "description", "container", "availability_zone", "size", "object_count",
                "parent_id", "incremental", "host")}
            record.update(metadata=dict(b.metadata_ or {}), data=b.data,
                          data_timestamp=iso(b.data_timestamp),
                          created_at=iso(b.created_at))
        url = base64.b64encode(json.dumps(record).encode()).decode()
        return {"backup_service": BACKUP_SERVICE, "backup_url": url}

    def import_record(self, ctx: RequestContext, body: dict[str, Any],
                      version: tuple[int, int]) -> dict[str, Any]:
        """Recreate a backup's record from an export; the job checks its data is in the
        store (else the backup is ``error``, as Cinder)."""
        self._enforce(ctx, "backup:backup-import")
        ref = body["backup-record"]
        if ref["backup_service"] != BACKUP_SERVICE:
            raise BadRequest(f"Invalid input: unsupported backup service "
                             f"{ref['backup_service']!r}.")
        try:
            record = json.loads(base64.b64decode(ref["backup_url"], validate=True))
            backup_id = str(uuid.UUID(str(record["id"])))
            size, data = int(record["size"]), record["data"]
            # the data may be another backup's object: Cinder imports a record under
            # a new id pointing at the same stored data (what Tempest does)
            if not isinstance(data, dict) or not isinstance(data.get("backup_id"), str):
                raise ValueError("the record names no stored data")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BadRequest(f"Invalid input: the backup record cannot be read "
                             f"({exc}).") from None
        parse = datetime.fromisoformat
        with self.db.session() as session:
            if session.get(Backup, backup_id) is not None:
                raise BadRequest(f"Invalid backup: Backup {backup_id} already exists in "
                                 "database.")
            now = datetime.now(UTC)
            b = Backup(
                id=backup_id, volume_id=str(record.get("volume_id") or ""),
                snapshot_id=record.get("snapshot_id"), project_id=ctx.project_id,
                user_id=ctx.user_id, name=record.get("name"),
                description=record.get("description"), container=record.get("container"),
                availability_zone=record.get("availability_zone"), status="creating",
                size=size, object_count=int(record.get("object_count") or 0),
                parent_id=record.get("parent_id"),
                incremental=bool(record.get("incremental")),
                data_timestamp=parse(record["data_timestamp"]).replace(tzinfo=UTC)
                if record.get("data_timestamp") else now,
                metadata_=dict(record.get("metadata") or {}), data=data,
                host=record.get("host"), reservations=[], quota_committed=False,
                created_at=now, updated_at=now)
            session.add(b)
            enqueue(session, "backup.import", {"backup_id": backup_id},
                    target=VolumeAPI.target_of(b.host) if b.host else "any",
                    max_attempts=MAX_ATTEMPTS)
            session.flush()
            return self.summary(b, version)

    # ------------------------------------------------------------ admin actions
    def action(self, ctx: RequestContext, backup_id: str, body: dict[str, Any]) -> None:
        (name, args), = body.items()
        if name == "os-force_delete":
            self.delete(ctx, backup_id, force=True)
            return
        if name != "os-reset_status":
            raise BadRequest(f"There is no such action: {name}")
        status = args["status"]
        with self.db.session() as session:
            b = self.get_row(session, ctx, backup_id)
            self._enforce(ctx, "volume_extension:backup_admin_actions:reset_status", b)
            if status not in ("available", "error"):
                raise BadRequest(f"Invalid backup: Backup status {status!r} is not "
                                 "available or error.")
            b.status = status
            b.updated_at = datetime.now(UTC)
            events.emit(session, "backup", "backup.reset_status", b.id, b.project_id,
                        status=status)


def _start_restore(session: Any, ctx: RequestContext, b: Backup, vol: Volume,
                   new: bool) -> None:
    """The backup goes ``restoring`` into ``vol`` and its job is queued (the restore
    action and a volume created from a backup both start here)."""
    if not set_status(session, b.id, "available", "restoring", restore_volume_id=vol.id):
        raise BadRequest(f"Backup {b.id} changed state; try again.")
    enqueue(session, "backup.restore", {
        "backup_id": b.id, "volume_id": vol.id, "new": new,
        "request_id": ctx.request_id},
        target=VolumeAPI.target_of(vol.host), max_attempts=MAX_ATTEMPTS)
    events.emit(session, "backup", "backup.restore.start", b.id, b.project_id,
                volume_id=vol.id)
