"""``os:scheduler_hints`` (or ``OS-SCH-HNT:scheduler_hints``) of a server create, as
Nova's schema checks them; unknown keys pass (Nova relaxed the schema for out-of-tree
filters). The validated hints are kept on the server for its moves."""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

from strato.exceptions import BadRequest

KEYS = ("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints")
_CIDR = re.compile(r"^/[0-9a-f.:]+$")


def _bad(field: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {field}. Value: {why}")


def _uuid(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _bad(field, f"{value!r} is not of type 'string'")
    try:
        uuid.UUID(value)
    except ValueError:
        raise _bad(field, f"{value!r} is not a 'uuid'") from None
    return value


def _uuids(value: Any, field: str) -> str | list[str]:
    if isinstance(value, list):
        return [_uuid(v, field) for v in value]
    return _uuid(value, field)


def parse(body: Any) -> dict[str, Any]:
    """The hints of a create body (empty: none); 400 for a malformed one."""
    if not isinstance(body, dict):
        return {}
    key = next((k for k in KEYS if k in body), None)
    if key is None:
        return {}
    hints = body[key]
    if not isinstance(hints, dict):
        raise _bad(key, f"{hints!r} is not of type 'object'")
    out = dict(hints)
    if "group" in hints:
        # older clients send the group as a one-element list
        group = hints["group"]
        if isinstance(group, list) and len(group) == 1:
            group = group[0]
        out["group"] = _uuid(group, "group")
    for name in ("same_host", "different_host"):
        if name in hints:
            out[name] = _uuids(hints[name], name)
    if "query" in hints and not isinstance(hints["query"], (str, dict)):
        raise _bad("query", f"{hints['query']!r} is not of type 'string', 'object'")
    if "target_cell" in hints:
        cell = hints["target_cell"]
        if not isinstance(cell, str) or not 1 <= len(cell) <= 255 or cell != cell.strip():
            raise _bad("target_cell", f"{cell!r} is not a valid name")
    if "different_cell" in hints:
        cells = hints["different_cell"]
        if not isinstance(cells, (str, list)) or (
                isinstance(cells, list) and not all(isinstance(c, str) for c in cells)):
            raise _bad("different_cell", f"{cells!r} is not of type 'string', 'array'")
    if "build_near_host_ip" in hints:
        ip = hints["build_near_host_ip"]
        try:
            ipaddress.ip_address(ip if isinstance(ip, str) else "")
        except ValueError:
            raise _bad("build_near_host_ip", f"{ip!r} is not a 'ip-address'") from None
    if "cidr" in hints:
        cidr = hints["cidr"]
        if not isinstance(cidr, str) or not _CIDR.match(cidr):
            raise _bad("cidr", f"{cidr!r} does not match '^/[0-9a-f.:]+$'")
    return out
