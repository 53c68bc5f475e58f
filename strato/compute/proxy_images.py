"""Nova's image proxy (``/compute/v2.1/images``, up to 2.35; image metadata up to 2.38).

Nova answers these by calling Glance and translating; strato calls its image service's
Python API the same way (``services.image``), so visibility, policy and ownership are
Glance's own: a proxy never sees or changes more than the image API would allow.
Glance's extra properties are Nova's ``metadata``; its base attributes are not.
"""

from __future__ import annotations

from typing import Any

from strato.context import RequestContext
from strato.exceptions import BadRequest, Forbidden, NotFound
from strato.image.api import ImageAPI
from strato.image.listing import list_images
from strato.validation import show

# Glance's base attributes and view keys: everything else in an image is a property
# (nova.image.glance does the same split).
GLANCE_ATTRIBUTES = frozenset({
    "id", "name", "status", "visibility", "protected", "os_hidden", "owner", "checksum",
    "os_hash_algo", "os_hash_value", "size", "virtual_size", "min_disk", "min_ram",
    "disk_format", "container_format", "tags", "created_at", "updated_at", "self", "file",
    "schema", "stores", "direct_url", "locations", "deleted", "deleted_at"})
# Nova's maps: any other status (deactivated, importing, ...) is UNKNOWN, progress 0
_STATUS = {"active": "ACTIVE", "queued": "SAVING", "saving": "SAVING",
           "deleted": "DELETED", "pending_delete": "DELETED", "killed": "ERROR"}
_PROGRESS = {"queued": 25, "saving": 50, "active": 100}
# Nova's filter names -> Glance's (property filters pass through without "property-").
_FILTERS = {"name": "name", "status": "status", "server": "instance_uuid",
            "type": "image_type"}
MAX_METADATA_ITEMS = 128  # Nova's [quota] metadata_items default
MAX_LIMIT = 1000  # Nova's [api] max_limit


def metadata_of(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if k not in GLANCE_ATTRIBUTES}


def _int(name: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} param must be an integer") from None
    if value < minimum:
        raise BadRequest(f"{name} param must be >= {minimum}")
    return value


class ImageProxy:
    """Nova's images and image-metadata controllers over strato's image API."""

    def __init__(self, images: ImageAPI) -> None:
        self.images = images

    # ------------------------------------------------------------ views
    @staticmethod
    def _links(base: str, image_id: str) -> list[dict[str, str]]:
        return [{"rel": "self", "href": f"{base}/compute/v2.1/images/{image_id}"},
                {"rel": "bookmark", "href": f"{base}/compute/images/{image_id}"},
                {"rel": "alternate", "type": "application/vnd.openstack.image",
                 "href": f"{base}/image/images/{image_id}"}]

    def summary(self, image: dict[str, Any], base: str) -> dict[str, Any]:
        return {"id": image["id"], "name": image.get("name"),
                "links": self._links(base, image["id"])}

    def detail(self, image: dict[str, Any], base: str) -> dict[str, Any]:
        metadata = metadata_of(image)
        status = image.get("status") or ""
        body: dict[str, Any] = {
            "id": image["id"], "name": image.get("name"),
            "minRam": int(image.get("min_ram") or 0),
            "minDisk": int(image.get("min_disk") or 0),
            "metadata": metadata,
            "created": image.get("created_at"), "updated": image.get("updated_at"),
            "status": _STATUS.get(status, "UNKNOWN"),
            "progress": _PROGRESS.get(status, 0),
            "OS-EXT-IMG-SIZE:size": image.get("size"),
            "links": self._links(base, image["id"]),
        }
        server = metadata.get("instance_uuid")
        if server is not None:
            body["server"] = {"id": server, "links": [
                {"rel": "self", "href": f"{base}/compute/v2.1/servers/{server}"},
                {"rel": "bookmark", "href": f"{base}/compute/servers/{server}"}]}
        disk_config = metadata.get("auto_disk_config")
        if disk_config is not None:
            body["OS-DCF:diskConfig"] = ("AUTO" if str(disk_config).lower() in
                                         ("true", "1", "yes", "on", "t", "y") else "MANUAL")
        return body

    # ------------------------------------------------------------ images
    def _glance_params(self, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key, value in params:
            if key in _FILTERS:
                if key == "server":
                    value = value.rsplit("/", 1)[-1]
                elif key == "status":
                    value = value.lower()
                out.append((_FILTERS[key], value))
            elif key == "changes-since":
                out.append(("updated_at", f"gte:{value}"))
            elif key.startswith("property-") and len(key) > len("property-"):
                out.append((key[len("property-"):], value))
        return out

    def _all(self, ctx: RequestContext, params: list[tuple[str, str]]) -> list[dict]:
        """Every image Glance's default listing shows with these filters, in its order."""
        glance = self._glance_params(params)
        page = self.images.conf.image.api_limit_max
        found: list[dict] = []
        marker: str | None = None
        while True:
            query = [*glance, ("limit", str(page))]
            if marker:
                query.append(("marker", marker))
            body = list_images(self.images, ctx, query)
            found.extend(body["images"])
            if "next" not in body or not body["images"]:
                return found
            marker = body["images"][-1]["id"]

    def list(self, ctx: RequestContext, params: list[tuple[str, str]], detail: bool,
             base: str) -> dict[str, Any]:
        single = dict(params)
        images = self._all(ctx, params)
        if "minRam" in single:
            least = _int("minRam", single["minRam"])
            images = [i for i in images if int(i.get("min_ram") or 0) >= least]
        if "minDisk" in single:
            least = _int("minDisk", single["minDisk"])
            images = [i for i in images if int(i.get("min_disk") or 0) >= least]
        if single.get("marker"):
            ids = [i["id"] for i in images]
            if single["marker"] not in ids:
                raise BadRequest(f"marker [{single['marker']}] not found")
            images = images[ids.index(single["marker"]) + 1:]
        limit = min((_int("limit", single["limit"]) if "limit" in single else 0)
                    or MAX_LIMIT, MAX_LIMIT)
        page = images[:limit]
        view = self.detail if detail else self.summary
        out: dict[str, Any] = {"images": [view(i, base) for i in page]}
        if page and len(page) == limit:  # Nova links a full page, whatever follows
            rest = "&".join(f"{k}={v}" for k, v in params if k != "marker")
            href = f"{base}/compute/v2.1/images{'/detail' if detail else ''}?"
            out["images_links"] = [{"rel": "next", "href": href + (rest + "&" if rest else "")
                                    + f"marker={page[-1]['id']}"}]
        return out

    def _show(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        try:
            image = self.images.show(ctx, image_id)
        except NotFound:
            raise NotFound("Image not found.") from None
        if image.get("status") in ("deleted", "pending_delete"):
            raise NotFound("Image not found.")
        return image

    def show(self, ctx: RequestContext, image_id: str, base: str) -> dict[str, Any]:
        return self.detail(self._show(ctx, image_id), base)

    def delete(self, ctx: RequestContext, image_id: str) -> None:
        try:
            self.images.delete(ctx, image_id)
        except NotFound:
            raise NotFound("Image not found.") from None
        except Forbidden:
            raise Forbidden("You are not allowed to delete the image.") from None

    # ------------------------------------------------------------ metadata
    def metadata(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        return metadata_of(self._show(ctx, image_id))

    def metadata_item(self, ctx: RequestContext, image_id: str, key: str) -> dict[str, Any]:
        metadata = self.metadata(ctx, image_id)
        if key not in metadata:
            raise NotFound("Invalid metadata key")
        return {key: metadata[key]}

    @staticmethod
    def _check(metadata: Any, what: str = "metadata") -> dict[str, str]:
        if not isinstance(metadata, dict):
            raise BadRequest(f"Invalid input for field/attribute {what}. Value: "
                             f"{show(metadata)}. It is not an object.")
        for key, value in metadata.items():
            if not key or len(key) > 255:
                raise BadRequest(f"Invalid input for field/attribute {what}: a key must be "
                                 "1 to 255 characters.")
            if not isinstance(value, str) or len(value) > 255:
                raise BadRequest(f"Invalid input for field/attribute {what}/{key}: a value "
                                 "must be a string of at most 255 characters.")
        return metadata

    def _write(self, ctx: RequestContext, image_id: str, current: dict[str, Any],
               wanted: dict[str, str]) -> dict[str, Any]:
        """Make the image's properties ``wanted`` with one JSON patch of Glance's."""
        if len(wanted) > MAX_METADATA_ITEMS:
            raise Forbidden(f"Quota exceeded for metadata items: at most "
                            f"{MAX_METADATA_ITEMS}.")
        patch: list[dict[str, Any]] = [
            {"op": "remove", "path": "/" + _pointer(k)} for k in current if k not in wanted]
        patch += [{"op": "add", "path": "/" + _pointer(k), "value": v}
                  for k, v in wanted.items() if current.get(k) != v]
        if not patch:
            return current
        try:
            return metadata_of(self.images.update(ctx, image_id, patch))
        except NotFound:
            raise NotFound("Image not found.") from None

    def set_metadata(self, ctx: RequestContext, image_id: str, body: Any,
                     replace: bool) -> dict[str, Any]:
        """POST (merge) and PUT (replace all) of ``{"metadata": {...}}``."""
        if not isinstance(body, dict) or "metadata" not in body:
            raise BadRequest("Malformed request body: 'metadata' is a required property.")
        given = self._check(body["metadata"])
        current = self.metadata(ctx, image_id)
        wanted = dict(given) if replace else {**current, **given}
        result = self._write(ctx, image_id, current, wanted)
        return dict(given) if replace else result

    def set_metadata_item(self, ctx: RequestContext, image_id: str, key: str,
                          body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "meta" not in body:
            raise BadRequest("Malformed request body: 'meta' is a required property.")
        meta = self._check(body["meta"], "meta")
        if len(meta) > 1:
            raise BadRequest("Request body contains too many items")
        if key not in meta:
            raise BadRequest("Request body and URI mismatch")
        current = self.metadata(ctx, image_id)
        self._write(ctx, image_id, current, {**current, key: meta[key]})
        return {key: meta[key]}

    def delete_metadata_item(self, ctx: RequestContext, image_id: str, key: str) -> None:
        current = self.metadata(ctx, image_id)
        if key not in current:
            raise NotFound("Invalid metadata key")
        self._write(ctx, image_id, current, {k: v for k, v in current.items() if k != key})


def _pointer(key: str) -> str:
    """A key as one JSON-pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
