"""Image service (Glance v2) response shapes, from the Image API v2 reference.

An image record is open: besides its core fields it carries the owner's extra
properties, always strings — so the image schemas type every core field exactly,
require those the reference always returns, and allow only string-valued extras.
"""

from __future__ import annotations

from typing import Any

from tests.api_schemas import (
    BOOLEAN,
    INTEGER,
    LINKS,
    NULLABLE_STRING,
    STRING,
    UUID,
    strict,
)

_NULL_INT: dict = {"type": ["integer", "null"]}
_TIME: dict = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
_STATUS: dict = {"type": "string", "enum": [
    "queued", "saving", "active", "killed", "deleted", "deactivated", "uploading",
    "importing", "pending_delete"]}

# Always present, whatever the image's state (null until known).
_CORE: dict[str, Any] = {
    "id": UUID, "name": NULLABLE_STRING, "status": _STATUS,
    "visibility": {"type": "string", "enum": ["public", "private", "shared", "community"]},
    "protected": BOOLEAN, "os_hidden": BOOLEAN, "owner": NULLABLE_STRING,
    "checksum": NULLABLE_STRING, "os_hash_algo": NULLABLE_STRING,
    "os_hash_value": NULLABLE_STRING, "size": _NULL_INT, "virtual_size": _NULL_INT,
    "min_disk": INTEGER, "min_ram": INTEGER, "disk_format": NULLABLE_STRING,
    "container_format": NULLABLE_STRING, "tags": {"type": "array", "items": STRING},
    "created_at": _TIME, "updated_at": _TIME,
    "self": {"type": "string", "pattern": "^/v2/images/[0-9a-f-]{36}$"},
    "file": {"type": "string", "pattern": "^/v2/images/[0-9a-f-]{36}/file$"},
    "schema": {"type": "string", "enum": ["/v2/schemas/image"]},
}
# Present only in some states or deployments (the reference marks them so).
_OPTIONAL: dict[str, Any] = {
    "stores": STRING,          # multi-store: once the image has data
    "direct_url": STRING,      # show_image_direct_url, once the image has data
    "locations": {"type": "array", "items": strict({"url": STRING, "metadata": {
        "type": "object"}}, optional=())},  # show_multiple_locations
}


def image(*, with_data: bool | None = None, direct_url: bool | None = None) -> dict:
    """An image; ``with_data`` True: ``stores`` must be there, False: must not (None:
    either); ``direct_url`` likewise."""
    props = {**_CORE, **_OPTIONAL}
    optional = tuple(_OPTIONAL)
    schema: dict[str, Any] = {
        "type": "object", "properties": props,
        "required": sorted(k for k in props if k not in optional),
        "additionalProperties": {"type": "string"},  # extra properties: strings only
    }
    forbidden: list[str] = []
    if with_data is True:
        schema["required"] = sorted([*schema["required"], "stores"])
    elif with_data is False:
        forbidden.append("stores")
    if direct_url is True:
        schema["required"] = sorted([*schema["required"], "direct_url"])
    elif direct_url is False:
        forbidden.append("direct_url")
    if forbidden:
        schema["not"] = {"anyOf": [{"required": [k]} for k in forbidden]}
    return schema


def images() -> dict:
    return strict({"images": {"type": "array", "items": image()},
                   "schema": {"type": "string", "enum": ["/v2/schemas/images"]},
                   "first": STRING,
                   "next": {"type": "string", "pattern": r"^/v2/images\?"}},
                  optional=("next",))


MEMBER = strict({"image_id": UUID, "member_id": STRING,
                 "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
                 "created_at": _TIME, "updated_at": _TIME,
                 "schema": {"type": "string", "enum": ["/v2/schemas/member"]}})
MEMBERS = strict({"members": {"type": "array", "items": MEMBER},
                  "schema": {"type": "string", "enum": ["/v2/schemas/members"]}})

IMPORT_INFO = strict({"import-methods": strict({
    "description": STRING, "type": {"type": "string", "enum": ["array"]},
    "value": {"type": "array", "items": STRING}})})

_STORE = {"id": STRING, "description": STRING, "default": BOOLEAN}
STORES = strict({"stores": {"type": "array", "items": strict(_STORE, optional=(
    "default",))}})
STORES_DETAIL = strict({"stores": {"type": "array", "items": strict({
    **_STORE, "type": STRING, "weight": INTEGER, "properties": {"type": "object"}},
    optional=("default",))}})

_LIMIT = strict({"limit": INTEGER, "usage": INTEGER})
USAGE = strict({"usage": strict({
    "image_size_total": _LIMIT, "image_count_total": _LIMIT,
    "image_stage_total": _LIMIT, "image_count_uploading": _LIMIT})})

TASK = strict({
    "id": UUID, "type": {"type": "string", "enum": ["api_image_import"]},
    "status": {"type": "string", "enum": ["pending", "processing", "success",
                                          "failure"]},
    "owner": STRING, "input": {"type": "object"},
    "result": {"type": ["object", "null"]}, "message": STRING,
    "expires_at": {"type": ["string", "null"]}, "created_at": _TIME,
    "updated_at": _TIME, "deleted_at": {"type": "null"}, "deleted": BOOLEAN,
    "image_id": UUID, "request_id": STRING, "user_id": STRING})
TASKS = strict({"tasks": {"type": "array", "items": TASK}})

# The tasks API (/v2/tasks): the list shows stubs, a show the whole task.
_TASK_STUB = {
    "id": UUID, "type": {"type": "string", "enum": ["api_image_import"]},
    "status": TASK["properties"]["status"], "owner": STRING, "created_at": _TIME,
    "updated_at": _TIME, "expires_at": STRING,
    "self": {"type": "string", "pattern": "^/v2/tasks/[0-9a-f-]{36}$"},
    "schema": {"type": "string", "enum": ["/v2/schemas/task"]}}
TASK_LIST = strict({"tasks": {"type": "array", "items": strict(
    _TASK_STUB, optional=("expires_at",))},
    "first": {"type": "string", "enum": ["/v2/tasks"]},
    "schema": {"type": "string", "enum": ["/v2/schemas/tasks"]},
    "next": STRING}, optional=("next",))
TASK_DOC = strict({**_TASK_STUB, "input": {"type": "object"},
                   "result": {"type": ["object", "null"]}, "message": STRING},
                  optional=("expires_at",))

# The metadefs catalog.
_RTYPE = strict({"name": STRING, "created_at": _TIME, "updated_at": _TIME})
RESOURCE_TYPES = strict({"resource_types": {"type": "array", "items": _RTYPE}})
ASSOCIATION = strict({"name": STRING, "prefix": STRING, "properties_target": STRING,
                      "created_at": _TIME, "updated_at": _TIME},
                     optional=("prefix", "properties_target"))
ASSOCIATIONS = strict({"resource_type_associations": {"type": "array",
                                                      "items": ASSOCIATION}})
PROPERTY = {"type": "object", "required": ["name", "title", "type"],
            "properties": {"name": STRING, "title": STRING, "type": STRING,
                           "description": STRING, "enum": {"type": "array"}}}
PROPERTIES = strict({"properties": {"type": "object", "additionalProperties": PROPERTY}})
OBJECT = strict({"name": STRING, "description": STRING,
                 "required": {"type": "array", "items": STRING},
                 "properties": {"type": "object", "additionalProperties": PROPERTY},
                 "created_at": _TIME, "updated_at": _TIME,
                 "self": {"type": "string", "pattern": "^/v2/metadefs/namespaces/"},
                 "schema": {"type": "string", "enum": ["/v2/schemas/metadefs/object"]}},
                optional=("description",))
OBJECTS = strict({"objects": {"type": "array", "items": OBJECT}, "schema": STRING})
TAG = strict({"name": STRING, "created_at": _TIME, "updated_at": _TIME})
TAGS = strict({"tags": {"type": "array", "items": TAG}})
_NAMESPACE = {
    "namespace": STRING, "display_name": STRING, "description": STRING,
    "visibility": {"type": "string", "enum": ["public", "private"]},
    "protected": BOOLEAN, "owner": STRING, "created_at": _TIME, "updated_at": _TIME,
    "self": {"type": "string", "pattern": "^/v2/metadefs/namespaces/"},
    "schema": {"type": "string", "enum": ["/v2/schemas/metadefs/namespace"]},
    "resource_type_associations": {"type": "array", "items": ASSOCIATION}}
_NS_OPTIONAL = ("display_name", "description", "owner", "resource_type_associations")
NAMESPACE = strict({**_NAMESPACE, "properties": PROPERTIES["properties"]["properties"],
                    "objects": {"type": "array", "items": OBJECT},
                    "tags": {"type": "array", "items": TAG}},
                   optional=(*_NS_OPTIONAL, "properties", "objects", "tags"))
NAMESPACES = strict({"namespaces": {"type": "array", "items": strict(
    _NAMESPACE, optional=_NS_OPTIONAL)},
    "first": STRING, "next": STRING,
    "schema": {"type": "string", "enum": ["/v2/schemas/metadefs/namespaces"]}},
    optional=("next",))

# What a client validates a /v2/schemas document by: a name and the properties.
SCHEMA_DOC = {"type": "object", "required": ["name", "properties"],
              "properties": {"name": STRING, "properties": {"type": "object"},
                             "links": {"type": "array"}}}

VERSIONS = strict({"versions": {"type": "array", "minItems": 1, "items": strict({
    "id": {"type": "string", "pattern": r"^v2\.\d+$"},
    "status": {"type": "string", "enum": ["CURRENT", "SUPPORTED"]},
    "links": LINKS})}})

# Glance's error body (webob's JSON rendering).
FAULT = strict({"code": {"type": "string", "pattern": r"^\d{3} "}, "title": STRING,
                "message": STRING})
