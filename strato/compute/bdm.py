"""``block_device_mapping_v2`` as clients send it (values may be strings) -> plain specs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strato.exceptions import BadRequest

SOURCES = ("image", "volume", "snapshot", "blank")


@dataclass
class Mapping:
    source_type: str
    destination_type: str
    uuid: str | None
    boot_index: int | None
    volume_size: int | None
    delete_on_termination: bool
    tag: str | None = None


def _int(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest(f"Invalid input for field/attribute {what}.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute {what}: {value!r}.") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on",
                                                            "false", "0", "no", "off", ""):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(value, int):
        return bool(value)
    raise BadRequest(f"Invalid input for field/attribute delete_on_termination: {value!r}.")


def parse(raw: Any) -> list[Mapping]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
        source = item.get("source_type", "blank" if not item.get("uuid") else None)
        if source not in SOURCES:
            raise BadRequest(f"Invalid source_type {source!r} in block_device_mapping_v2.")
        dest = item.get("destination_type") or ("local" if source in ("image", "blank")
                                                else "volume")
        if dest not in ("local", "volume"):
            raise BadRequest(f"Invalid destination_type {dest!r}.")
        uuid = item.get("uuid") or None
        if source != "blank" and not uuid:
            raise BadRequest(f"A block device of source_type {source} needs a uuid.")
        m = Mapping(source, dest, uuid, _int(item.get("boot_index"), "boot_index"),
                    _int(item.get("volume_size"), "volume_size"),
                    _bool(item.get("delete_on_termination", False)), item.get("tag"))
        if m.boot_index is not None and m.boot_index < 0:
            m.boot_index = None  # Nova: negative means "not bootable"
        if dest == "local" and not (source == "image" and m.boot_index == 0):
            raise BadRequest("Only the image root disk may be local; ephemeral and swap "
                             "disks are not supported.")
        if dest == "volume" and source in ("image", "blank") and not m.volume_size:
            raise BadRequest(f"A volume from {source} needs a volume_size.")
        out.append(m)
    boots = [m for m in out if m.boot_index == 0]
    if len(boots) > 1:
        raise BadRequest("Boot sequence for the instance and image/block device mapping "
                         "combination is not valid: more than one boot_index 0.")
    return out
