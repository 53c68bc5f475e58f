"""Nova's ``rebuild`` server action, API side: the body per microversion, the refusals
(state, image, flavor, volume-backed rules), the instance's new fields and task state
``rebuilding`` committed with the ``compute.rebuild`` job in one transaction.

The job (``strato.compute.rebuild_manager``) stops the guest, replaces the root disk by
a fresh clone of the image (or, from 2.93, re-images a volume-backed server's boot
volume in place), rewrites the config drive and boots the guest again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from strato import events
from strato.compute import bootinfo, guestinfo, schemas, states
from strato.compute.api import (
    ComputeAPI,
    P,
    _requested_hostname,
    access_ip,
    ctx_payload,
    now,
    state_message,
)
from strato.compute.limits import Limits
from strato.compute.models import BlockDevice, Instance
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, NotSupported
from strato.jobs.queue import enqueue
from strato.validation import Arr, Bool, Obj, Str, string_map, validate

ACTIONS = ("rebuild",)
RULE = P + "servers:rebuild"
RULE_TRUSTED_CERTS = P + "servers:rebuild:trusted_certs"
#: Nova's ``@check_instance_state(vm_state=[ACTIVE, STOPPED, ERROR])``
ALLOWED = (states.ACTIVE, states.STOPPED, states.ERROR)
TASKS = (states.REBUILDING, states.REBUILD_BLOCK_DEVICE_MAPPING, states.REBUILD_SPAWNING)
#: 2.93: a volume-backed server's rebuild re-images its boot volume
REIMAGE_VERSION = (2, 93)


class ReimageNotSupported(NotSupported):
    message = ("Rebuilding a volume-backed server (re-imaging its boot volume, "
               "microversion 2.93) is not supported by this cloud yet; use a microversion "
               "below 2.93 and the server's own image.")


def body_schema(version: Version) -> Obj:
    """Nova's ``rebuild`` schema for ``version`` (fields appear with their version;
    ``personality`` is not taken: strato injects no files)."""
    fields: dict[str, Any] = {
        "imageRef": Str(2048, min=1), "name": Str(255, min=1, strip=True), "adminPass": Str(255),
        "metadata": schemas.METADATA, "preserve_ephemeral": Bool(strings=True),
        "accessIPv4": schemas.IP, "accessIPv6": schemas.IP,
        "OS-DCF:diskConfig": Str(enum=("AUTO", "MANUAL")),
    }
    if version >= (2, 19):
        fields["description"] = schemas.DESCRIPTION
    if version >= (2, 54):
        fields["key_name"] = schemas.OPT
    if version >= (2, 57):
        fields["user_data"] = Str(65535, nullable=True)
    if version >= (2, 63):
        fields["trusted_image_certificates"] = Arr(Str(255), max_items=50, nullable=True)
    if version >= (2, 90):
        fields["hostname"] = Str(255)
    return Obj(fields, required=("imageRef",), extra=None)


class Rebuild:
    """``POST /servers/{id}/action {"rebuild": {...}}``."""

    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> dict[str, Any]:
        ref = validate(body_schema(version), args)
        api = self.api
        with self.db.session(readonly=True) as session:
            inst = api.get_row(session, ctx, server_id, RULE)
            api._check_lock(ctx, inst)
            if inst.vm_state not in ALLOWED or inst.task_state is not None:
                raise Conflict(state_message("rebuild", inst))
            if not inst.host:  # an ERROR server that never had a host (NoValidHost)
                raise Conflict(f"Cannot 'rebuild' instance {inst.id}: it was never "
                               "scheduled to a host; delete it and create it again.")
            meta_limit = Limits(api).project_limits(session, inst.project_id or "")[
                "metadata_items"]
            root = next((b for b in api.bdms(session, [inst.id])[inst.id]
                         if b.boot_index == 0 and b.destination_type == "volume"), None)
            flavor = dict(inst.flavor or {})
        if ref.get("trusted_image_certificates"):
            api.policy.enforce(ctx, RULE_TRUSTED_CERTS, {"project_id": inst.project_id})
            raise BadRequest("Image certificate validation is not supported by this "
                             "cloud: trusted_image_certificates must be null or absent.")
        image_id = str(ref["imageRef"]).rstrip("/").rsplit("/", 1)[-1]
        try:
            image = api.images.show(ctx, image_id)
        except NotFound:
            raise BadRequest("Cannot find image for rebuild") from None
        if image["status"] != "active":
            raise BadRequest(f"Image {image_id} is not active.")
        reimage = False  # re-imaging a boot volume (2.93) is refused above for now
        if root is not None:
            current = self._volume_image(ctx, root)
            if version < REIMAGE_VERSION and current != image_id:
                raise BadRequest(f"Image {image_id} is unacceptable: Unable to rebuild with "
                                 "a different image for a volume-backed server.")
            if version >= REIMAGE_VERSION:
                raise ReimageNotSupported()
        else:
            self._check_flavor(image, flavor)
        boot = bootinfo.boot_meta(image)
        bootinfo.check_boot_image(image, boot, self.db, api.images.store)
        metadata = string_map(ref["metadata"], "metadata") if "metadata" in ref else None
        if metadata is not None and 0 <= meta_limit < len(metadata):
            raise Forbidden(f"Maximum number of metadata items exceeds {meta_limit}")
        values: dict[str, Any] = {"task_state": states.REBUILDING, "updated_at": now(),
                                  "boot_meta": boot, "fault": None}
        if root is None:
            values.update(image_ref=image_id, kernel_id=str(image.get("kernel_id") or ""),
                          ramdisk_id=str(image.get("ramdisk_id") or ""))
        if "name" in ref:
            values["name"] = ref["name"]
        if metadata is not None:
            values["metadata_"] = metadata
        for key, column in (("accessIPv4", "access_ip_v4"), ("accessIPv6", "access_ip_v6")):
            if key in ref:
                values[column] = access_ip(ref, key)
        if "description" in ref:
            values["description"] = ref["description"]
        if "key_name" in ref:  # 2.54: a new key, or null to unset it
            values.update(self._key(ctx, ref["key_name"]))
        if "user_data" in ref:  # 2.57: new user data, or null to remove it
            guestinfo.check_user_data(ref["user_data"])
            values["user_data"] = ref["user_data"]
        if "hostname" in ref:
            values["hostname"] = _requested_hostname(ref, version)
        admin_pass = ref["adminPass"] if "adminPass" in ref else \
            guestinfo.generate_password()
        with self.db.session() as session:
            inst = api.get_row(session, ctx, server_id, RULE)
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                Instance.vm_state.in_(ALLOWED), Instance.task_state.is_(None))
                .values(**values)).rowcount
            if not done:
                raise Conflict(state_message("rebuild", inst))
            session.refresh(inst)
            api.record_action(session, ctx, inst, "rebuild")
            events.emit(session, "compute", "compute.instance.rebuild.start", inst.id,
                        inst.project_id, image_ref=image_id)
            payload: dict[str, Any] = {
                "instance_id": inst.id, "ctx": ctx_payload(ctx),
                "image_id": image_id, "reimage_volume": reimage,
                "preserve_ephemeral": bool(ref.get("preserve_ephemeral", False))}
            payload["admin_pass"] = admin_pass  # the config drive's; the job drops it
            enqueue(session, "compute.rebuild", payload, target=f"host:{inst.host}",
                    max_attempts=5)
            session.flush()
            body = api.view(session, ctx, inst, version, update=True)
        return {"server": rebuild_view(body, inst, version, admin_pass if
                                       api.conf.api.enable_instance_password else None)}

    # ------------------------------------------------------------ checks
    def _volume_image(self, ctx: RequestContext, root: BlockDevice) -> str | None:
        """The image a boot volume was made from (Nova reads it from the volume's
        ``volume_image_metadata``)."""
        try:
            vol = self.api.volumes.show(ctx, root.volume_id or "", (3, 0))
        except NotFound:
            return None
        return (vol.get("volume_image_metadata") or {}).get("image_id")

    @staticmethod
    def _check_flavor(image: dict[str, Any], flavor: dict[str, Any]) -> None:
        """Nova's ``_validate_flavor_image_nostatus``, against the server's flavor."""
        root_gb, ram = int(flavor.get("root_gb") or 0), int(flavor.get("memory_mb") or 0)
        size = int(image.get("size") or 0)
        if root_gb and size > root_gb << 30:
            raise BadRequest(f"Flavor's disk is too small for requested image. Flavor disk "
                             f"is {root_gb << 30} bytes, image is {size} bytes.")
        if root_gb and int(image.get("min_disk") or 0) > root_gb:
            raise BadRequest("Flavor's disk is too small for requested image.")
        if int(image.get("min_ram") or 0) > ram:
            raise BadRequest("Flavor's memory is too small for requested image.")

    def _key(self, ctx: RequestContext, key_name: str | None) -> dict[str, Any]:
        if key_name is None:
            return {"key_name": None, "key_data": None, "key_type": None}
        kp = self.api.keypairs.get(ctx.user_id, key_name)
        if kp is None:
            raise BadRequest("Invalid key_name provided.")
        return {"key_name": kp.name, "key_data": kp.public_key, "key_type": kp.type}


def rebuild_view(body: dict[str, Any], inst: Instance, version: Version,
                 admin_pass: str | None) -> dict[str, Any]:
    """Nova's rebuild response: the update view, plus ``key_name`` (2.54) and
    ``user_data`` (2.57; from 2.75 it replaces ``OS-EXT-SRV-ATTR:user_data``), and
    ``adminPass`` when instance passwords are enabled."""
    if version >= (2, 54):
        body["key_name"] = inst.key_name
    if version >= (2, 57):
        body.pop("OS-EXT-SRV-ATTR:user_data", None)
        body["user_data"] = inst.user_data
    if admin_pass is not None:
        body["adminPass"] = admin_pass
    return body

