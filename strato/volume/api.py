"""Block storage logic: validation, policy, quota reservations, records, jobs.

A create or delete is a state change plus a job in one transaction; the volume
worker (strato.volume.manager) does the store work and finishes the state machine.
Every state change is conditional on the state it expects.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete as sa_delete
from sqlalchemy import exists, func, or_, select, true, update
from sqlalchemy.orm import Session

from strato import events
from strato.config import Config
from strato.context import RequestContext
from strato.db import Database
from strato.exceptions import BadRequest, Conflict, NotFound, OverLimit, StratoError
from strato.image.api import ImageAPI
from strato.image.models import Image
from strato.jobs.queue import enqueue
from strato.policy import Enforcer
from strato.quota.engine import QuotaEngine
from strato.quota.models import QuotaLimit
from strato.storage import Engine
from strato.validation import query_int, string_map
from strato.volume.messages import UserMessages
from strato.volume.models import Attachment, Snapshot, Volume, VolumeType, VolumeTypeProject
from strato.volume.scheduler import Backend

DEFAULT_TYPE_ID = "00000000-0000-4000-8000-00000000d3f1"
NAME_MAX = 255
# migration_status values of a migration still running (strato.volume.migration).
MIGRATING = ("starting", "migrating", "completing")
# error_deleting: the store still had the data when the delete failed; deleting again
# retries it.
DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing",
             "error_deleting")
# Extra specs Cinder shows to every project (the rest are for admins).
USER_VISIBLE_SPECS = ("RESKEY:availability_zones", "multiattach", "replication_enabled")
SNAPSHOT_DELETABLE = ("available", "error", "error_deleting")
# Core image attributes a volume keeps in volume_image_metadata, besides properties.
IMAGE_CORE = ("checksum", "container_format", "disk_format", "min_disk", "min_ram", "size")


def volume_deltas(type_name: str, size: int, count: int = 1) -> dict[str, int]:
    """What a volume counts against: in total and for its type."""
    return {"volumes": count, "gigabytes": size, f"volumes_{type_name}": count,
            f"gigabytes_{type_name}": size}


def snapshot_deltas(type_name: str, size: int) -> dict[str, int]:
    return {"snapshots": 1, "gigabytes": size, f"snapshots_{type_name}": 1,
            f"gigabytes_{type_name}": size}


def type_name(session: Session, vol: Volume | None) -> str:
    vtype = session.get(VolumeType, vol.volume_type_id) if vol and vol.volume_type_id \
        else None
    return vtype.name if vtype else "__DEFAULT__"


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field '{key}': a string is required.")
    if len(value) > NAME_MAX:
        raise BadRequest(f"Invalid input for field '{key}': longer than {NAME_MAX} "
                         "characters.")
    return value


def _display(ref: dict[str, Any]) -> dict[str, Any]:
    """Cinder's older ``display_name``/``display_description`` keys, as the new ones
    (a new key given as well wins)."""
    out = dict(ref)
    for old in ("display_name", "display_description"):
        if old in out:
            value = out.pop(old)
            out.setdefault(old.removeprefix("display_"), value)
    return out


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    return string_map(body.get("metadata") or {}, "metadata")


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BadRequest(f"Invalid value {value!r} for '{what}': a boolean is required.")


class VolumeAPI:
    def __init__(self, db: Database, policy: Enforcer, conf: Config, images: ImageAPI,
                 backends: list[Backend], engines: dict[str, Engine]) -> None:
        self.db = db
        self.engines = engines  # backend name -> the block store its pool lives in
        self.policy = policy
        self.conf = conf
        self.images = images
        self.backends = {b.name: b for b in backends}
        v = conf.volume
        # Groups are not implemented: their limit is 0, honestly.
        self.quota = QuotaEngine({"volumes": v.quota_volumes, "snapshots": v.quota_snapshots,
                                  "gigabytes": v.quota_gigabytes, "backups": v.quota_backups,
                                  "backup_gigabytes": v.quota_backup_gigabytes, "groups": 0,
                                  "per_volume_gigabytes": -1})
        # User messages: asynchronous failures, for this service and any other to record.
        self.messages = UserMessages(db, policy, v.message_ttl, conf.public_endpoint)

    def host_of(self, backend: str) -> str:
        """Cinder's ``host@backend#pool``."""
        return f"{self.conf.DEFAULT.host}@{backend}#{self.backends[backend].pool}"

    @staticmethod
    def backend_of(host: str) -> str:
        """The backend named in a volume's ``host@backend#pool``."""
        return host.split("@", 1)[1].split("#", 1)[0]

    @classmethod
    def target_of(cls, host: str) -> str:
        """The job target of the backend a volume lives on."""
        return "volume:" + cls.backend_of(host)

    # ------------------------------------------------------------ views
    def volume_view(self, vol: Volume, ctx: RequestContext, vtype: VolumeType | None,
                    version: tuple[int, int],
                    attachments: list[dict[str, Any]] | None = None,
                    shown: bool = False) -> dict[str, Any]:
        """Cinder's volume detail view for ``version``, as ``ctx`` may see it.

        Create and update answer this view; ``shown`` (GET show and detail list) adds
        what Cinder's API extensions add to those two calls only: the project, and for
        admins the host and migration attributes, and the image metadata."""
        body: dict[str, Any] = {
            "id": vol.id, "name": vol.name, "description": vol.description,
            "status": vol.status, "size": vol.size,
            "availability_zone": vol.availability_zone,
            "created_at": iso(vol.created_at), "updated_at": iso(vol.updated_at),
            "attachments": attachments or [], "bootable": "true" if vol.bootable else "false",
            "encrypted": False, "multiattach": vol.multiattach,
            "volume_type": vtype.name if vtype else None,
            "snapshot_id": vol.snapshot_id, "source_volid": vol.source_volid,
            "metadata": dict(vol.metadata_ or {}), "user_id": vol.user_id,
            "replication_status": None, "consistencygroup_id": None,
            "links": self.links("volumes", vol.project_id, vol.id),
        }
        admin = ctx.is_admin
        if admin:
            body["migration_status"] = vol.migration_status
        if version >= (3, 13):
            body["group_id"] = None
        if admin and version >= (3, 21):
            body["provider_id"] = None
        if version >= (3, 48):
            body["shared_targets"] = False
            body["service_uuid"] = None
        if admin and version >= (3, 61):
            body["cluster_name"] = None
        if version >= (3, 63):
            body["volume_type_id"] = vol.volume_type_id
        if version >= (3, 65):
            body["consumes_quota"] = True
        if shown:
            body["os-vol-tenant-attr:tenant_id"] = vol.project_id
            if admin:
                body["os-vol-host-attr:host"] = vol.host
                body["os-vol-mig-status-attr:migstat"] = vol.migration_status
                body["os-vol-mig-status-attr:name_id"] = None
            if vol.image_metadata:
                body["volume_image_metadata"] = {
                    k: str(v) for k, v in vol.image_metadata.items()}
        return body

    def links(self, collection: str, project_id: str, row_id: str) -> list[dict[str, str]]:
        """Cinder's self (versioned) and bookmark (unversioned) links."""
        base = f"{self.conf.public_endpoint}/volume"
        return [{"rel": "self", "href": f"{base}/v3/{project_id}/{collection}/{row_id}"},
                {"rel": "bookmark", "href": f"{base}/{project_id}/{collection}/{row_id}"}]

    @staticmethod
    def snapshot_view(snap: Snapshot, version: tuple[int, int], detail: bool = True,
                      shown: bool = False) -> dict[str, Any]:
        """Cinder's snapshot views: the summary (``detail=False``, the plain list), the
        detail (create, update) and, with ``shown`` (show, detail list), the extended
        attributes every reader of the project may see."""
        body: dict[str, Any] = {
            "id": snap.id, "name": snap.name, "description": snap.description,
            "volume_id": snap.volume_id, "status": snap.status, "size": snap.size,
            "created_at": iso(snap.created_at), "updated_at": iso(snap.updated_at),
            "metadata": dict(snap.metadata_ or {}),
        }
        if not detail:
            return body
        if version >= (3, 14):
            body["group_snapshot_id"] = None
        if version >= (3, 41):
            body["user_id"] = snap.user_id
        if version >= (3, 65):
            body["consumes_quota"] = True
        if shown:
            body["os-extended-snapshot-attributes:progress"] = snap.progress
            body["os-extended-snapshot-attributes:project_id"] = snap.project_id
        return body

    # ------------------------------------------------------------ lookups
    def _owned(self, ctx: RequestContext, project_id: str) -> bool:
        return ctx.is_admin or project_id == ctx.project_id

    def _image_snapshot(self, session: Session, ctx: RequestContext, image: Image) -> Snapshot:
        """The boot volume snapshot an image without data stands for (a volume-backed
        server's createImage: its ``block_device_mapping`` names the snapshot), as Cinder
        creates a volume from such an image; any other image without data is refused."""
        props = {p.name: p.value for p in image.properties}
        try:
            mapping = json.loads(props.get("block_device_mapping") or "[]")
        except ValueError:
            mapping = []
        boot = [m for m in mapping if isinstance(m, dict) and m.get("snapshot_id")
                and str(m.get("boot_index", "")) in ("0", "")]
        if image.status != "active" or not boot:
            raise BadRequest(f"Image {image.id} has no data to create a volume from "
                             f"(status {image.status}).")
        snap = self.get_snapshot_row(session, ctx, boot[0]["snapshot_id"])
        if snap.status != "available":
            raise BadRequest(f"Snapshot {snap.id} is not available (status {snap.status}).")
        return snap

    def get_volume_row(self, session: Session, ctx: RequestContext, volume_id: str) -> Volume:
        vol = session.get(Volume, volume_id)
        if vol is None or not self._owned(ctx, vol.project_id):
            raise NotFound(f"Volume {volume_id} could not be found.")
        return vol

    def get_snapshot_row(self, session: Session, ctx: RequestContext,
                         snapshot_id: str) -> Snapshot:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or not self._owned(ctx, snap.project_id):
            raise NotFound(f"Snapshot {snapshot_id} could not be found.")
        return snap

    def volume_type(self, session: Session, ref: str | None,
                    ctx: RequestContext | None = None) -> VolumeType:
        """By id or name; the default type when none is given.  With ``ctx``, a private
        type the project has no access to is not found (Cinder's type query)."""
        ref = ref or self.conf.volume.default_volume_type
        if not isinstance(ref, str):
            raise BadRequest("Invalid input for field 'volume_type': a string is required.")
        query = select(VolumeType)
        if ctx is not None:
            query = query.where(self.visible_type_clause(ctx))
        vtype = session.scalars(query.where(VolumeType.id == ref)).first() or session.scalars(
            query.where(VolumeType.name == ref)).first()
        if vtype is None and ref == "__DEFAULT__":
            vtype = VolumeType(id=DEFAULT_TYPE_ID, name="__DEFAULT__",
                               description="Default Volume Type", extra_specs={})
            session.add(vtype)
            session.flush()
        if vtype is None:
            raise NotFound(f"Volume type {ref} could not be found.")
        return vtype

    def _types(self, session: Session, ids: set[str | None]) -> dict[str, VolumeType]:
        ids.discard(None)
        if not ids:
            return {}
        return {t.id: t for t in session.scalars(select(VolumeType).where(
            VolumeType.id.in_(ids)))}

    # ------------------------------------------------------------ volumes
    def create(self, ctx: RequestContext, body: Any, version: tuple[int, int]) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("volume"), dict):
            raise BadRequest("Missing required element 'volume' in request body.")
        ref = _display(body["volume"])
        self.policy.enforce(ctx, "volume:create", {"project_id": ctx.project_id})
        name = _text(ref, "name")
        description = _text(ref, "description")
        metadata = _metadata(ref)
        sources = [k for k in ("snapshot_id", "source_volid", "imageRef", "image_id")
                   if ref.get(k)]
        if len(sources) > 1:
            raise BadRequest("Only one of snapshot_id, source_volid and imageRef may be "
                             "given.")
        size = ref.get("size")
        if size is not None and (isinstance(size, bool) or not str(size).isdigit()
                                 or int(size) <= 0):
            raise BadRequest(f"Invalid input for field 'size': {size!r} is not a positive "
                             "integer.")
        size = int(size) if size is not None else None
        zone = ref.get("availability_zone") or self.conf.volume.storage_availability_zone
        if zone != self.conf.volume.storage_availability_zone:
            raise BadRequest(f"Availability zone '{zone}' is invalid.")
        multiattach = _flag(ref.get("multiattach", False), "multiattach")
        volume_id = str(uuid.uuid4())
        payload: dict[str, Any] = {"volume_id": volume_id, "request_id": ctx.request_id}
        with self.db.session() as session:
            vtype = self.volume_type(session, ref.get("volume_type"), ctx)
            src_size, bootable = 0, False
            if ref.get("snapshot_id"):
                snap = self.get_snapshot_row(session, ctx, ref["snapshot_id"])
                if snap.status != "available":
                    raise BadRequest(f"Snapshot {snap.id} is not available (status "
                                     f"{snap.status}).")
                src_size = snap.size
                src = session.get(Volume, snap.volume_id)
                payload.update(source="snapshot", snapshot_id=snap.id,
                               src_volume_id=snap.volume_id, host=src.host if src else None)
            elif ref.get("source_volid"):
                src = self.get_volume_row(session, ctx, ref["source_volid"])
                if src.status not in ("available", "in-use"):
                    raise BadRequest(f"Volume {src.id} is not available for cloning "
                                     f"(status {src.status}).")
                src_size, bootable = src.size, src.bootable
                payload.update(source="volume", src_volume_id=src.id, host=src.host)
            elif ref.get("imageRef") or ref.get("image_id"):
                image_ref = ref.get("imageRef") or ref.get("image_id")
                image = self._image(session, ctx, image_ref)
                src_size = max(math.ceil((image.size or 0) / (1 << 30)), image.min_disk or 0,
                               math.ceil((image.virtual_size or 0) / (1 << 30)))
                payload.update(source="image", image_id=image.id)
                if image.location is None:  # no data: a volume-backed server's snapshot?
                    snap = self._image_snapshot(session, ctx, image)
                    src = session.get(Volume, snap.volume_id)
                    src_size, bootable = max(src_size, snap.size), True
                    payload.update(source="snapshot", snapshot_id=snap.id,
                                   src_volume_id=snap.volume_id,
                                   host=src.host if src else None)
            if size is None:
                if not src_size:
                    raise BadRequest("Invalid input for field 'size': a size is required.")
                size = src_size
            if size < src_size:
                raise BadRequest(f"Volume size {size} GiB is smaller than its source "
                                 f"({src_size} GiB).")
            per_volume = self.quota.limits(session, ctx.project_id).get(
                "per_volume_gigabytes", -1)
            if per_volume >= 0 and size > per_volume:
                raise OverLimit(f"Requested volume size {size}G is larger than maximum "
                                f"allowed limit {per_volume}G.")
            reservations = self.quota.reserve(session, ctx.project_id,
                                              volume_deltas(vtype.name, size))
            vol = Volume(
                id=volume_id, name=name, description=description, project_id=ctx.project_id,
                user_id=ctx.user_id, size=size, status="creating", bootable=bootable,
                volume_type_id=vtype.id, availability_zone=zone, multiattach=multiattach,
                host=payload.get("host"),
                snapshot_id=payload.get("snapshot_id"),
                source_volid=payload.get("src_volume_id") if payload.get(
                    "source") == "volume" else None,
                image_id=payload.get("image_id"), metadata_=metadata,
                reservations=reservations, image_metadata={})
            session.add(vol)
            if vol.host:  # a clone lives on its source's backend
                enqueue(session, "volume.create", payload, target=self.target_of(vol.host),
                        max_attempts=3)
            else:
                enqueue(session, "volume.schedule", payload, target="any", max_attempts=3)
            events.emit(session, "volume", "volume.create.start", volume_id, ctx.project_id,
                        size=size)
            session.flush()
            return self.volume_view(vol, ctx, vtype, version)

    def _image(self, session: Session, ctx: RequestContext, image_ref: str) -> Image:
        image = session.scalars(select(Image).where(
            Image.id == image_ref, self.images.visible_clause(ctx))).first()
        if image is None:
            raise BadRequest(f"Invalid image identifier or unable to access requested "
                             f"image {image_ref}.")
        if image.status != "active":
            raise BadRequest(f"Image {image_ref} is not active.")
        return image

    def show(self, ctx: RequestContext, volume_id: str, version: tuple[int, int]) -> dict:
        with self.db.session(readonly=True) as session:
            vol = self.get_volume_row(session, ctx, volume_id)
            self.policy.enforce(ctx, "volume:get", {"project_id": vol.project_id})
            vtype = session.get(VolumeType, vol.volume_type_id) if vol.volume_type_id else None
            return self.volume_view(vol, ctx, vtype, version,
                                    self._attached(session, ctx, vol.id), shown=True)

    @staticmethod
    def _attached(session: Session, ctx: RequestContext,
                  volume_id: str) -> list[dict[str, Any]]:
        """The ``attachments`` list every volume view carries (the host for admins)."""
        return [{"id": row.volume_id, "attachment_id": row.id, "volume_id": row.volume_id,
                 "server_id": row.instance_uuid,
                 "host_name": row.attached_host if ctx.is_admin else None,
                 "device": row.mountpoint, "attached_at": iso(row.attach_time)}
                for row in session.scalars(select(Attachment).where(
                    Attachment.volume_id == volume_id, Attachment.attach_status == "attached"))]

    def list(self, ctx: RequestContext, params: dict[str, str], version: tuple[int, int],
             detail: bool, url: str = "") -> dict:
        """``url``: the collection's own URL, which the ``next`` link continues."""
        self.policy.enforce(ctx, "volume:get_all", {"project_id": ctx.project_id})
        query = select(Volume)
        if not (ctx.is_admin and _truthy(params.get("all_tenants"))):
            query = query.where(Volume.project_id == ctx.project_id)
        elif params.get("project_id"):  # an admin's view of one project
            query = query.where(Volume.project_id == params["project_id"])
        for key in ("name", "status", "availability_zone"):
            if key in params:
                query = query.where(getattr(Volume, key) == params[key])
        if "bootable" in params:
            query = query.where(Volume.bootable == _truthy(params["bootable"]))
        with self.db.session(readonly=True) as session:
            rows = _page(session, query, Volume, params)
            types = self._types(session, {v.volume_type_id for v in rows["items"]})
            items = [self.volume_view(v, ctx, types.get(v.volume_type_id or ""), version,
                                      self._attached(session, ctx, v.id), shown=True)
                     if detail else {"id": v.id, "name": v.name,
                                     "links": self.links("volumes", v.project_id, v.id)}
                     for v in rows["items"]]
        out: dict[str, Any] = {"volumes": items}
        if rows["next"]:
            out["volumes_links"] = [{"rel": "next", "href": _next_href(url, params,
                                                                       rows["next"])}]
        return out

    def summary(self, ctx: RequestContext, params: dict[str, str],
                version: tuple[int, int]) -> dict[str, Any]:
        """``GET /volumes/summary`` (3.12): count and size of the project's volumes (all
        projects' for an admin asking ``all_tenants``), their metadata from 3.36."""
        if version < (3, 12):
            raise NotFound("The resource could not be found.")
        self.policy.enforce(ctx, "volume:get_all", {"project_id": ctx.project_id})
        query = select(Volume)
        if not (ctx.is_admin and _truthy(params.get("all_tenants"))):
            query = query.where(Volume.project_id == ctx.project_id)
        with self.db.session(readonly=True) as session:
            rows = list(session.scalars(query))
        out: dict[str, Any] = {"total_count": len(rows),
                               "total_size": sum(v.size for v in rows)}
        if version >= (3, 36):
            meta: dict[str, list[str]] = {}
            for v in rows:
                for key, value in (v.metadata_ or {}).items():
                    if value not in meta.setdefault(key, []):
                        meta[key].append(value)
            out["metadata"] = meta
        return out

    def update(self, ctx: RequestContext, volume_id: str, body: Any,
               version: tuple[int, int]) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("volume"), dict):
            raise BadRequest("Missing required element 'volume' in request body.")
        ref = body["volume"]
        with self.db.session() as session:
            vol = self.get_volume_row(session, ctx, volume_id)
            self.policy.enforce(ctx, "volume:update", {"project_id": vol.project_id})
            for key in ("name", "description", "display_name", "display_description"):
                if key in ref:
                    setattr(vol, key.replace("display_", ""), _text(ref, key))
            if "metadata" in ref:
                vol.metadata_ = _metadata(ref)
            vtype = session.get(VolumeType, vol.volume_type_id) if vol.volume_type_id else None
            session.flush()
            return self.volume_view(vol, ctx, vtype, version,
                                    self._attached(session, ctx, vol.id))

    def delete(self, ctx: RequestContext, volume_id: str, cascade: bool = False) -> None:
        with self.db.session() as session:
            vol = self.get_volume_row(session, ctx, volume_id)
            self.policy.enforce(ctx, "volume:delete", {"project_id": vol.project_id})
            snaps = session.scalar(select(func.count()).select_from(Snapshot).where(
                Snapshot.volume_id == volume_id))
            refusals = volume_delete_refusals(vol, snaps, cascade)
            if refusals:
                raise refusals[0][1]
            if snaps:
                self._cascade_snapshots(session, volume_id)
            previous = vol.status
            if not self.set_status(session, Volume, volume_id, vol.status, "deleting"):
                raise BadRequest(f"Volume {volume_id} changed state; try again.")
            if vol.host is None:  # never placed: nothing in any store
                session.delete(vol)
                if vol.quota_committed:
                    self.quota.release(session, vol.project_id,
                                       volume_deltas(type_name(session, vol), vol.size))
                events.emit(session, "volume", "volume.delete.end", volume_id, vol.project_id)
                return
            enqueue(session, "volume.delete", {
                "volume_id": volume_id, "cascade": bool(snaps), "previous": previous,
                "request_id": ctx.request_id}, target=self.target_of(vol.host),
                max_attempts=3)
            events.emit(session, "volume", "volume.delete.start", volume_id, vol.project_id)

    def _cascade_snapshots(self, session: Session, volume_id: str) -> None:
        """``cascade=true``: every snapshot of the volume goes ``deleting`` with it (the
        volume's delete job removes them first); one that is busy refuses the request."""
        for snap in session.scalars(select(Snapshot).where(Snapshot.volume_id == volume_id)):
            if snap.status not in SNAPSHOT_DELETABLE or not self.set_status(
                    session, Snapshot, snap.id, snap.status, "deleting"):
                raise BadRequest(f"Invalid volume: Snapshot {snap.id} of volume {volume_id} "
                                 f"must be available or error to be deleted with it "
                                 f"(status {snap.status}).")

    @staticmethod
    def set_status(session: Session, model: type, row_id: str, expected: str, new: str,
                   **values: Any) -> bool:
        """A conditional state change; False when the row is not in ``expected``, or
        when it is a volume a running migration holds (``available``/``in-use`` to
        anything else: the migration copies its data and owns its status)."""
        where = [model.id == row_id, model.status == expected]
        if model is Volume and expected in ("available", "in-use") and new != expected \
                and "migration_status" not in values:
            where.append(or_(Volume.migration_status.is_(None),
                             Volume.migration_status.notin_(MIGRATING)))
        result = session.execute(update(model).where(*where).values(
            status=new, updated_at=datetime.now(UTC), **values))
        return result.rowcount == 1

    # ------------------------------------------------------------ metadata
    def _meta_row(self, session: Session, ctx: RequestContext, kind: str,
                  row_id: str, read: bool = False) -> Volume | Snapshot:
        if kind == "volumes":
            row: Volume | Snapshot = self.get_volume_row(session, ctx, row_id)
            rule = "volume:get_volume_metadata" if read else "volume:update"
        else:
            row = self.get_snapshot_row(session, ctx, row_id)
            rule = "volume:get_snapshot" if read else "volume:update_snapshot"
        self.policy.enforce(ctx, rule, {"project_id": row.project_id})
        return row

    def get_metadata(self, ctx: RequestContext, kind: str, row_id: str) -> dict[str, str]:
        with self.db.session(readonly=True) as session:
            return dict(self._meta_row(session, ctx, kind, row_id, read=True).metadata_ or {})

    def set_metadata(self, ctx: RequestContext, kind: str, row_id: str, body: Any,
                     replace: bool) -> dict[str, str]:
        """POST merges the keys given; PUT replaces the whole set."""
        if not isinstance(body, dict):
            raise BadRequest("Missing required element 'metadata' in request body.")
        new = _metadata(body)
        with self.db.session() as session:
            row = self._meta_row(session, ctx, kind, row_id)
            row.metadata_ = new if replace else {**(row.metadata_ or {}), **new}
            return dict(row.metadata_)

    def delete_metadata_key(self, ctx: RequestContext, kind: str, row_id: str,
                            key: str) -> None:
        with self.db.session() as session:
            row = self._meta_row(session, ctx, kind, row_id)
            meta = dict(row.metadata_ or {})
            if key not in meta:
                raise NotFound(f"Metadata key {key} not found.")
            del meta[key]
            row.metadata_ = meta

    # ------------------------------------------------------------ snapshots
    def create_snapshot(self, ctx: RequestContext, body: Any, version: tuple[int, int],
                        taken_by_compute: bool = False) -> dict:
        """``taken_by_compute``: the record only (``creating``, quota reserved); compute
        takes the disk snapshot of the running guest and then calls
        ``strato.volume.manager.finish_snapshot`` (Cinder's assisted snapshots)."""
        if not isinstance(body, dict) or not isinstance(body.get("snapshot"), dict):
            raise BadRequest("Missing required element 'snapshot' in request body.")
        ref = _display(body["snapshot"])
        name, description = _text(ref, "name"), _text(ref, "description")
        metadata = _metadata(ref)
        volume_id = ref.get("volume_id")
        if volume_id is None:  # Cinder looks the null up, and finds nothing
            raise NotFound("Volume None could not be found.")
        if not isinstance(volume_id, str):
            raise BadRequest("Invalid input for field 'volume_id'.")
        # Explicit "force": false refuses an in-use volume; absent means allowed (3.66).
        force = _flag(ref["force"], "force") if "force" in ref else True
        with self.db.session() as session:
            vol = self.get_volume_row(session, ctx, volume_id)
            self.policy.enforce(ctx, "volume:create_snapshot", {"project_id": vol.project_id})
            if vol.status == "maintenance" or vol.migration_status in ("migrating",
                                                                       "starting"):
                raise BadRequest(f"Invalid volume: Volume {volume_id} is in maintenance or "
                                 "migrating.")
            allowed = ("available", "in-use") if force else ("available",)
            if vol.status not in allowed:
                raise BadRequest(f"Invalid volume: Volume {volume_id} status must be "
                                 f"{' or '.join(allowed)}, but current status is: "
                                 f"{vol.status}.")
            reservations = self.quota.reserve(
                session, vol.project_id, snapshot_deltas(type_name(session, vol), vol.size))
            snap = Snapshot(id=str(uuid.uuid4()), volume_id=volume_id, name=name,
                            description=description, project_id=vol.project_id,
                            user_id=ctx.user_id, size=vol.size, status="creating",
                            progress="0%", metadata_=metadata, reservations=reservations,
                            image_metadata={})
            session.add(snap)
            if not taken_by_compute:
                enqueue(session, "snapshot.create", {"snapshot_id": snap.id,
                                                     "request_id": ctx.request_id},
                        target=self.target_of(vol.host), max_attempts=3)
            events.emit(session, "volume", "snapshot.create.start", snap.id, vol.project_id,
                        volume_id=volume_id)
            session.flush()
            return self.snapshot_view(snap, version)

    def show_snapshot(self, ctx: RequestContext, snapshot_id: str,
                      version: tuple[int, int]) -> dict:
        with self.db.session(readonly=True) as session:
            snap = self.get_snapshot_row(session, ctx, snapshot_id)
            self.policy.enforce(ctx, "volume:get_snapshot", {"project_id": snap.project_id})
            return self.snapshot_view(snap, version, shown=True)

    def list_snapshots(self, ctx: RequestContext, params: dict[str, str],
                       version: tuple[int, int], detail: bool = True, url: str = "") -> dict:
        self.policy.enforce(ctx, "volume:get_all_snapshots", {"project_id": ctx.project_id})
        query = select(Snapshot)
        if not (ctx.is_admin and _truthy(params.get("all_tenants"))):
            query = query.where(Snapshot.project_id == ctx.project_id)
        elif params.get("project_id"):
            query = query.where(Snapshot.project_id == params["project_id"])
        for key in ("name", "status", "volume_id"):
            if key in params:
                query = query.where(getattr(Snapshot, key) == params[key])
        with self.db.session(readonly=True) as session:
            rows = _page(session, query, Snapshot, params)
            out: dict[str, Any] = {"snapshots": [
                self.snapshot_view(s, version, detail, shown=detail) for s in rows["items"]]}
        if rows["next"]:
            out["snapshots_links"] = [{"rel": "next", "href": _next_href(url, params,
                                                                         rows["next"])}]
        return out

    def update_snapshot(self, ctx: RequestContext, snapshot_id: str, body: Any,
                        version: tuple[int, int]) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("snapshot"), dict):
            raise BadRequest("Missing required element 'snapshot' in request body.")
        ref = _display(body["snapshot"])
        with self.db.session() as session:
            snap = self.get_snapshot_row(session, ctx, snapshot_id)
            self.policy.enforce(ctx, "volume:update_snapshot", {"project_id": snap.project_id})
            for key in ("name", "description"):
                if key in ref:
                    setattr(snap, key, _text(ref, key))
            if "metadata" in ref:
                snap.metadata_ = _metadata(ref)
            session.flush()
            return self.snapshot_view(snap, version)

    def delete_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        with self.db.session() as session:
            snap = self.get_snapshot_row(session, ctx, snapshot_id)
            self.policy.enforce(ctx, "volume:delete_snapshot", {"project_id": snap.project_id})
            refusals = snapshot_delete_refusals(snap)
            if refusals:
                raise refusals[0][1]
            if not self.set_status(session, Snapshot, snapshot_id, snap.status, "deleting"):
                raise BadRequest(f"Snapshot {snapshot_id} changed state; try again.")
            vol = session.get(Volume, snap.volume_id)
            enqueue(session, "snapshot.delete", {"snapshot_id": snapshot_id,
                                                 "request_id": ctx.request_id},
                    target=self.target_of(vol.host), max_attempts=3)
            events.emit(session, "volume", "snapshot.delete.start", snapshot_id,
                        snap.project_id)

    # ------------------------------------------------------------ types and quotas
    def type_view(self, t: VolumeType, ctx: RequestContext, call: str = "show"
                  ) -> dict[str, Any]:
        """Cinder's type views: ``show`` (show, list: the extra specs a project may see,
        the QoS id for admins), ``create`` and ``update`` (the older view, all specs;
        create adds the access flag as show does)."""
        view: dict[str, Any] = {"id": t.id, "name": t.name, "description": t.description,
                                "is_public": t.is_public}
        specs = dict(t.extra_specs or {})
        if call == "show":
            view["extra_specs"] = specs if ctx.is_admin else {
                k: v for k, v in specs.items() if k in USER_VISIBLE_SPECS}
            if ctx.is_admin:
                view["qos_specs_id"] = t.qos_specs_id
        else:
            view["extra_specs"] = specs
        if call in ("show", "create"):
            view["os-volume-type-access:is_public"] = t.is_public
        return view

    def list_types(self, ctx: RequestContext, params: dict[str, str] | None = None
                   ) -> list[dict]:
        """Cinder's filter: a project sees the public types and the private ones it was
        given; an admin sees the public ones (``is_public`` absent or true), the private
        ones (false) or all (``is_public=None``)."""
        params = params or {}
        with self.db.session() as session:
            self.volume_type(session, None)
            query = select(VolumeType).order_by(VolumeType.name)
            if ctx.is_admin:
                wanted = _is_public_filter(params.get("is_public"))
                if wanted is True:
                    query = query.where(or_(VolumeType.is_public == true(),
                                            self._has_access(ctx.project_id)))
                elif wanted is False:
                    query = query.where(VolumeType.is_public == False)  # noqa: E712
            else:
                query = query.where(self.visible_type_clause(ctx))
            return [self.type_view(t, ctx) for t in session.scalars(query)]

    def show_type(self, ctx: RequestContext, ref: str) -> dict:
        with self.db.session() as session:
            if ref == "default":
                ref = self.conf.volume.default_volume_type
            return self.type_view(self.volume_type(session, ref, ctx), ctx)

    @staticmethod
    def _specs(value: Any) -> dict[str, str]:
        return string_map(value, "extra_specs")

    def create_type(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "volume_extension:types_manage", {})
        ref = body.get("volume_type") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'volume_type' in request body.")
        name = _text(ref, "name")
        if not name or not name.strip():
            raise BadRequest("Volume type name can not be empty.")
        vtype = VolumeType(
            id=str(uuid.uuid4()), name=name, description=_text(ref, "description"),
            is_public=_flag(ref.get("os-volume-type-access:is_public",
                                    ref.get("is_public", True)), "is_public"),
            extra_specs=self._specs(ref.get("extra_specs") or {}))
        with self.db.session() as session:
            if session.scalars(select(VolumeType).where(VolumeType.name == name)).first():
                raise Conflict(f"Volume Type {name} already exists.")
            session.add(vtype)
        return self.type_view(vtype, ctx, "create")

    def update_type(self, ctx: RequestContext, type_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "volume_extension:types_manage", {})
        ref = body.get("volume_type") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'volume_type' in request body.")
        with self.db.session() as session:
            vtype = self.volume_type(session, type_id)
            if "name" in ref:
                vtype.name = _text(ref, "name") or vtype.name
            if "description" in ref:
                vtype.description = _text(ref, "description")
            # Cinder's update takes is_public; the SDK sends the create key.
            for key in ("is_public", "os-volume-type-access:is_public"):
                if key in ref:
                    vtype.is_public = _flag(ref[key], "is_public")
            return self.type_view(vtype, ctx, "update")

    def delete_type(self, ctx: RequestContext, type_id: str) -> None:
        self.policy.enforce(ctx, "volume_extension:types_manage", {})
        with self.db.session() as session:
            vtype = self.volume_type(session, type_id)
            if vtype.name == self.conf.volume.default_volume_type:
                raise BadRequest("The default volume type cannot be deleted.")
            if session.scalars(select(Volume.id).where(
                    Volume.volume_type_id == vtype.id)).first():
                raise BadRequest(f"Target volume type {vtype.id} is still in use.")
            session.execute(sa_delete(VolumeTypeProject).where(
                VolumeTypeProject.volume_type_id == vtype.id))
            session.delete(vtype)

    def extra_specs(self, ctx: RequestContext, type_id: str, body: Any = None,
                    delete_key: str | None = None) -> dict[str, str]:
        """GET (no body), POST (merge ``extra_specs``), DELETE one key."""
        if body is not None or delete_key is not None:
            self.policy.enforce(ctx, "volume_extension:types_manage", {})
        with self.db.session() as session:
            vtype = self.volume_type(session, type_id, ctx)
            specs = dict(vtype.extra_specs or {})
            if body is not None:
                ref = body.get("extra_specs") if isinstance(body, dict) else None
                specs.update(self._specs(ref))
            if delete_key is not None:
                if delete_key not in specs:
                    raise NotFound(f"Volume type {type_id} has no extra spec {delete_key}.")
                del specs[delete_key]
            vtype.extra_specs = specs
            return specs

    # ------------------------------------------------------------ private type access
    @staticmethod
    def _has_access(project_id: str | None) -> Any:
        return exists().where(VolumeTypeProject.volume_type_id == VolumeType.id,
                              VolumeTypeProject.project_id == project_id)

    def visible_type_clause(self, ctx: RequestContext) -> Any:
        """The types ``ctx`` may see and use: all for an admin, else the public ones and
        the private ones its project was given (Cinder's _volume_type_get_query)."""
        if ctx.is_admin:
            return true()
        return or_(VolumeType.is_public == true(), self._has_access(ctx.project_id))

    def type_access(self, ctx: RequestContext, type_id: str) -> list[dict[str, str]]:
        """``GET /types/{id}/os-volume-type-access``."""
        self.policy.enforce(ctx, "volume_extension:volume_type_access:get_all_for_type", {})
        with self.db.session(readonly=True) as session:
            vtype = self.volume_type(session, type_id, ctx)
            if vtype.is_public:
                raise NotFound("Access list not available for public volume types.")
            rows = session.scalars(select(VolumeTypeProject).where(
                VolumeTypeProject.volume_type_id == vtype.id).order_by(
                VolumeTypeProject.project_id))
            return [{"volume_type_id": vtype.id, "project_id": r.project_id} for r in rows]

    def type_access_action(self, ctx: RequestContext, type_id: str, body: Any) -> None:
        """``POST /types/{id}/action``: addProjectAccess / removeProjectAccess."""
        action = next(iter(body), None) if isinstance(body, dict) and len(body) == 1 \
            else None
        if action not in ("addProjectAccess", "removeProjectAccess"):
            raise BadRequest("There is no such action: the volume type actions are "
                             "addProjectAccess and removeProjectAccess.")
        self.policy.enforce(ctx, f"volume_extension:volume_type_access:{action}", {})
        ref = body[action]
        project = ref.get("project") if isinstance(ref, dict) else None
        if not isinstance(ref, dict) or set(ref) != {"project"} or not isinstance(
                project, str) or not 1 <= len(project) <= 255:
            raise BadRequest(f"Invalid input for field '{action}': an object with one "
                             "'project' (a string of 1 to 255 characters) is required.")
        with self.db.session() as session:
            vtype = self.volume_type(session, type_id, ctx)
            row = session.get(VolumeTypeProject, (vtype.id, project))
            if action == "removeProjectAccess":
                if row is None:
                    raise NotFound(f"Volume type access not found for {vtype.id} / "
                                   f"{project} combination.")
                session.delete(row)
                return
            if vtype.is_public:
                raise BadRequest("Invalid volume type: Type access modification is not "
                                 "applicable to public volume type.")
            if row is not None:
                raise Conflict(f"Volume type access for {vtype.id} / {project} "
                               "combination already exists.")
            session.add(VolumeTypeProject(volume_type_id=vtype.id, project_id=project))

    def _quota_resources(self, session: Session) -> list[str]:
        """Cinder's resources: the totals and, for every type, its own three."""
        names = [t.name for t in session.scalars(select(VolumeType))]
        return sorted([*self.quota.defaults, *(f"{r}_{n}" for n in names
                                               for r in ("volumes", "gigabytes",
                                                         "snapshots"))])

    def quota_set(self, ctx: RequestContext, project_id: str, usage: bool,
                  defaults: bool = False) -> dict:
        self.policy.enforce(ctx, "volume_extension:quotas:show", {"project_id": project_id})
        with self.db.session(readonly=True) as session:
            limits = {} if defaults else self.quota.limits(session, project_id)
            used = {} if defaults else self.quota.usage(session, project_id)
            resources = self._quota_resources(session)
        body: dict[str, Any] = {"id": project_id}
        for resource in resources:
            limit = limits.get(resource, self.quota.default_for(resource))
            if usage:
                row = used.get(resource)
                body[resource] = {"limit": limit, "in_use": row.in_use if row else 0,
                                  "reserved": row.reserved if row else 0, "allocated": 0}
            else:
                body[resource] = limit
        return body

    def update_quota(self, ctx: RequestContext, project_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "volume_extension:quotas:update", {"project_id": project_id})
        ref = body.get("quota_set") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'quota_set' in request body.")
        with self.db.session() as session:
            for resource, value in ref.items():
                if resource == "id":
                    continue
                if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                    raise BadRequest(f"Quota limit for {resource} must be an integer >= -1.")
                self.quota.set_limit(session, project_id, resource, value)
        out = self.quota_set(ctx, project_id, usage=False)
        del out["id"]  # Cinder's update answers the limits alone
        return out

    def delete_quota(self, ctx: RequestContext, project_id: str) -> None:
        """Back to the defaults: the project's own volume limits go."""
        self.policy.enforce(ctx, "volume_extension:quotas:delete", {"project_id": project_id})
        with self.db.session() as session:
            resources = set(self._quota_resources(session))
            for row in session.scalars(select(QuotaLimit).where(
                    QuotaLimit.project_id == project_id)):
                if row.resource in resources or row.resource.startswith(
                        ("volumes_", "gigabytes_", "snapshots_")):
                    session.delete(row)


def volume_delete_refusals(vol: Volume, snapshots: int, cascade: bool = False
                           ) -> list[tuple[str, StratoError]]:
    """Why Cinder's delete refuses ``vol`` now, as (reason, error) in the order the delete
    checks them; [] when it may go.  The one predicate the delete and the lineage API's
    delete blockers share, so the two never disagree.  ``snapshots``: how many it has."""
    out: list[tuple[str, StratoError]] = []
    if vol.status not in DELETABLE or vol.migration_status in MIGRATING:
        reason = "attached" if vol.status == "in-use" else "busy"
        out.append((reason, BadRequest(
            f"Invalid volume: Volume status must be available or error "
            f"or error_restoring or error_extending or error_managing "
            f"or error_deleting "
            f"and must not be migrating, attached, belong to a group, "
            f"have snapshots or be disassociated from snapshots after "
            f"volume transfer (status {vol.status}).")))
    if snapshots and not cascade:
        out.append(("has_snapshots", BadRequest(
            f"Invalid volume: Volume {vol.id} still has {snapshots} dependent snapshots.")))
    return out


def snapshot_delete_refusals(snap: Snapshot) -> list[tuple[str, StratoError]]:
    """Why the snapshot delete refuses ``snap`` at once (its status); clones that need it
    refuse later, in the job (``RBDDriver.snapshot_has_clones``), as Cinder's do."""
    if snap.status in SNAPSHOT_DELETABLE:
        return []
    return [("busy", BadRequest(f"Invalid snapshot: Snapshot status must be available or "
                                f"error (status {snap.status})."))]


def _is_public_filter(value: str | None) -> bool | None:
    """Cinder's _parse_is_public: absent is true, "None" is no filter."""
    if value is None:
        return True
    if value.lower() == "none":
        return None
    if value.lower() in ("true", "1", "yes", "on", "y", "t"):
        return True
    if value.lower() in ("false", "0", "no", "off", "n", "f"):
        return False
    raise BadRequest(f"Invalid is_public filter [{value}]")


def _truthy(value: str | None) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _page(session: Session, query: Any, model: type, params: dict[str, str]) -> dict:
    """sort (``sort=key:dir`` or sort_key/sort_dir), limit and marker, Cinder-style."""
    keys: list[tuple[str, str]] = []
    if params.get("sort"):
        for item in params["sort"].split(","):
            key, _, direction = item.partition(":")
            keys.append((key.strip(), direction or "desc"))
    elif params.get("sort_key"):
        keys.append((params["sort_key"], params.get("sort_dir", "desc")))
    keys.append(("created_at", "desc"))
    keys.append(("id", "desc"))
    for key, direction in keys:
        key = SORT_ALIASES.get(key, key)
        if key not in ("name", "description", "status", "size", "created_at",
                       "updated_at", "id") or direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort key or direction: {key}:{direction}.")
        column = getattr(model, key)
        query = query.order_by(column.asc() if direction == "asc" else column.desc())
    items = list(session.scalars(query))
    if params.get("marker"):
        ids = [i.id for i in items]
        if params["marker"] not in ids:  # Cinder: MarkerNotFound is a 404
            raise NotFound(f"Marker {params['marker']} could not be found.")
        items = items[ids.index(params["marker"]) + 1:]
    if params.get("offset") is not None:  # Cinder: skip that many after the marker
        items = items[query_int("offset", params["offset"]):]
    limit = params.get("limit")
    nxt = None
    if limit is not None:
        query_int("limit", limit)
        items = items[:int(limit)]
        # Cinder links a next page whenever a page is full, even if it is the last one.
        if items and len(items) == int(limit):
            nxt = items[-1].id
    return {"items": items, "next": nxt}


# Cinder's older column names, still accepted as sort keys.
SORT_ALIASES = {"display_name": "name", "display_description": "description"}


def _next_href(url: str, params: dict[str, str], marker: str) -> str:
    """The full URL of the next page: the request's own parameters, the new marker."""
    rest = {k: v for k, v in params.items() if k != "marker"}
    return f"{url}?{urlencode({**rest, 'marker': marker})}"
