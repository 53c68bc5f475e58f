"""Strict response shapes, written from the OpenStack API references.

Every view strato returns is checked here against the fields the reference lists for
that call, role and microversion: no more (``additionalProperties: false``) and no fewer
(every listed field required unless the reference marks it optional). One module per
service (``compute.py``, ``volume.py``, ``image.py``, ``identity.py``, ``network.py``)
holds the schemas; tests call :func:`assert_shape`.
"""

from __future__ import annotations

from typing import Any

import jsonschema

# Reusable leaf types, as the references describe them.
STRING: dict = {"type": "string"}
NULLABLE_STRING: dict = {"type": ["string", "null"]}
INTEGER: dict = {"type": "integer"}
BOOLEAN: dict = {"type": "boolean"}
UUID: dict = {"type": "string", "pattern": "^[0-9a-fA-F-]{32,36}$"}
DATETIME: dict = {"type": "string", "format": "date-time"}
NULLABLE_DATETIME: dict = {"type": ["string", "null"]}
LINKS: dict = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["href", "rel"],
    "properties": {"href": STRING, "rel": STRING, "type": STRING}}}
METADATA: dict = {"type": "object", "additionalProperties": {"type": "string"}}


def strict(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict:
    """An object with exactly these fields: all required except ``optional``."""
    return {"type": "object", "additionalProperties": False,
            "properties": properties,
            "required": sorted(k for k in properties if k not in optional)}


def list_of(key: str, item: dict, links_key: str | None = None) -> dict:
    """``{key: [item, ...]}``, optionally with a ``<links_key>`` pagination list."""
    props: dict[str, Any] = {key: {"type": "array", "items": item}}
    optional: tuple[str, ...] = ()
    if links_key:
        props[links_key] = LINKS
        optional = (links_key,)
    return strict(props, optional)


def assert_shape(body: Any, schema: dict) -> None:
    """Fail with the first difference between ``body`` and ``schema``, said plainly."""
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "<root>"
        raise AssertionError(f"response shape differs from the API reference at {where}: "
                             f"{errors[0].message} ({len(errors)} difference(s))")
