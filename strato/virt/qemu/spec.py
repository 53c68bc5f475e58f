"""What a guest is made of (``GuestSpec``), power states, and disk node naming.

Node-name convention shared with the block store: a disk attached as device
``<device_id>`` is opened with ``image.blockdev_options(node_prefix(device_id))``, and
its live snapshots are prepared with ``image.prepare_live_snapshot(name,
node_prefix(device_id))``; the store then names every layer ``<prefix>-<layer id>``,
so the ``node-name`` it puts in the QMP command is the one QEMU has.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: qdev ids: a letter, then letters, digits, '-', '.', '_' (QEMU's id_wellformed).
_DEVICE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
#: node names are at most 31 characters; the store appends "-<16 hex>" and "-file".
_SHORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,8}$")


class PowerState(enum.IntEnum):
    """Nova's ``nova.compute.power_state`` values."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


#: QMP ``query-status`` status -> power state (anything unlisted is PAUSED: the
#: vCPUs are not running but the process is there).
QMP_STATUS = {
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "prelaunch": PowerState.PAUSED,
    "inmigrate": PowerState.PAUSED,
    "shutdown": PowerState.SHUTDOWN,
    "guest-panicked": PowerState.CRASHED,
    "internal-error": PowerState.CRASHED,
    "suspended": PowerState.SUSPENDED,  # ACPI S3 in the guest
}


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise ValueError(f"invalid device id {device_id!r} (letter first, then [A-Za-z0-9._-])")
    return device_id


def node_prefix(device_id: str) -> str:
    """The block store ``node_prefix`` for a device: the id itself when short
    (``vda`` -> ``vda``), else ``d`` + 8 hex digits of its SHA-1 (stable, fits 31 chars)."""
    check_device_id(device_id)
    if _SHORT_PREFIX.match(device_id):
        return device_id
    return "d" + hashlib.sha1(device_id.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class DiskSpec:
    """A virtio-blk disk: guest device id, nested ``-blockdev`` options, optional serial.

    ``blockdev`` is what ``Image.blockdev_options(node_prefix(device_id))`` returns; its
    top ``node-name`` is the drive; ``"read-only": True`` there makes a read-only disk.
    ``source`` (``"<pool>/<image>"`` in the block store) lets a driver with a resolver
    re-read ``blockdev`` from the store at every QEMU start: the store may have moved
    the image's top layer while the guest was off (an offline snapshot).
    """

    device_id: str
    blockdev: dict[str, Any]
    serial: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if not isinstance(self.blockdev.get("node-name"), str):
            raise ValueError("blockdev options need a top-level node-name")

    @property
    def node(self) -> str:
        return str(self.blockdev["node-name"])

    @property
    def read_only(self) -> bool:
        return bool(self.blockdev.get("read-only", False))

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "blockdev": self.blockdev, "serial": self.serial,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiskSpec:
        return cls(d["device_id"], d["blockdev"], d.get("serial"), d.get("source"))

    def with_blockdev(self, blockdev: dict[str, Any]) -> DiskSpec:
        return DiskSpec(self.device_id, blockdev, self.serial, self.source)


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to (re)create the QEMU process of one instance.

    Disks are in boot order: the first gets the lowest PCI slot, so it is ``vda``.
    """

    uuid: str
    name: str
    memory_mb: int
    vcpus: int
    kernel: Path
    initramfs: Path | None
    cmdline: str
    disks: tuple[DiskSpec, ...] = field(default_factory=tuple)
    #: extra QEMU arguments (e.g. a user-mode NIC), appended as given
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.uuid):
            raise ValueError(f"invalid instance uuid {self.uuid!r}")
        ids = [d.device_id for d in self.disks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate device ids in {ids}")
        if self.memory_mb < 16 or self.vcpus < 1:
            raise ValueError("memory_mb >= 16 and vcpus >= 1 required")

    def disk(self, device_id: str) -> DiskSpec | None:
        return next((d for d in self.disks if d.device_id == device_id), None)

    def with_disks(self, disks: list[DiskSpec] | tuple[DiskSpec, ...]) -> GuestSpec:
        return GuestSpec(self.uuid, self.name, self.memory_mb, self.vcpus, self.kernel,
                         self.initramfs, self.cmdline, tuple(disks), self.extra_args)

    def to_json(self) -> str:
        return json.dumps({
            "uuid": self.uuid, "name": self.name, "memory_mb": self.memory_mb,
            "vcpus": self.vcpus, "kernel": str(self.kernel),
            "initramfs": None if self.initramfs is None else str(self.initramfs),
            "cmdline": self.cmdline, "disks": [d.to_dict() for d in self.disks],
            "extra_args": list(self.extra_args),
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GuestSpec:
        d = json.loads(text)
        return cls(
            uuid=d["uuid"], name=d["name"], memory_mb=d["memory_mb"], vcpus=d["vcpus"],
            kernel=Path(d["kernel"]),
            initramfs=None if d["initramfs"] is None else Path(d["initramfs"]),
            cmdline=d["cmdline"], disks=tuple(DiskSpec.from_dict(x) for x in d["disks"]),
            extra_args=tuple(d.get("extra_args", ())),
        )


def overlay_options(old: dict[str, Any], overlay: Path, node: str) -> dict[str, Any]:
    """Blockdev options after a live snapshot put ``overlay`` (node ``node``) on top of
    ``old``: the same shape the local block store's ``blockdev_options`` gives."""
    below = copy.deepcopy(old)
    below["read-only"] = True
    return {
        "driver": "qcow2", "node-name": node,
        "file": {"driver": "file", "filename": str(overlay), "node-name": f"{node}-file"},
        "backing": below, "read-only": bool(old.get("read-only", False)),
    }
