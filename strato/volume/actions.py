"""``POST /volumes/{id}/action`` and the attachments API: each a state transition.

Immediate actions (bootable, read-only, reset-state, reserve…) are one conditional
update; long ones (extend, upload to image) set a transitional status and enqueue a
job for the volume's backend in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from strato import events
from strato.api.unimplemented import REFERENCE_VOLUME_ACTIONS, unsupported_action
from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound
from strato.jobs.queue import enqueue
from strato.storage import crash
from strato.validation import string_map
from strato.volume import qos
from strato.volume.api import VolumeAPI, _flag, _text, iso, type_name, volume_deltas
from strato.volume.migration import VolumeMigration, migrating
from strato.volume.models import Attachment, Snapshot, Volume
from strato.volume.scheduler import BackendState, capabilities_filter
from strato.volume.scheduler import Request as SchedRequest

STATUSES = ("creating", "available", "attaching", "in-use", "deleting", "error",
            "error_deleting", "error_restoring", "error_extending", "detaching",
            "downloading", "uploading", "extending", "reserved", "maintenance", "reverting",
            "awaiting-transfer")
ATTACH_STATUSES = ("attached", "detached")
SNAPSHOT_STATUSES = ("creating", "available", "deleting", "error", "error_deleting",
                     "restoring", "unmanaging", "backing-up")
# Image properties Cinder never copies from a volume into a new image.
NOT_COPIED = ("checksum", "container_format", "disk_format", "min_disk", "min_ram", "size",
              "image_id", "image_name", "os_hash_algo", "os_hash_value", "virtual_size")


def attachment_request(body: Any) -> dict[str, Any]:
    """``POST /attachments`` as Cinder's API reference gives it: ``volume_uuid``
    (required), ``instance_uuid``, ``connector`` (an object or null) and ``mode``
    (``rw``/``ro``, 3.54).  ``volume_id`` is accepted for ``volume_uuid`` (what
    strato's compute service sends)."""
    ref = body.get("attachment") if isinstance(body, dict) else None
    if not isinstance(ref, dict):
        raise BadRequest("Missing required element 'attachment' in request body.")
    volume = ref.get("volume_uuid", ref.get("volume_id"))
    if not isinstance(volume, str) or not volume:
        raise BadRequest("Invalid input for field 'volume_uuid': a volume id is required.")
    instance = ref.get("instance_uuid")
    if instance is not None and (not isinstance(instance, str) or len(instance) > 36):
        raise BadRequest("Invalid input for field 'instance_uuid': a server id is "
                         "required.")
    connector = ref.get("connector")
    if connector is not None and not isinstance(connector, dict):
        raise BadRequest("Invalid input for field 'connector': an object is required.")
    mode = ref.get("mode") or "rw"
    if mode not in ("rw", "ro"):
        raise BadRequest(f"Invalid input for field 'mode': {str(mode)[:16]!r} is not one "
                         "of 'rw', 'ro'.")
    return {"volume_uuid": volume, "instance_uuid": instance, "connector": connector,
            "mode": mode}


class VolumeActions:
    def __init__(self, api: VolumeAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    def dispatch(self, ctx: RequestContext, volume_id: str, body: Any,
                 version: tuple[int, int]) -> dict[str, Any] | None:
        if not isinstance(body, dict) or len(body) != 1:
            raise BadRequest("The action body must hold exactly one action.")
        (name, args), = body.items()
        handler = getattr(self, "_" + name.replace("-", "_"), None) \
            if name in REFERENCE_VOLUME_ACTIONS else None
        if handler is None:  # 501 if Cinder has it (for a volume that exists), else 400
            if name in REFERENCE_VOLUME_ACTIONS:
                with self.db.session(readonly=True) as session:
                    self.api.get_volume_row(session, ctx, volume_id)
            raise unsupported_action(name, REFERENCE_VOLUME_ACTIONS)
        return handler(ctx, volume_id, args if args is not None else {}, version)

    def _load(self, session: Any, ctx: RequestContext, volume_id: str,
              rule: str = "volume:update") -> Volume:
        vol = self.api.get_volume_row(session, ctx, volume_id)
        self.policy.enforce(ctx, rule, {"project_id": vol.project_id})
        return vol

    def _transition(self, session: Any, vol: Volume, allowed: tuple[str, ...], new: str,
                    what: str, **values: Any) -> None:
        if migrating(vol):
            raise BadRequest(f"Invalid volume: {what} is refused while the volume is "
                             "migrating.")
        if vol.status not in allowed or not self.api.set_status(
                session, Volume, vol.id, vol.status, new, **values):
            raise BadRequest(f"Invalid volume: {what} needs status "
                             f"{' or '.join(allowed)}; the volume is {vol.status}.")

    # ------------------------------------------------------------ simple flags
    def _os_set_bootable(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            vol.bootable = _flag(args.get("bootable") if isinstance(args, dict) else None,
                                 "bootable")

    def _os_update_readonly_flag(self, ctx: RequestContext, volume_id: str, args: Any,
                                 v: Any) -> None:
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id,
                             "volume_extension:volume_actions:update_readonly_flag")
            vol.readonly = _flag(args.get("readonly") if isinstance(args, dict) else None,
                                 "readonly")

    def _os_reset_status(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        """Admins put a stuck volume where they know it is (no store work)."""
        self.policy.enforce(ctx, "volume_extension:volume_admin_actions:reset_status", {})
        if not isinstance(args, dict):
            raise BadRequest("os-reset_status needs a status.")
        with self.db.session() as session:
            vol = self.api.get_volume_row(session, ctx, volume_id)
            if "status" in args:
                if args["status"] not in STATUSES:
                    raise BadRequest(f"Invalid status {args['status']!r}.")
                vol.status = args["status"]
            if "attach_status" in args:
                if args["attach_status"] not in ATTACH_STATUSES:
                    raise BadRequest(f"Invalid attach_status {args['attach_status']!r}.")
                vol.attach_status = args["attach_status"]
            if "migration_status" in args:
                vol.migration_status = args["migration_status"]
            vol.updated_at = datetime.now(UTC)
            events.emit(session, "volume", "volume.reset_status", vol.id, vol.project_id,
                        by=ctx.user_id, **{k: args[k] for k in args if isinstance(args[k],
                                                                                   str)})

    def _os_force_delete(self, ctx: RequestContext, volume_id: str, args: Any,
                         v: Any) -> None:
        """Admins delete a volume in any state but attached (Cinder's force delete)."""
        self.policy.enforce(ctx, "volume_extension:volume_admin_actions:force_delete", {})
        with self.db.session() as session:
            vol = self.api.get_volume_row(session, ctx, volume_id)
            if self._attachments(session, volume_id):
                raise BadRequest(f"Invalid volume: Volume {volume_id} is still attached, "
                                 "detach it first.")
            if vol.status not in ("available", "error"):
                self.api.set_status(session, Volume, volume_id, vol.status, "error")
        self.api.delete(ctx, volume_id, cascade=True)

    def _os_force_detach(self, ctx: RequestContext, volume_id: str, args: Any,
                         v: Any) -> None:
        """Admins drop an attachment (or all) whatever the volume's state."""
        self.policy.enforce(ctx, "volume_extension:volume_admin_actions:force_detach", {})
        attachment_id = args.get("attachment_id") if isinstance(args, dict) else None
        with self.db.session() as session:
            vol = self.api.get_volume_row(session, ctx, volume_id)
            rows = self._attachments(session, volume_id)
            if attachment_id:
                rows = [a for a in rows if a.id == attachment_id]
                if not rows:
                    raise NotFound(f"Volume attachment {attachment_id} could not be found.")
            for row in rows:
                session.delete(row)
            session.flush()
            remaining = self._attachments(session, volume_id, "attached")
            vol.status = "in-use" if remaining else "available"
            vol.attach_status = "attached" if remaining else "detached"
            vol.updated_at = datetime.now(UTC)

    def _os_retype(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        """A new type for a volume its backend already satisfies (no data moves).  A
        type that needs another backend is 400 with ``migration_policy`` ``never``
        (Cinder's default); with ``on-demand`` the volume migrates there
        (``strato.volume.migration``: ``retyping`` until the copy is swapped in)."""
        new_ref = args.get("new_type") if isinstance(args, dict) else None
        if not isinstance(new_ref, str) or not new_ref:
            raise BadRequest("os-retype needs a new_type.")
        policy = args.get("migration_policy") or "never"
        if policy not in ("never", "on-demand"):
            raise BadRequest(f"Invalid migration_policy {str(policy)[:16]!r}.")
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id, "volume:retype")
            new = self.api.volume_type(session, new_ref, ctx)
            if new.id == vol.volume_type_id:
                raise BadRequest("Invalid input: the volume already has type "
                                 f"{new.name}.")
            if vol.status not in ("available", "in-use") or vol.host is None \
                    or migrating(vol):
                raise BadRequest(f"Invalid volume: retype needs status available or "
                                 f"in-use and no migration running; the volume is "
                                 f"{vol.status}.")
            backend = self.api.backends[self.api.backend_of(vol.host)]
            state = BackendState(backend, 0, 0)
            if not capabilities_filter(state, SchedRequest(vol.size, None,
                                                           dict(new.extra_specs or {}))):
                if policy == "never":
                    raise BadRequest(f"Invalid volume: volume type {new.name} needs "
                                     "another backend and migration_policy is never.")
                mig = VolumeMigration(self.api)
                dest = mig.retype_backend(session, vol, new)
                mig._check(session, vol, dest)
                mig.start(session, ctx, vol, dest, "retyping", new_type=new)
                return
            old_name = type_name(session, vol)
            gained = {f"volumes_{new.name}": 1, f"gigabytes_{new.name}": vol.size}
            self.api.quota.commit(session, self.api.quota.reserve(
                session, vol.project_id, gained))
            self.api.quota.release(session, vol.project_id, {
                f"volumes_{old_name}": 1, f"gigabytes_{old_name}": vol.size})
            vol.volume_type_id = new.id
            vol.updated_at = datetime.now(UTC)
            events.emit(session, "volume", "volume.retype", vol.id, vol.project_id,
                        old_type=old_name, new_type=new.name)

    def _os_migrate_volume(self, ctx: RequestContext, volume_id: str, args: Any,
                           v: tuple[int, int]) -> None:
        VolumeMigration(self.api).migrate_volume(ctx, volume_id, args, v)

    # ------------------------------------------------------------ image metadata
    def _image_meta(self, session: Any, ctx: RequestContext, volume_id: str,
                    rule: str) -> Volume:
        vol = self.api.get_volume_row(session, ctx, volume_id)
        self.policy.enforce(ctx, rule, {"project_id": vol.project_id})
        return vol

    def _os_set_image_metadata(self, ctx: RequestContext, volume_id: str, args: Any,
                               v: Any) -> dict[str, Any]:
        """Cinder's volume_glance_metadata: merge string items, answer them all."""
        meta = args.get("metadata") if isinstance(args, dict) else None
        if not isinstance(meta, dict):
            raise BadRequest("os-set_image_metadata needs a metadata object.")
        new = string_map(meta, "metadata")
        with self.db.session() as session:
            vol = self._image_meta(session, ctx, volume_id,
                                   "volume_extension:volume_image_metadata:set")
            vol.image_metadata = {**(vol.image_metadata or {}), **new}
            return {"metadata": {k: str(val) for k, val in vol.image_metadata.items()}}

    def _os_unset_image_metadata(self, ctx: RequestContext, volume_id: str, args: Any,
                                 v: Any) -> dict[str, Any]:
        key = args.get("key") if isinstance(args, dict) else None
        if not isinstance(key, str) or not key:
            raise BadRequest("os-unset_image_metadata needs a key.")
        with self.db.session() as session:
            vol = self._image_meta(session, ctx, volume_id,
                                   "volume_extension:volume_image_metadata:remove")
            meta = dict(vol.image_metadata or {})
            if key not in meta:
                raise NotFound(f"Glance metadata for volume {volume_id} has no key {key}.")
            del meta[key]
            vol.image_metadata = meta
        return {}

    def _os_show_image_metadata(self, ctx: RequestContext, volume_id: str, args: Any,
                                v: Any) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            vol = self._image_meta(session, ctx, volume_id,
                                   "volume_extension:volume_image_metadata:show")
            return {"metadata": {k: str(val) for k, val in
                                 (vol.image_metadata or {}).items()}}

    # ------------------------------------------------------------ snapshot actions
    def snapshot_action(self, ctx: RequestContext, snapshot_id: str, body: Any) -> None:
        """``POST /snapshots/{id}/action``: reset status and force delete (admins),
        update status (the service that took an assisted snapshot)."""
        (name, args), = body.items()
        args = args if isinstance(args, dict) else {}
        if name == "os-force_delete":
            self.policy.enforce(ctx, "volume_extension:snapshot_admin_actions:force_delete",
                                {})
            with self.db.session() as session:
                snap = self.api.get_snapshot_row(session, ctx, snapshot_id)
                if snap.status not in ("available", "error", "error_deleting"):
                    self.api.set_status(session, Snapshot, snapshot_id, snap.status, "error")
            self.api.delete_snapshot(ctx, snapshot_id)
            return
        if name not in ("os-reset_status", "os-update_snapshot_status"):
            raise BadRequest(f"There is no such action: {name}")
        status = args.get("status")
        if status not in SNAPSHOT_STATUSES:
            raise BadRequest(f"Invalid status {str(status)[:32]!r}.")
        rule = ("volume_extension:snapshot_admin_actions:reset_status"
                if name == "os-reset_status"
                else "snapshot_extension:snapshot_actions:update_snapshot_status")
        with self.db.session() as session:
            snap = self.api.get_snapshot_row(session, ctx, snapshot_id)
            self.policy.enforce(ctx, rule, {"project_id": snap.project_id})
            if name == "os-update_snapshot_status":
                # Cinder: only a snapshot being created or deleted reports progress.
                allowed = {"creating": ("creating", "available", "error"),
                           "deleting": ("deleting", "error_deleting")}
                if status not in allowed.get(snap.status, ()):
                    raise BadRequest(f"Snapshot status {snap.status} not allowed to change "
                                     f"to {status}.")
                if isinstance(args.get("progress"), str):
                    snap.progress = args["progress"]
            snap.status = status
            snap.updated_at = datetime.now(UTC)

    # ------------------------------------------------------------ extend
    def _os_extend(self, ctx: RequestContext, volume_id: str, args: Any,
                   version: tuple[int, int]) -> None:
        new_size = args.get("new_size") if isinstance(args, dict) else None
        if isinstance(new_size, bool) or not str(new_size).isdigit():
            raise BadRequest("os-extend needs new_size, a positive integer.")
        new_size = int(new_size)
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id, "volume:extend")
            if new_size <= vol.size:
                raise BadRequest(f"New size for extend must be greater than current size "
                                 f"(current: {vol.size}, extended: {new_size}).")
            allowed = ("available", "in-use") if version >= (3, 42) else ("available",)
            delta = new_size - vol.size
            deltas = volume_deltas(type_name(session, vol), delta, count=0)
            reservations = self.api.quota.reserve(session, vol.project_id, deltas)
            previous = vol.status
            self._transition(session, vol, allowed, "extending", "extend")
            enqueue(session, "volume.extend", {
                "volume_id": volume_id, "new_size": new_size, "reservations": reservations,
                "previous": previous, "request_id": ctx.request_id},
                target=self.api.target_of(vol.host), max_attempts=3)

    # ------------------------------------------------------------ upload to image
    def _os_volume_upload_image(self, ctx: RequestContext, volume_id: str, args: Any,
                                version: tuple[int, int]) -> dict[str, Any]:
        if not isinstance(args, dict) or not isinstance(args.get("image_name"), str):
            raise BadRequest("os-volume_upload_image needs an image_name.")
        force = _flag(args.get("force", False), "force")
        disk_format = args.get("disk_format", "raw")
        container_format = args.get("container_format", "bare")
        with self.db.session(readonly=True) as session:
            vol = self._load(session, ctx, volume_id)
            allowed = ("available", "in-use") if force else ("available",)
            if vol.status not in allowed:
                raise BadRequest(f"Invalid volume: uploading needs status "
                                 f"{' or '.join(allowed)}; the volume is {vol.status}.")
            props = {k: v for k, v in (vol.image_metadata or {}).items()
                     if k not in NOT_COPIED and isinstance(v, str)}
            status, size = vol.status, vol.size
        image_body: dict[str, Any] = {**props, "name": args["image_name"],
                                      "disk_format": disk_format,
                                      "container_format": container_format,
                                      "min_disk": size}
        for key in ("visibility", "protected"):
            if key in args:
                image_body[key] = args[key]
        record = self.api.images.new_record(ctx, image_body)
        # One transaction: the volume's status, the image (queued before the 202) and
        # the job; a crash leaves all or none of them.
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            self._transition(session, vol, (status,), "uploading", "upload to image",
                             fault=None)
            image = self.api.images.add_record(session, record)
            crash.point("upload-image", "before-job")
            enqueue(session, "volume.upload_image", {
                "volume_id": volume_id, "image_id": image["id"], "previous": status,
                "disk_format": disk_format, "request_id": ctx.request_id},
                target=self.api.target_of(vol.host), max_attempts=3)
        return {"os-volume_upload_image": {
            "id": volume_id, "updated_at": image["updated_at"], "status": "uploading",
            "display_description": None, "size": size, "volume_type": None,
            "image_id": image["id"], "container_format": container_format,
            "disk_format": disk_format, "image_name": args["image_name"]}}

    # ------------------------------------------------------------ revert
    def _revert(self, ctx: RequestContext, volume_id: str, args: Any,
                version: tuple[int, int]) -> None:
        snapshot_id = args.get("snapshot_id") if isinstance(args, dict) else None
        if not isinstance(snapshot_id, str):
            raise BadRequest("revert needs a snapshot_id.")
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            snap = self.api.get_snapshot_row(session, ctx, snapshot_id)
            if snap.volume_id != volume_id:
                raise BadRequest(f"Snapshot {snapshot_id} is not a snapshot of volume "
                                 f"{volume_id}.")
            latest = session.scalars(select(Snapshot).where(
                Snapshot.volume_id == volume_id).order_by(Snapshot.created_at.desc())).first()
            if latest is None or latest.id != snapshot_id:
                raise BadRequest("Invalid snapshot: a volume can only be reverted to its "
                                 "latest snapshot.")
            if snap.status != "available":
                raise BadRequest(f"Invalid snapshot: status must be available, not "
                                 f"{snap.status}.")
            if snap.size != vol.size:
                raise BadRequest("Invalid volume: the volume was extended after the snapshot.")
            self._transition(session, vol, ("available",), "reverting", "revert")
            self.api.set_status(session, Snapshot, snapshot_id, "available", "restoring")
            enqueue(session, "volume.revert", {"volume_id": volume_id,
                                               "snapshot_id": snapshot_id},
                    target=self.api.target_of(vol.host), max_attempts=3)

    # ------------------------------------------------------------ attach bookkeeping
    def _os_reserve(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            allowed = ("available", "in-use") if vol.multiattach else ("available",)
            self._transition(session, vol, allowed, "attaching", "reserve")

    def _os_unreserve(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            attached = self._attachments(session, volume_id, "attached")
            self._transition(session, vol, ("attaching",),
                             "in-use" if attached else "available", "unreserve")

    def _os_begin_detaching(self, ctx: RequestContext, volume_id: str, args: Any,
                            v: Any) -> None:
        with self.db.session() as session:
            self.begin_detaching(ctx, volume_id, session)

    def begin_detaching(self, ctx: RequestContext, volume_id: str, session: Any) -> None:
        """``in-use`` -> ``detaching`` in the caller's transaction (compute's detach
        commits it with its job)."""
        vol = self._load(session, ctx, volume_id)
        self._transition(session, vol, ("in-use",), "detaching", "begin detaching")

    def _os_roll_detaching(self, ctx: RequestContext, volume_id: str, args: Any,
                           v: Any) -> None:
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            if vol.status == "detaching":
                self._transition(session, vol, ("detaching",), "in-use", "roll detaching")

    def _os_initialize_connection(self, ctx: RequestContext, volume_id: str, args: Any,
                                  v: Any) -> dict[str, Any]:
        connector = args.get("connector") if isinstance(args, dict) else None
        if not isinstance(connector, dict):
            raise BadRequest("os-initialize_connection needs a connector.")
        with self.db.session(readonly=True) as session:
            vol = self._load(session, ctx, volume_id)
            if vol.host is None:
                raise BadRequest(f"Volume {volume_id} is not in any backend.")
            return {"connection_info": self.connection_info(vol)}

    def _os_terminate_connection(self, ctx: RequestContext, volume_id: str, args: Any,
                                 v: Any) -> None:
        with self.db.session(readonly=True) as session:
            self._load(session, ctx, volume_id)

    def _os_attach(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        if not isinstance(args, dict) or not (args.get("instance_uuid")
                                              or args.get("host_name")):
            raise BadRequest("os-attach needs an instance_uuid or a host_name.")
        mode = args.get("mode", "rw")
        if mode not in ("rw", "ro"):
            raise BadRequest(f"Invalid attach mode {mode!r}.")
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            if vol.readonly and mode == "rw":
                raise BadRequest("Invalid volume: a read-only volume attaches in 'ro' mode.")
            self._transition(session, vol, ("attaching",), "in-use", "attach",
                             attach_status="attached")
            session.add(Attachment(
                id=str(uuid.uuid4()), volume_id=volume_id, instance_uuid=args.get(
                    "instance_uuid"), attached_host=args.get("host_name"),
                mountpoint=_text(args, "mountpoint"), attach_status="attached",
                attach_mode=mode, attach_time=datetime.now(UTC)))

    def _os_detach(self, ctx: RequestContext, volume_id: str, args: Any, v: Any) -> None:
        attachment_id = args.get("attachment_id") if isinstance(args, dict) else None
        with self.db.session() as session:
            vol = self._load(session, ctx, volume_id)
            rows = self._attachments(session, volume_id, "attached")
            if attachment_id:
                rows = [a for a in rows if a.id == attachment_id]
            elif len(rows) > 1:
                raise BadRequest("The volume has several attachments: name attachment_id.")
            if not rows:
                raise BadRequest(f"Volume {volume_id} has no such attachment.")
            self._detach_rows(session, vol, rows[:1], ("detaching", "in-use"))

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _attachments(session: Any, volume_id: str, status: str | None = None) -> list:
        query = select(Attachment).where(Attachment.volume_id == volume_id)
        if status:
            query = query.where(Attachment.attach_status == status)
        return list(session.scalars(query))

    def _detach_rows(self, session: Any, vol: Volume, rows: list[Attachment],
                     allowed: tuple[str, ...]) -> None:
        for row in rows:
            session.delete(row)
        session.flush()
        remaining = self._attachments(session, vol.id, "attached")
        new = "in-use" if remaining else "available"
        self._transition(session, vol, allowed, new, "detach",
                         attach_status="attached" if remaining else "detached")

    def connection_info(self, vol: Volume) -> dict[str, Any]:
        """What a hypervisor needs to open the volume (QEMU blockdev options)."""
        backend = self.api.backend_of(vol.host)  # type: ignore[arg-type]
        pool, name = self.api.backends[backend].pool, f"volume-{vol.id}"
        engine = self.api.engines[backend]
        data: dict[str, Any] = {"pool": pool, "name": name,
                                "access_mode": "ro" if vol.readonly else "rw",
                                "volume_id": vol.id, "location": engine.location(pool, name)}
        with engine.open(pool, name, read_only=vol.readonly) as image:
            data["blockdev"] = image.blockdev_options(node_prefix=f"v{vol.id[:8]}")
        data["qos_specs"] = qos.connection_specs(self.db, vol)
        return {"driver_volume_type": "blockstore", "data": data}

    def attachment_view(self, row: Attachment) -> dict[str, Any]:
        return {"id": row.id, "status": row.attach_status, "instance": row.instance_uuid,
                "volume_id": row.volume_id, "attached_at": iso(row.attach_time),
                "detached_at": iso(row.detach_time), "attach_mode": row.attach_mode,
                "connection_info": row.connection_info or None}

    # ------------------------------------------------------------ attachments API (3.27+)
    def create_attachment(self, ctx: RequestContext, body: Any,
                          session: Any = None) -> dict[str, Any]:
        """``session``: in the caller's transaction (compute reserves a volume in the
        transaction that records the server or the attachment and its job)."""
        ref = attachment_request(body)
        mode = ref["mode"]
        if session is None:
            with self.db.session() as own:
                return self.create_attachment(ctx, body, own)
        vol = self._load(session, ctx, ref["volume_uuid"])
        allowed = ("available", "in-use") if vol.multiattach else ("available",)
        connector = ref["connector"]
        new = "attaching" if connector else "reserved"
        self._transition(session, vol, allowed, new, "attachment create")
        row = Attachment(id=str(uuid.uuid4()), volume_id=vol.id,
                         instance_uuid=ref.get("instance_uuid"),
                         attach_status="attaching" if connector else "reserved",
                         attach_mode=mode, connector=connector or {},
                         attached_host=_text(connector, "host") if connector else None,
                         mountpoint=_text(connector, "mountpoint") if connector else None,
                         connection_info=self.connection_info(vol) if connector else {})
        session.add(row)
        session.flush()
        return self.attachment_view(row)

    def _attachment(self, session: Any, ctx: RequestContext, attachment_id: str
                    ) -> tuple[Attachment, Volume]:
        row = session.get(Attachment, attachment_id)
        if row is None:
            raise NotFound(f"Attachment {attachment_id} could not be found.")
        vol = self._load(session, ctx, row.volume_id)
        return row, vol

    def update_attachment(self, ctx: RequestContext, attachment_id: str,
                          body: Any) -> dict[str, Any]:
        ref = body.get("attachment") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("connector"), dict):
            raise BadRequest("Missing required element 'attachment' with a connector.")
        with self.db.session() as session:
            row, vol = self._attachment(session, ctx, attachment_id)
            row.connector = ref["connector"]
            row.connection_info = self.connection_info(vol)
            row.attach_status = "attaching"
            row.attached_host = ref["connector"].get("host")
            row.mountpoint = ref["connector"].get("mountpoint")
            if vol.status == "reserved":
                self._transition(session, vol, ("reserved",), "attaching", "attachment update")
            return self.attachment_view(row)

    def complete_attachment(self, ctx: RequestContext, attachment_id: str) -> None:
        with self.db.session() as session:
            row, vol = self._attachment(session, ctx, attachment_id)
            row.attach_status = "attached"
            row.attach_time = datetime.now(UTC)
            self._transition(session, vol, ("attaching", "in-use", "reserved"), "in-use",
                             "attachment complete", attach_status="attached")

    def delete_attachment(self, ctx: RequestContext, attachment_id: str) -> None:
        with self.db.session() as session:
            row, vol = self._attachment(session, ctx, attachment_id)
            self._detach_rows(session, vol, [row],
                              ("reserved", "attaching", "in-use", "detaching", "error"))

    def list_attachments(self, ctx: RequestContext) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            query = select(Attachment).join(Volume, Volume.id == Attachment.volume_id)
            if not ctx.is_admin:
                query = query.where(Volume.project_id == ctx.project_id)
            return [self.attachment_view(r) for r in session.scalars(query)]

    def show_attachment(self, ctx: RequestContext, attachment_id: str) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            row, _ = self._attachment(session, ctx, attachment_id)
            return self.attachment_view(row)
