"""What a guest is made of (``GuestSpec``), power states, and disk node naming.

Node-name convention shared with the block store: a disk attached as device
``<device_id>`` is opened with ``image.blockdev_options(node_prefix(device_id))``, and
its live snapshots are prepared with ``image.prepare_live_snapshot(name,
node_prefix(device_id))``; the store then names every layer ``<prefix>-<layer id>``,
so the ``node-name`` it puts in the QMP command is the one QEMU has.
"""

from __future__ import annotations

import copy
import dataclasses
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


#: disk buses a guest disk can sit on (image property ``hw_disk_bus``)
DISK_BUSES = ("virtio", "scsi", "ide", "sata", "usb")
#: buses a CD-ROM can sit on (``hw_cdrom_bus``)
CDROM_BUSES = ("ide", "sata", "scsi", "usb")
#: firmware a guest boots with (``hw_firmware_type``)
FIRMWARES = ("bios", "uefi")


@dataclass(frozen=True)
class DiskSpec:
    """A disk: guest device id, nested ``-blockdev`` options, optional serial, bus.

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
    #: one of ``DISK_BUSES``
    bus: str = "virtio"
    #: I/O limits (QMP ``block_set_io_throttle`` arguments, see ``throttle``), applied
    #: at every start and at hot-plug; None: unlimited
    throttle: dict[str, int] | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if not isinstance(self.blockdev.get("node-name"), str):
            raise ValueError("blockdev options need a top-level node-name")
        if self.bus not in DISK_BUSES:
            raise ValueError(f"unknown disk bus {self.bus!r} (one of {', '.join(DISK_BUSES)})")

    @property
    def node(self) -> str:
        return str(self.blockdev["node-name"])

    @property
    def read_only(self) -> bool:
        return bool(self.blockdev.get("read-only", False))

    def to_dict(self) -> dict[str, Any]:
        out = {"device_id": self.device_id, "blockdev": self.blockdev, "serial": self.serial,
               "source": self.source, "bus": self.bus}
        if self.throttle:
            out["throttle"] = self.throttle
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiskSpec:
        return cls(d["device_id"], d["blockdev"], d.get("serial"), d.get("source"),
                   d.get("bus", "virtio"), d.get("throttle") or None)

    def with_blockdev(self, blockdev: dict[str, Any]) -> DiskSpec:
        return dataclasses.replace(self, blockdev=blockdev)


@dataclass(frozen=True)
class CdromSpec:
    """A read-only CD-ROM holding an ISO file (e.g. the config drive), on ``bus``."""

    device_id: str
    path: Path
    bus: str = "ide"

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if self.bus not in CDROM_BUSES:
            raise ValueError(f"unknown cdrom bus {self.bus!r} (one of {', '.join(CDROM_BUSES)})")

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "path": str(self.path), "bus": self.bus}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CdromSpec:
        return cls(d["device_id"], Path(d["path"]), d.get("bus", "ide"))


def nic_device_id(port_id: str) -> str:
    """The qdev id of a port's NIC (``nic-<port[:11]>``, like Nova's tap naming)."""
    return "nic-" + port_id[:11]


def nic_netdev_id(port_id: str) -> str:
    return "net-" + port_id[:11]


@dataclass(frozen=True)
class NicSpec:
    """A virtio NIC on a network port: QEMU gets the port's ``tap`` as an open fd (the
    driver asks its ``open_tap`` callback at every start), the guest sees ``mac``."""

    port_id: str
    network_id: str
    mac: str
    tap: str

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{10,63}$", self.port_id):
            raise ValueError(f"invalid port id {self.port_id!r}")
        if not re.match(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", self.mac):
            raise ValueError(f"invalid MAC {self.mac!r}")

    @property
    def device_id(self) -> str:
        return nic_device_id(self.port_id)

    @property
    def netdev_id(self) -> str:
        return nic_netdev_id(self.port_id)

    def to_dict(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "network_id": self.network_id, "mac": self.mac,
                "tap": self.tap}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NicSpec:
        return cls(d["port_id"], d["network_id"], d["mac"], d["tap"])


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to (re)create the QEMU process of one instance.

    Disks are in boot order: the first gets the lowest PCI slot, so it is ``vda``.
    ``kernel`` None boots from the first disk through the firmware (``firmware``:
    SeaBIOS or OVMF); a kernel means direct kernel boot (AKI/ARI images).
    """

    uuid: str
    name: str
    memory_mb: int
    vcpus: int
    kernel: Path | None
    initramfs: Path | None
    cmdline: str
    disks: tuple[DiskSpec, ...] = field(default_factory=tuple)
    #: extra QEMU arguments (e.g. a user-mode NIC), appended as given
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    #: one of ``FIRMWARES``
    firmware: str = "bios"
    #: QEMU machine type (``hw_machine_type``), e.g. ``pc`` or ``q35``
    machine: str = "pc"
    cdroms: tuple[CdromSpec, ...] = field(default_factory=tuple)
    #: ``hw_scsi_model`` controller for scsi disks/cdroms (``virtio-scsi`` or ``lsilogic``)
    scsi_model: str = "virtio-scsi"
    #: ``hw_rng_model`` (``virtio``) or None
    rng: str | None = None
    #: ``os_type`` (``windows`` keeps the RTC in local time, as Nova does)
    os_type: str | None = None
    #: NICs on network ports, in guest order (none: ``extra_args`` may carry the
    #: user-mode NIC instead)
    nics: tuple[NicSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.uuid):
            raise ValueError(f"invalid instance uuid {self.uuid!r}")
        ids = [d.device_id for d in self.disks] + [c.device_id for c in self.cdroms] + [
            n.device_id for n in self.nics]
        if self.firmware not in FIRMWARES:
            raise ValueError(f"unknown firmware {self.firmware!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate device ids in {ids}")
        if self.memory_mb < 16 or self.vcpus < 1:
            raise ValueError("memory_mb >= 16 and vcpus >= 1 required")

    def disk(self, device_id: str) -> DiskSpec | None:
        return next((d for d in self.disks if d.device_id == device_id), None)

    def with_disks(self, disks: list[DiskSpec] | tuple[DiskSpec, ...]) -> GuestSpec:
        return dataclasses.replace(self, disks=tuple(disks))

    @property
    def user_nic(self) -> bool:
        """The extra arguments carry QEMU's user-mode NIC (at slot 2)."""
        return any(a.startswith("user,") for a in self.extra_args)

    def nic(self, port_id: str) -> NicSpec | None:
        return next((n for n in self.nics if n.port_id == port_id), None)

    def with_nics(self, nics: list[NicSpec] | tuple[NicSpec, ...]) -> GuestSpec:
        return dataclasses.replace(self, nics=tuple(nics))

    def to_json(self) -> str:
        return json.dumps({
            "uuid": self.uuid, "name": self.name, "memory_mb": self.memory_mb,
            "vcpus": self.vcpus, "kernel": None if self.kernel is None else str(self.kernel),
            "initramfs": None if self.initramfs is None else str(self.initramfs),
            "cmdline": self.cmdline, "disks": [d.to_dict() for d in self.disks],
            "extra_args": list(self.extra_args), "firmware": self.firmware,
            "machine": self.machine, "cdroms": [c.to_dict() for c in self.cdroms],
            "scsi_model": self.scsi_model, "rng": self.rng, "os_type": self.os_type,
            "nics": [n.to_dict() for n in self.nics],
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GuestSpec:
        d = json.loads(text)
        return cls(
            uuid=d["uuid"], name=d["name"], memory_mb=d["memory_mb"], vcpus=d["vcpus"],
            kernel=None if d["kernel"] is None else Path(d["kernel"]),
            initramfs=None if d["initramfs"] is None else Path(d["initramfs"]),
            cmdline=d["cmdline"], disks=tuple(DiskSpec.from_dict(x) for x in d["disks"]),
            extra_args=tuple(d.get("extra_args", ())),
            firmware=d.get("firmware", "bios"), machine=d.get("machine", "pc"),
            cdroms=tuple(CdromSpec.from_dict(x) for x in d.get("cdroms", ())),
            scsi_model=d.get("scsi_model", "virtio-scsi"), rng=d.get("rng"),
            os_type=d.get("os_type"),
            nics=tuple(NicSpec.from_dict(x) for x in d.get("nics", ())),
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
