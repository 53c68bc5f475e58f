"""createImage, nova-api's part (seeds 000 and 001): validate, make the image record,
set ``image_snapshot_pending`` and hand the work to the instance's host.

The image exists (``queued``) before the 202 goes back, with the properties Nova gives
a snapshot; the host fills in the data (``strato.compute.snapshot_manager``).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from sqlalchemy import select, update

from strato import events
from strato.compute import states
from strato.compute.api import ComputeAPI, ctx_payload, state_message
from strato.compute.models import BlockDevice, Instance
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, StratoError
from strato.jobs.queue import enqueue
from strato.storage import crash
from strato.validation import string_map, text

P = "os_compute_api:servers:create_image"

#: never copied from the base image (Nova's NON_INHERITABLE_IMAGE_PROPERTIES, its
#: non_inheritable_image_properties defaults, and what a snapshot sets afresh)
NON_INHERITABLE = frozenset({
    "cinder_encryption_key_id", "cinder_encryption_key_deletion_policy", "img_signature",
    "img_signature_hash_method", "img_signature_key_type", "img_signature_certificate_uuid",
    "cache_in_nova", "bittorrent", "owner_specified.openstack.md5",
    "owner_specified.openstack.sha256", "owner_specified.openstack.object",
    "block_device_mapping", "bdm_v2", "root_device_name", "image_type", "instance_uuid",
    "user_id", "base_image_ref", "image_location", "image_state", "owner_id",
    "strato_quiesced", "signature_verified", "image_id", "image_name",
    "strato_quiesce", "strato_schedule_id", "strato_schedule_slot",  # a schedule's run
})
#: image fields that are not properties (Glance's core attributes and views)
_CORE = frozenset({
    "id", "name", "status", "visibility", "protected", "os_hidden", "owner", "checksum",
    "os_hash_algo", "os_hash_value", "size", "virtual_size", "min_disk", "min_ram",
    "disk_format", "container_format", "tags", "created_at", "updated_at", "self", "file",
    "schema", "stores", "direct_url", "locations",
})


def image_url(api: ComputeAPI, image_id: str) -> str:
    return f"{api.base}/image/v2/images/{image_id}"


def _name(entity: dict[str, Any]) -> str:
    """Nova's ``normalize_name``: surrounding whitespace dropped, 1-255 characters."""
    name = text(entity.get("name"), "name", maximum=255, required=True)
    assert name is not None
    return name.strip()


def _image_metadata(api: ComputeAPI, entity: dict[str, Any]) -> dict[str, str]:
    meta = string_map(entity.get("metadata", {}), "metadata")
    limit = api.conf.compute.quota_metadata_items
    if 0 <= limit < len(meta):
        raise Forbidden(f"Image metadata limit exceeded: {len(meta)} items, at most {limit}.")
    extra = set(entity) - {"name", "metadata"}
    if extra:
        raise BadRequest(f"Additional properties are not allowed ({', '.join(sorted(extra))} "
                         "were unexpected).")
    return meta


def _inherited(props: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in props.items()
            if k not in NON_INHERITABLE and k not in _CORE and not k.startswith("os_glance")
            and v is not None}


def _base_image(api: ComputeAPI, ctx: RequestContext, image_id: str) -> dict[str, Any]:
    """The base image as the requester sees it; {} when it is gone (Nova then has only
    the system metadata it kept, which here is the kernel/ramdisk of the instance)."""
    try:
        return api.images.show(ctx, image_id)
    except NotFound:
        return {}


def create_image(api: ComputeAPI, ctx: RequestContext, server_id: str, args: Any,
                 version: Version) -> tuple[str, dict[str, Any] | None]:
    """POST /servers/{id}/action {"createImage"}: (Location, body or None)."""
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute createImage.")
    name = _name(args)
    metadata = _image_metadata(api, args)
    with api.db.session(readonly=True) as session:
        inst = api.get_row(session, ctx, server_id, P)
        _check_state(inst)
        bdms = list(session.scalars(select(BlockDevice).where(
            BlockDevice.instance_uuid == inst.id)))
        session.expunge_all()
    volume_backed = not inst.image_ref
    if volume_backed:
        api.policy.enforce(ctx, P + ":allow_volume_backed", {"project_id": inst.project_id})
        body = _volume_backed_body(api, ctx, inst, bdms, name)
    else:
        body = _image_backed_body(api, ctx, inst, name)
    for key, value in metadata.items():
        if key in _CORE:
            raise BadRequest(f"Invalid image metadata: {key!r} is not a property.")
        body[key] = value
    try:
        record = api.images.new_record(ctx, body)
        # One transaction: the image, the task state, the action and the job; a crash
        # leaves all of them or none (``sweep_orphan_snapshots`` ends rows older code
        # left queued with no job).
        with api.db.session() as session:
            image = api.images.add_record(session, record)
            crash.point("createImage", "after-image-record")
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                Instance.vm_state.in_(states.SNAPSHOT_VM_STATES),
                Instance.task_state.is_(None)).values(
                task_state=states.IMAGE_SNAPSHOT_PENDING)).rowcount
            if not done:
                with api.db.session(readonly=True) as s2:
                    now_row = s2.get(Instance, inst.id)
                _check_state(now_row or inst)
                raise Conflict(f"Instance {inst.id} changed state; try again.")
            api.record_action(session, ctx, inst, "createImage")
            events.emit(session, "compute", "compute.instance.snapshot.start", inst.id,
                        inst.project_id, image_id=image["id"])
            crash.point("createImage", "before-job")
            enqueue(session, "compute.snapshot", {
                "instance_id": inst.id, "image_id": image["id"], "ctx": ctx_payload(ctx),
                "volume_backed": volume_backed}, target=f"host:{inst.host}", max_attempts=3)
    except StratoError as exc:
        if exc.status == 413:  # Glance's image count quota: Nova answers 403
            raise Forbidden(exc.message) from None
        raise
    location = image_url(api, image["id"])
    return location, ({"image_id": image["id"]} if version >= (2, 45) else None)


def _check_state(inst: Instance) -> None:
    if inst.task_state is not None or inst.vm_state not in states.SNAPSHOT_VM_STATES:
        raise Conflict(state_message("createImage", inst))


def _common(inst: Instance, ctx: RequestContext, name: str, base_ref: str) -> dict[str, Any]:
    return {"name": name, "visibility": "private", "image_type": "snapshot",
            "instance_uuid": inst.id, "user_id": ctx.user_id, "base_image_ref": base_ref,
            "owner_id": inst.project_id, "image_location": "snapshot"}


def _image_backed_body(api: ComputeAPI, ctx: RequestContext, inst: Instance,
                       name: str) -> dict[str, Any]:
    """Seed 001: the base image's inheritable properties, the snapshot's own, min_disk
    from the flavor, the format the snapshot will be written in."""
    base = _base_image(api, ctx, inst.image_ref)
    body: dict[str, Any] = _inherited(base)
    body.update(inst.boot_meta or {})  # how it boots, even once the base image is gone
    body.update(_common(inst, ctx, name, inst.image_ref))
    if inst.kernel_id:
        body["kernel_id"] = inst.kernel_id
    if inst.ramdisk_id:
        body["ramdisk_id"] = inst.ramdisk_id
    body["disk_format"] = api.conf.compute.snapshot_image_format or "raw"
    body["container_format"] = "bare"
    body["min_disk"] = max(int(inst.flavor.get("root_gb") or 0), int(base.get("min_disk") or 0))
    body["min_ram"] = int(base.get("min_ram") or 0)
    return body


def _volume_backed_body(api: ComputeAPI, ctx: RequestContext, inst: Instance,
                        bdms: list[BlockDevice], name: str) -> dict[str, Any]:
    """Seed 000: no data and no formats; the properties of the image the boot volume
    came from; the block device mapping is added once the volume snapshots exist."""
    root = next((b for b in bdms if b.boot_index == 0 and b.volume_id), None)
    meta: dict[str, Any] = {}
    if root is not None:
        with suppress(NotFound):
            meta = api.volumes.show(ctx, root.volume_id or "", (3, 0)).get(
                "volume_image_metadata") or {}
    body: dict[str, Any] = _inherited(meta)
    body.update(_common(inst, ctx, name, ""))
    body.pop("image_location")
    body["root_device_name"] = "/dev/vda"
    for key in ("min_disk", "min_ram"):
        with suppress(TypeError, ValueError):
            body[key] = int(meta.get(key) or 0)
    return body
