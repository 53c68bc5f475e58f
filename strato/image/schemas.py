"""Glance v2 request bodies (api-ref: image v2, and Glance's /v2/schemas/image),
bounded to strato's columns.

``min_disk``/``min_ram`` are ``Integer`` columns (Glance: 0 to 2**31-1); names at
most 255 characters. Extra properties pass to ``strato.image.api``, which keeps
Glance's rules for them (strings, read-only and reserved names: 403).
"""

from __future__ import annotations

from typing import Any

from strato.exceptions import BadRequest
from strato.validation import INT32_MAX, Arr, Bool, Custom, Int, Obj, Schema, Str, invalid, show

VISIBILITIES = ("public", "private", "shared", "community")

# Core attributes a client may set, on create and in a patch.
CORE: dict[str, Schema] = {
    "name": Str(255, nullable=True),
    "id": Str(36),
    "visibility": Str(enum=VISIBILITIES),
    "protected": Bool(),
    "os_hidden": Bool(),
    "min_disk": Int(0, INT32_MAX),
    "min_ram": Int(0, INT32_MAX),
    "disk_format": Str(20, nullable=True),
    "container_format": Str(20, nullable=True),
    "owner": Str(64, nullable=True),
    "tags": Arr(Str(255), max_items=128),
}

CREATE_IMAGE = Obj(CORE)

_OP = Obj({"op": Str(enum=("add", "replace", "remove")), "path": Str(1024, min=2)},
          required=("op", "path"))


def _patch(value: Any, path: str) -> None:
    """A JSON patch: a list of add/replace/remove operations; the value of one on a
    core attribute is checked as that attribute."""
    if not isinstance(value, list):
        raise BadRequest("The request body must be a JSON-patch list of operations.")
    if len(value) > 1000:
        raise invalid(path, "at most 1000 operations are allowed")
    for n, op in enumerate(value):
        where = f"[{n}]"
        _OP(op, where)
        pointer = op["path"]
        if not pointer.startswith("/"):
            raise BadRequest(f"Invalid JSON pointer: {show(pointer)}.")
        key = pointer[1:]
        if op["op"] != "remove" and key in CORE and "value" in op:
            CORE[key](op["value"], key)
        if key == "tags/-" and op["op"] == "add":
            Str(255)(op.get("value"), "tags")


UPDATE_IMAGE = Custom(_patch)


def patch_v20(value: Any) -> Any:
    """The older media type (``application/openstack-images-v2.0-json-patch``) names
    the operation as the key: ``{"replace": "/name", "value": ...}``.  Rewrite each
    operation into the v2.1 form so one code path applies both; anything else is
    left for :data:`UPDATE_IMAGE` to refuse."""
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for op in value:
        if isinstance(op, dict) and "op" not in op and "path" not in op:
            names = [k for k in op if k in ("add", "replace", "remove")]
            if len(names) != 1:
                raise BadRequest(f"Invalid JSON-patch operation: {show(op)}: name exactly one "
                                 "of add, replace, remove.")
            name = names[0]
            if set(op) - {name, "value"}:
                raise BadRequest(f"Invalid JSON-patch operation: {show(op)}.")
            new: dict[str, Any] = {"op": name, "path": op[name]}
            if "value" in op:
                new["value"] = op["value"]
            out.append(new)
        else:
            out.append(op)
    return out

ADD_MEMBER = Obj({"member": Str(64, min=1)}, required=("member",))
UPDATE_MEMBER = Obj({"status": Str(enum=("pending", "accepted", "rejected"))},
                    required=("status",))


# The older media type's patch, checked as the v2.1 operations it stands for.
UPDATE_IMAGE_V20 = Custom(lambda value, path: _patch(patch_v20(value), path))
