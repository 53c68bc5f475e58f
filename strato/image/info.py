"""Glance's discovery documents: ``/v2/info/*`` and ``/v2/schemas/*``.

Clients read these to learn what a deployment offers (import methods, stores, the
caller's quota usage) and what an image record may hold; each says what strato
really does (one store; the import methods ``[image] enabled_import_methods`` names).
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import func, select

from strato.context import RequestContext
from strato.exceptions import NotFound
from strato.image.api import NAME_MAX, ImageAPI, staged_path
from strato.image.formats import CONTAINER_FORMATS, DISK_FORMATS
from strato.image.imports import enabled_methods
from strato.image.models import Image

_STORE_TEXT = {"file": "Image data in files on this host",
               "rbd": "Image data in the Ceph cluster (RBD), cloned by volumes and "
                      "instances"}


def import_info(api: ImageAPI) -> dict[str, Any]:
    return {"import-methods": {"description": "Import methods available.",
                               "type": "array", "value": enabled_methods(api)}}


def stores(api: ImageAPI, ctx: RequestContext, detail: bool = False) -> dict[str, Any]:
    """The one store strato writes to, as Glance lists a multi-store deployment's."""
    api.policy.enforce(ctx, "get_stores_detail" if detail else "get_stores",
                       {"project_id": ctx.project_id})
    listed = []
    for store_id, store in api.stores.items():
        doc: dict[str, Any] = {"id": store_id, "description": _STORE_TEXT[store.kind]}
        if store_id == api.store.name:
            doc["default"] = True
        if detail:
            doc.update({"type": store.kind, "weight": 0,
                        "properties": _store_properties(api, store.kind)})
        listed.append(doc)
    return {"stores": listed}


def _store_properties(api: ImageAPI, kind: str) -> dict[str, Any]:
    gs = api.conf.glance_store
    if kind == "rbd":
        return {"pool": gs.rbd_store_pool,
                "chunk_size": gs.rbd_store_chunk_size, "thin_provisioning": True}
    return {"data_dir": str(gs.filesystem_store_datadir),
            "chunk_size": gs.rbd_store_chunk_size << 20, "thin_provisioning": False}


def usage(api: ImageAPI, ctx: RequestContext) -> dict[str, Any]:
    """The caller's project against its image quotas (Glance 2.9, unified limits)."""
    api.policy.enforce(ctx, "get_usage", {"project_id": ctx.project_id})
    q = api.quotas
    owned = Image.owner == ctx.project_id
    with api.db.session(readonly=True) as session:
        size = session.scalar(select(func.coalesce(func.sum(Image.size), 0)).where(
            owned, Image.status != "pending_delete")) or 0
        count = session.scalar(select(func.count()).select_from(Image).where(
            owned, Image.status != "pending_delete")) or 0
        uploading = session.scalar(select(func.count()).select_from(Image).where(
            owned, Image.status.in_(("uploading", "importing", "saving")))) or 0
        staging = list(session.scalars(select(Image.id).where(
            owned, Image.status.in_(("uploading", "importing")))))
    staged = 0
    for image_id in staging:  # the staging files themselves: what is really held
        with contextlib.suppress(FileNotFoundError):
            staged += staged_path(api.conf, image_id).stat().st_size
    mib = 1 << 20
    return {"usage": {
        "image_size_total": {"limit": q.size_total_mb, "usage": -(-size // mib)},
        "image_count_total": {"limit": q.image_count, "usage": count},
        "image_stage_total": {"limit": q.size_total_mb, "usage": -(-staged // mib)},
        "image_count_uploading": {"limit": q.image_count, "usage": uploading},
    }}


# ------------------------------------------------------------------ schemas
_NULL_STR = {"type": ["null", "string"]}


def _image_properties() -> dict[str, Any]:
    ro = {"readOnly": True}
    return {
        "id": {"type": "string", "description": "An identifier for the image",
               "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                          "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
        "name": {"type": ["null", "string"], "maxLength": NAME_MAX,
                 "description": "Descriptive name for the image"},
        "status": {"type": "string", **ro, "description": "Status of the image",
                   "enum": ["queued", "saving", "active", "killed", "deleted",
                            "uploading", "importing", "pending_delete", "deactivated"]},
        "visibility": {"type": "string", "description": "Scope of image accessibility",
                       "enum": ["community", "public", "private", "shared"]},
        "protected": {"type": "boolean",
                      "description": "If true, image will not be deletable."},
        "os_hidden": {"type": "boolean",
                      "description": "If true, image will not appear in default image "
                                     "list response."},
        "checksum": {**_NULL_STR, **ro, "maxLength": 32,
                     "description": "md5 hash of image contents."},
        "os_hash_algo": {**_NULL_STR, **ro, "maxLength": 64,
                         "description": "Algorithm to calculate the os_hash_value"},
        "os_hash_value": {**_NULL_STR, **ro, "maxLength": 128,
                          "description": "Hexdigest of the image contents using the "
                                         "algorithm specified by the os_hash_algo"},
        "owner": {**_NULL_STR, "maxLength": 255,
                  "description": "Owner of the image"},
        "size": {"type": ["null", "integer"], **ro,
                 "description": "Size of image file in bytes"},
        "virtual_size": {"type": ["null", "integer"], **ro,
                         "description": "Virtual size of image in bytes"},
        "container_format": {"type": ["null", "string"],
                             "enum": [None, *CONTAINER_FORMATS],
                             "description": "Format of the container"},
        "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS],
                        "description": "Format of the disk"},
        "created_at": {"type": "string", **ro,
                       "description": "Date and time of image registration"},
        "updated_at": {"type": "string", **ro,
                       "description": "Date and time of the last image modification"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255},
                 "description": "List of strings related to the image"},
        "direct_url": {"type": "string", **ro,
                       "description": "URL to access the image file kept in external "
                                      "store"},
        "min_ram": {"type": "integer", "minimum": 0,
                    "description": "Amount of ram (in MB) required to boot image."},
        "min_disk": {"type": "integer", "minimum": 0,
                     "description": "Amount of disk space (in GB) required to boot "
                                    "image."},
        "self": {"type": "string", **ro,
                 "description": "An image self url"},
        "file": {"type": "string", **ro,
                 "description": "An image file url"},
        "stores": {"type": "string", **ro,
                   "description": "Store in which image data resides. Only present "
                                  "when the operator has enabled multiple stores."},
        "schema": {"type": "string", **ro,
                   "description": "An image schema url"},
        "locations": {"type": "array", "description": "A set of URLs to access the image "
                      "file kept in external store",
                      "items": {"type": "object", "required": ["url", "metadata"],
                                "properties": {
                                    "url": {"type": "string", "maxLength": 255},
                                    "metadata": {"type": "object"},
                                    "validation_data": {"type": "object"}}}},
    }


_IMAGE_LINKS = [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                {"rel": "describedby", "href": "{schema}"}]
_COLLECTION_LINKS = [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                     {"rel": "describedby", "href": "{schema}"}]


def image_schema() -> dict[str, Any]:
    return {"name": "image", "properties": _image_properties(),
            "additionalProperties": {"type": "string"}, "links": _IMAGE_LINKS}


def images_schema() -> dict[str, Any]:
    return {"name": "images", "links": _COLLECTION_LINKS, "properties": {
        "images": {"type": "array", "items": image_schema()},
        "schema": {"type": "string"}, "first": {"type": "string"},
        "next": {"type": "string"}}}


def member_schema() -> dict[str, Any]:
    return {"name": "member", "properties": {
        "member_id": {"type": "string", "description": "An identifier for the image "
                                                       "member (tenantId)"},
        "image_id": {"type": "string", "description": "An identifier for the image"},
        "created_at": {"type": "string", "description": "Date and time of image member "
                                                        "creation"},
        "updated_at": {"type": "string", "description": "Date and time of last "
                                                        "modification of image member"},
        "status": {"type": "string", "enum": ["pending", "accepted", "rejected"],
                   "description": "The status of this image member"},
        "schema": {"type": "string", "readOnly": True}}}


def members_schema() -> dict[str, Any]:
    return {"name": "members", "links": [{"rel": "describedby", "href": "{schema}"}],
            "properties": {"members": {"type": "array", "items": member_schema()},
                           "schema": {"type": "string"}}}


def _named(name: str, props: dict[str, Any], required: list[str] | None = None
           ) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "properties": props,
                           "additionalProperties": False}
    if required:
        doc["required"] = required
    return doc


def _plural(name: str, key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "links": _COLLECTION_LINKS, "properties": {
        key: {"type": "array", "items": item}, "schema": {"type": "string"},
        "first": {"type": "string"}, "next": {"type": "string"}}}


def _metadefs() -> dict[str, dict[str, Any]]:
    """Glance's metadata-definition schemas (strato has no metadefs catalog: its routes
    answer 501, but clients that validate against these documents can still load
    them)."""
    s, b, t = {"type": "string"}, {"type": "boolean"}, {"type": "string",
                                                         "format": "date-time"}
    prop = _named("property", {
        "name": {"type": "string", "maxLength": 255}, "title": s, "description": s,
        "type": {"type": "string", "enum": ["array", "boolean", "integer", "number",
                                            "object", "string", None]},
        "default": {}, "readonly": b, "operators": {"type": "array", "items": s},
        "enum": {"type": "array"}, "items": {"type": "object"},
        "minimum": {"type": "number"}, "maximum": {"type": "number"},
        "minLength": {"type": "integer"}, "maxLength": {"type": "integer"},
        "pattern": s, "minItems": {"type": "integer"}, "maxItems": {"type": "integer"},
        "uniqueItems": b, "additionalItems": b}, ["name", "title", "type"])
    rta = _named("resource_type_association", {
        "name": {"type": "string", "maxLength": 80}, "prefix": s,
        "properties_target": s, "created_at": t, "updated_at": t}, ["name"])
    obj = _named("object", {
        "name": {"type": "string", "maxLength": 255}, "description": s,
        "required": {"type": "array", "items": s},
        "properties": {"type": "object", "additionalProperties": prop},
        "schema": {"type": "string", "readOnly": True}, "self": {"type": "string"},
        "created_at": t, "updated_at": t}, ["name"])
    tag = _named("tag", {"name": {"type": "string", "maxLength": 255},
                         "created_at": t, "updated_at": t}, ["name"])
    namespace = _named("namespace", {
        "namespace": {"type": "string", "maxLength": 80}, "display_name": s,
        "description": s, "visibility": {"type": "string", "enum": ["public", "private"]},
        "protected": b, "owner": s, "created_at": t, "updated_at": t,
        "schema": {"type": "string", "readOnly": True}, "self": {"type": "string"},
        "resource_type_associations": {"type": "array", "items": rta},
        "properties": {"type": "object", "additionalProperties": prop},
        "objects": {"type": "array", "items": obj},
        "tags": {"type": "array", "items": tag}}, ["namespace"])
    return {
        "namespace": namespace, "namespaces": _plural("namespaces", "namespaces",
                                                      namespace),
        "resource_type": rta,
        "resource_types": _plural("resource_type_associations",
                                  "resource_type_associations", rta),
        "object": obj, "objects": _plural("objects", "objects", obj),
        "property": prop,
        "properties": {"name": "properties", "links": _COLLECTION_LINKS, "properties": {
            "properties": {"type": "object", "additionalProperties": prop}}},
        "tag": tag, "tags": _plural("tags", "tags", tag),
    }


def task_schema() -> dict[str, Any]:
    s = {"type": "string"}
    return {"name": "task", "properties": {
        "id": s, "type": {"type": "string", "enum": ["import", "api_image_import"]},
        "status": {"type": "string", "enum": ["pending", "processing", "success",
                                              "failure"]},
        "input": {"type": "object"}, "result": {"type": ["null", "object"]},
        "owner": s, "message": s, "expires_at": {"type": ["null", "string"]},
        "created_at": s, "updated_at": s, "self": s, "schema": s}}


def tasks_schema() -> dict[str, Any]:
    return {"name": "tasks", "links": _COLLECTION_LINKS, "properties": {
        "tasks": {"type": "array", "items": task_schema()},
        "schema": {"type": "string"}, "first": {"type": "string"},
        "next": {"type": "string"}}}


def schema(name: str) -> dict[str, Any]:
    """The schema document ``/v2/schemas/<name>``; 404 for a name Glance does not serve."""
    top = {"image": image_schema, "images": images_schema, "member": member_schema,
           "members": members_schema, "task": task_schema, "tasks": tasks_schema}
    if name in top:
        return top[name]()
    if name.startswith("metadefs/"):
        found = _metadefs().get(name.removeprefix("metadefs/"))
        if found is not None:
            return found
    raise NotFound(f"No schema named {name}.")
