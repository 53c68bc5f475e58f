"""Checks of request bodies, shared by every resource: Neutron answers a wrong-typed or
unknown attribute with the same 400 wherever it appears."""

from __future__ import annotations

import ipaddress
from typing import Any

from strato.network.errors import BadRequest


def _body(body: Any, key: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Resource body required: a '{key}' object.")
    data = body[key]
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    for name, value in data.items():
        if (name == "id" or name.endswith("_id")) and name != "binding:host_id" and \
                value is not None and not isinstance(value, str):
            raise BadRequest(f"Invalid input for {name}. Reason: '{value}' is not a valid "
                             "UUID.")
    for name in required:
        if data.get(name) is None:
            raise BadRequest(f"Failed to parse request. Required attribute '{name}' not "
                             "specified")
    return data


def _str(data: dict, key: str, default: str = "", limit: int = 255) -> str:
    value = data.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not a valid "
                         "string.")
    if len(value) > limit:
        raise BadRequest(f"Invalid input for {key}. Reason: '{value[:20]}...' exceeds "
                         f"maximum length of {limit}.")
    return value


def _bool(data: dict, key: str, default: bool) -> bool:
    value = data.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not a valid "
                     "boolean value.")


def _id_list(data: dict, key: str) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"Invalid input for {key}. Reason: a list of ids is required.")
    return value


def _dict_list(data: dict, key: str) -> list[dict]:
    """A list of objects whose values are strings (pools, fixed IPs)."""
    value = data.get(key) or []
    if not isinstance(value, list) or not all(
            isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
            for v in value):
        raise BadRequest(f"Invalid input for {key}. Reason: a list of objects with string "
                         "values is required.")
    return value


def _ip(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not a valid IP "
                         "address.")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not a valid IP "
                         "address.") from None
