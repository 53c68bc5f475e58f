"""Block I/O limits of a guest's drive (Cinder's front-end QoS specs).

Nova's libvirt driver maps a volume's ``qos_specs`` (in its connection info) to
libvirt's ``<iotune>``, which is QEMU's throttling of the drive's BlockBackend; here
the same keys go to QMP ``block_set_io_throttle``, addressed by the guest device's
qdev id.  The limit lives on the device's BlockBackend, so it stays when live
snapshots move the drive onto new overlays; the spec (``DiskSpec.throttle``) keeps
it so every start of QEMU applies it again.
"""

from __future__ import annotations

from typing import Any

from .errors import VirtError
from .qmp import Monitor

#: Cinder/Nova spec key -> ``block_set_io_throttle`` argument (libvirt's iotune names)
QOS_KEYS = {
    "total_bytes_sec": "bps", "read_bytes_sec": "bps_rd", "write_bytes_sec": "bps_wr",
    "total_iops_sec": "iops", "read_iops_sec": "iops_rd", "write_iops_sec": "iops_wr",
    "total_bytes_sec_max": "bps_max", "read_bytes_sec_max": "bps_rd_max",
    "write_bytes_sec_max": "bps_wr_max", "total_iops_sec_max": "iops_max",
    "read_iops_sec_max": "iops_rd_max", "write_iops_sec_max": "iops_wr_max",
    "total_bytes_sec_max_length": "bps_max_length",
    "read_bytes_sec_max_length": "bps_rd_max_length",
    "write_bytes_sec_max_length": "bps_wr_max_length",
    "total_iops_sec_max_length": "iops_max_length",
    "read_iops_sec_max_length": "iops_rd_max_length",
    "write_iops_sec_max_length": "iops_wr_max_length",
    "size_iops_sec": "iops_size",
}
#: the arguments ``block_set_io_throttle`` requires (0 = unlimited)
BASE = ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr")


def from_qos(specs: dict[str, Any] | None) -> dict[str, int] | None:
    """The throttle of a volume's front-end ``qos_specs`` (connection info), None when
    they limit nothing.  Keys QEMU has no use for are ignored, as Nova ignores them;
    a value that is not a non-negative integer is an error (the attach fails)."""
    if not specs:
        return None
    out: dict[str, int] = {}
    for key, arg in QOS_KEYS.items():
        value = specs.get(key)
        if value is None or value == "":
            continue
        try:
            number = int(str(value))
        except ValueError:
            raise VirtError(f"QoS spec {key}={value!r}: not an integer") from None
        if number < 0:
            raise VirtError(f"QoS spec {key}={value!r}: negative")
        if number:
            out[arg] = number
    if not any(out.get(k) for k in BASE):
        return None
    return out


def qdev_path(mon: Monitor, device_id: str) -> str:
    """The QOM path of the device that owns ``device_id``'s BlockBackend: for a
    virtio-blk-pci proxy it is its ``virtio-backend`` child (QMP ``query-block``)."""
    for dev in mon.execute("query-block"):
        qdev = str(dev.get("qdev") or "")
        parts = qdev.split("/")
        if qdev.startswith("/machine/peripheral/") and parts[3] == device_id:
            return qdev
    raise VirtError(f"no block device {device_id} in the guest")


def apply(mon: Monitor, device_id: str, throttle: dict[str, int] | None) -> None:
    """Set (or, with None, clear) the limits of guest device ``device_id``."""
    args: dict[str, Any] = {k: 0 for k in BASE}
    args.update(throttle or {})
    args["id"] = qdev_path(mon, device_id)
    mon.execute("block_set_io_throttle", args)
