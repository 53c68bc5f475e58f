"""Nova's volume proxies (``os-volumes``, ``os-volumes_boot``, ``os-snapshots``, up to
2.35): Nova's camelCase views over strato's volume service.

Nova calls Cinder and translates; strato calls its volume service's Python API
(``services.volume``) at Cinder's base version, so Cinder's policy, quota and
ownership apply unchanged and only the shape differs.
"""

from __future__ import annotations

from typing import Any

from strato.context import RequestContext
from strato.exceptions import BadRequest
from strato.policy import Enforcer
from strato.validation import show
from strato.volume.api import VolumeAPI

CINDER_BASE = (3, 0)
MAX_LIMIT = 1000  # Nova's [api] max_limit
P = "os_compute_api:os-volumes"


def limited(items: list[Any], params: dict[str, str]) -> list[Any]:
    """Nova's ``common.limited``: ``offset`` and ``limit`` (capped at max_limit)."""
    try:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", MAX_LIMIT))
    except ValueError:
        raise BadRequest("limit and offset param must be an integer") from None
    if offset < 0:
        raise BadRequest("offset param must be positive")
    if limit < 0:
        raise BadRequest("limit param must be positive")
    limit = min(MAX_LIMIT, limit or MAX_LIMIT)
    return items[offset:offset + limit]


def _optional_text(ref: dict[str, Any], key: str) -> str | None:
    value = ref.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {show(value)}. "
                         f"{show(value)} is not of type 'string'")
    return value


def volume_view(vol: dict[str, Any]) -> dict[str, Any]:
    """Nova's ``_translate_volume_detail_view`` of a Cinder volume."""
    attached = vol.get("attachments") or []
    if attached:
        attachments = []
        for a in attached[:1]:  # Nova shows the first attachment only
            item = {"id": vol["id"], "volumeId": vol["id"], "serverId": a.get("server_id")}
            if a.get("device"):
                item["device"] = a["device"]
            attachments.append(item)
    else:
        attachments = [{}]
    return {
        "id": vol["id"], "status": vol["status"], "size": vol["size"],
        "availabilityZone": vol.get("availability_zone"),
        "createdAt": vol.get("created_at"), "attachments": attachments,
        "displayName": vol.get("name"), "displayDescription": vol.get("description"),
        "volumeType": vol.get("volume_type"), "snapshotId": vol.get("snapshot_id"),
        "metadata": dict(vol.get("metadata") or {}),
    }


def snapshot_view(snap: dict[str, Any]) -> dict[str, Any]:
    """Nova's ``_translate_snapshot_detail_view`` of a Cinder snapshot."""
    return {"id": snap["id"], "volumeId": snap["volume_id"], "status": snap["status"],
            "size": snap["size"], "createdAt": snap.get("created_at"),
            "displayName": snap.get("name"), "displayDescription": snap.get("description")}


class VolumeProxy:
    def __init__(self, volumes: VolumeAPI, policy: Enforcer) -> None:
        self.volumes = volumes
        self.policy = policy

    def _enforce(self, ctx: RequestContext, rule: str) -> None:
        self.policy.enforce(ctx, f"{P}:{rule}", {"project_id": ctx.project_id})

    # ------------------------------------------------------------ volumes
    def list_volumes(self, ctx: RequestContext, params: dict[str, str],
                     detail: bool) -> list[dict[str, Any]]:
        self._enforce(ctx, "detail" if detail else "list")
        vols = self.volumes.list(ctx, {}, CINDER_BASE, True)["volumes"]
        return [volume_view(v) for v in limited(vols, params)]

    def show_volume(self, ctx: RequestContext, volume_id: str) -> dict[str, Any]:
        self._enforce(ctx, "show")
        return volume_view(self.volumes.show(ctx, volume_id, CINDER_BASE))

    def create_volume(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._enforce(ctx, "create")
        if not isinstance(body, dict) or not isinstance(body.get("volume"), dict):
            raise BadRequest("Invalid input for field/attribute volume: 'volume' is a "
                             "required property (an object).")
        ref = body["volume"]
        unknown = sorted(set(ref) - {"volume_type", "metadata", "snapshot_id", "size",
                                     "availability_zone", "display_name",
                                     "display_description"})
        if unknown:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(unknown)} "
                             "were unexpected)")
        size = ref.get("size")
        if size is None:
            raise BadRequest("Invalid input for field/attribute volume: 'size' is a "
                             "required property")
        if isinstance(size, bool) or not (isinstance(size, int) or (
                isinstance(size, str) and size.isdigit())) or int(size) < 1:
            raise BadRequest(f"Invalid input for field/attribute size. Value: {show(size)}. "
                             "It must be a positive integer.")
        metadata = ref.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequest(f"Invalid input for field/attribute metadata. Value: "
                             f"{show(metadata)}. It is not of type 'object'")
        cinder: dict[str, Any] = {
            "size": int(size), "name": _optional_text(ref, "display_name"),
            "description": _optional_text(ref, "display_description"),
            "volume_type": _optional_text(ref, "volume_type"),
            "availability_zone": _optional_text(ref, "availability_zone"),
            "snapshot_id": _optional_text(ref, "snapshot_id"),
            "metadata": metadata or {},
        }
        return volume_view(self.volumes.create(ctx, {"volume": cinder}, CINDER_BASE))

    def delete_volume(self, ctx: RequestContext, volume_id: str) -> None:
        self._enforce(ctx, "delete")
        self.volumes.delete(ctx, volume_id)

    # ------------------------------------------------------------ snapshots
    def list_snapshots(self, ctx: RequestContext, params: dict[str, str],
                       detail: bool) -> list[dict[str, Any]]:
        self._enforce(ctx, "snapshots:detail" if detail else "snapshots:list")
        snaps = self.volumes.list_snapshots(ctx, {}, CINDER_BASE)["snapshots"]
        return [snapshot_view(s) for s in limited(snaps, params)]

    def show_snapshot(self, ctx: RequestContext, snapshot_id: str) -> dict[str, Any]:
        self._enforce(ctx, "snapshots:show")
        return snapshot_view(self.volumes.show_snapshot(ctx, snapshot_id, CINDER_BASE))

    def create_snapshot(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._enforce(ctx, "snapshots:create")
        if not isinstance(body, dict) or not isinstance(body.get("snapshot"), dict):
            raise BadRequest("Invalid input for field/attribute snapshot: 'snapshot' is a "
                             "required property (an object).")
        ref = body["snapshot"]
        unknown = sorted(set(ref) - {"volume_id", "force", "display_name",
                                     "display_description"})
        if unknown:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(unknown)} "
                             "were unexpected)")
        volume_id = ref.get("volume_id")
        if not isinstance(volume_id, str):
            raise BadRequest("Invalid input for field/attribute volume_id: 'volume_id' is "
                             "a required property (a string).")
        force = ref.get("force", False)
        if isinstance(force, str) and force.lower() in ("true", "1", "yes", "on", "t", "y",
                                                        "false", "0", "no", "off", "f", "n"):
            force = force.lower() in ("true", "1", "yes", "on", "t", "y")
        if not isinstance(force, bool):
            raise BadRequest(f"Invalid input for field/attribute force. Value: "
                             f"{show(force)}. It is not a boolean.")
        cinder = {"volume_id": volume_id, "force": force,
                  "name": _optional_text(ref, "display_name"),
                  "description": _optional_text(ref, "display_description")}
        return snapshot_view(self.volumes.create_snapshot(ctx, {"snapshot": cinder},
                                                          CINDER_BASE))

    def delete_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        self._enforce(ctx, "snapshots:delete")
        self.volumes.delete_snapshot(ctx, snapshot_id)
