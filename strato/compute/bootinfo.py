"""Image properties -> how a guest boots, and what the API refuses before the 202.

An image with ``kernel_id`` boots its kernel directly (AKI/ARI); any other image boots
from its disk through the firmware.  The ``hw_*`` properties honoured (and
``os_type``) are validated at create time and stored on the instance
(``Instance.boot_meta``), so the compute host builds the guest from the values the
API accepted, whatever happens to the image later.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strato.compute.disks import image_format
from strato.db import Database
from strato.exceptions import BadRequest
from strato.image.models import Image as ImageRow
from strato.image.stores.base import ImageStore, NotFoundInStore
from strato.virt.qemu import devices
from strato.virt.qemu.process import OVMF_CODE
from strato.virt.qemu.spec import CDROM_BUSES, DISK_BUSES, FIRMWARES

#: property -> the values strato accepts (None: checked separately)
CHOICES: dict[str, tuple[str, ...] | None] = {
    "hw_firmware_type": FIRMWARES,
    "hw_machine_type": None,
    "hw_disk_bus": DISK_BUSES,
    "hw_cdrom_bus": CDROM_BUSES,
    "hw_scsi_model": tuple(devices.SCSI_CONTROLLERS),
    "hw_rng_model": ("virtio",),
    "os_type": ("linux", "windows"),
}
#: disk formats strato can put under a guest as they are
BOOTABLE_FORMATS = ("raw", "qcow2", "ami", "iso")
HEAD = 4096  # bytes of the guest disk read to decide whether it can boot
#: an ISO's boot record volume descriptor (sector 17) names El Torito when it boots
_EL_TORITO_AT = 17 * 2048
_EL_TORITO = b"\0CD001\1EL TORITO SPECIFICATION"
_QCOW2_SCAN_MAX = 64 << 20  # qcow2 metadata further into the file: not looked at


@dataclass(frozen=True)
class BootConfig:
    """The boot-related settings of one instance (defaults: SeaBIOS, pc, virtio)."""

    firmware: str = "bios"
    machine: str = "pc"
    disk_bus: str = "virtio"
    cdrom_bus: str = "ide"
    scsi_model: str = "virtio-scsi"
    rng: str | None = None
    os_type: str | None = None


def _invalid(key: str, value: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid image metadata. Error: {key} '{value}' {why}.")


def boot_meta(props: dict[str, Any], ovmf: Path = OVMF_CODE) -> dict[str, str]:
    """The boot properties of an image (or a volume's image metadata), validated:
    a 400 names the first bad one.  Case as Nova: values are lower-cased."""
    out: dict[str, str] = {}
    for key, allowed in CHOICES.items():
        raw = props.get(key)
        if raw is None or raw == "":
            continue
        value = str(raw).strip()
        if key != "hw_machine_type":
            value = value.lower()
        if allowed is not None and value not in allowed:
            raise _invalid(key, value, f"is not supported (one of {', '.join(allowed)})")
        out[key] = value
    machine = out.get("hw_machine_type")
    if machine is not None and machine not in devices.machine_types():
        raise _invalid("hw_machine_type", machine,
                       "is not a machine type of this cloud (pc, q35, or a versioned "
                       "pc-i440fx-X.Y / pc-q35-X.Y that QEMU lists)")
    if out.get("hw_firmware_type") == "uefi" and not ovmf.exists():
        raise BadRequest(f"UEFI is not supported: the firmware {ovmf} is not installed "
                         "on this cloud.")
    return out


def config(meta: dict[str, str] | None) -> BootConfig:
    """``BootConfig`` from stored ``boot_meta`` (Nova's defaults for what is unset:
    CD-ROMs on IDE for pc, on SATA for q35, which has no IDE)."""
    meta = meta or {}
    machine = meta.get("hw_machine_type", "pc")
    return BootConfig(
        firmware=meta.get("hw_firmware_type", "bios"), machine=machine,
        disk_bus=meta.get("hw_disk_bus", "virtio"),
        cdrom_bus=meta.get("hw_cdrom_bus", "sata" if devices.is_q35(machine) else "ide"),
        scsi_model=meta.get("hw_scsi_model", "virtio-scsi"),
        rng=meta.get("hw_rng_model"), os_type=meta.get("os_type"))


def is_iso(services: Any, image_id: str) -> bool:
    """An iso image boots as a CD-ROM behind a blank root disk (``disks.create_root``
    makes it blank; ``manager._spec`` adds the CD-ROM)."""
    return bool(image_id) and image_format(services, image_id) == "iso"


def cdrom_bus(boot_meta: dict[str, str] | None) -> str:
    """The bus an instance's CD-ROMs (config drive) go on: ``cdrom_bus(inst.boot_meta)``."""
    return config(boot_meta).cdrom_bus


def attach_bus(boot_meta: dict[str, str] | None) -> str:
    """The bus a volume attached to a running guest goes on: its disk bus when that
    hot-plugs (virtio, scsi); IDE, SATA and USB do not, so those guests get virtio
    (Nova's libvirt driver fails the attach there)."""
    bus = config(boot_meta).disk_bus
    return bus if bus in ("virtio", "scsi") else "virtio"


# ------------------------------------------------------------------ the image itself
def check_image(image: dict[str, Any]) -> None:
    """Refuse an image that can never be a boot disk (kernel/ramdisk images, formats
    strato does not run, images without data)."""
    fmt = image.get("disk_format") or "raw"
    if fmt in ("aki", "ari"):
        kind = "kernel" if fmt == "aki" else "ramdisk"
        raise BadRequest(f"Image {image['id']} is unacceptable: it is a {kind} image "
                         f"({fmt}); boot the machine image whose {kind}_id names it.")
    if fmt not in BOOTABLE_FORMATS:
        raise BadRequest(f"Image {image['id']} is unacceptable: disk_format {fmt} cannot "
                         "be booted; convert it to raw or qcow2.")
    if not image.get("size"):
        raise BadRequest(f"Image {image['id']} is unacceptable: it has no data.")


Reader = Callable[[int], bytes]  # the first n bytes of the stored image


def check_boot_image(image: dict[str, Any], meta: dict[str, str], db: Database,
                     store: ImageStore) -> None:
    """``check_image``, then, unless the image boots a kernel directly, look at the
    disk's first sectors (a few KiB read from the image store; for qcow2 through its
    cluster tables; for an iso its El Torito record) and refuse a disk the firmware
    cannot boot."""
    check_image(image)
    if image.get("kernel_id"):
        return
    with db.session(readonly=True) as session:
        row = session.get(ImageRow, image["id"])
        location = row.location if row is not None else None
    if not location:
        raise BadRequest(f"Image {image['id']} is unacceptable: it has no data.")
    size = int(image["size"])

    def read(n: int) -> bytes:
        try:
            return b"".join(store.read(location, n, chunk=1 << 20))
        except NotFoundInStore:
            raise BadRequest(f"Image {image['id']} is unacceptable: its data is missing "
                             "from the image store.") from None

    fmt = image.get("disk_format") or "raw"
    if fmt == "iso":
        record = read(min(size, _EL_TORITO_AT + len(_EL_TORITO)))[_EL_TORITO_AT:]
        why = None if record == _EL_TORITO else (
            "the iso has no El Torito boot record, so it cannot boot from a CD-ROM")
    else:
        head = disk_head(read, fmt, size)
        why = boot_problem(head, meta.get("hw_firmware_type", "bios")) if head else None
    if why:
        raise BadRequest(f"Image {image['id']} is unacceptable: {why}.")


def disk_head(read: Reader, fmt: str, size: int) -> bytes | None:
    """The first ``HEAD`` bytes the guest would see on this disk, or None when they
    cannot be found cheaply (a compressed or encrypted qcow2, metadata far in)."""
    if fmt != "qcow2":
        return read(min(size, HEAD)).ljust(HEAD, b"\0")
    return _qcow2_head(read, size)


def _qcow2_head(read: Reader, size: int) -> bytes | None:
    cache = bytearray()

    def at(off: int, n: int) -> bytes | None:
        if off + n > min(size, _QCOW2_SCAN_MAX):
            return None
        if off + n > len(cache):
            cache[:] = read(min(size, _QCOW2_SCAN_MAX, max(off + n, 2 * len(cache), 1 << 20)))
        got = bytes(cache[off:off + n])
        return got if len(got) == n else None

    hdr = at(0, 80)
    if hdr is None:
        return None
    version, = struct.unpack(">I", hdr[4:8])
    incompat = struct.unpack(">Q", hdr[72:80])[0] if version >= 3 else 0
    entry_size = 16 if incompat & (1 << 4) else 8  # extended L2 entries (subclusters)
    cluster_bits, = struct.unpack(">I", hdr[20:24])
    crypt, l1_size = struct.unpack(">II", hdr[32:40])
    l1_off, = struct.unpack(">Q", hdr[40:48])
    if crypt or not 9 <= cluster_bits <= 21:
        return None
    cluster = 1 << cluster_bits
    per_l2 = cluster // entry_size
    mask = 0x00FFFFFFFFFFFE00
    out = bytearray()
    for guest in range(0, HEAD, min(cluster, HEAD)):
        idx = guest // cluster
        l1i, l2i = divmod(idx, per_l2)
        data = bytes(min(cluster, HEAD))
        if l1i < l1_size:
            raw = at(l1_off + 8 * l1i, 8)
            if raw is None:
                return None
            l2_off = struct.unpack(">Q", raw)[0] & mask
            if l2_off:
                raw = at(l2_off + entry_size * l2i, 8)
                if raw is None:
                    return None
                entry = struct.unpack(">Q", raw)[0]
                if entry & (1 << 62):  # compressed cluster
                    return None
                if entry & mask and not entry & 1:
                    got = at((entry & mask) + guest % cluster, min(cluster, HEAD))
                    if got is None:
                        return None
                    data = got
        out += data
    return bytes(out[:HEAD])


def boot_problem(head: bytes, firmware: str) -> str | None:
    """Why a disk starting with ``head`` cannot boot under ``firmware``, or None.
    BIOS needs an MBR boot signature (or a GPT, whose protective MBR has one); UEFI
    needs a GPT or an MBR partition of type 0xEF (an EFI system partition)."""
    gpt = head[512:520] == b"EFI PART"
    mbr = head[510:512] == b"\x55\xaa"
    if firmware == "uefi":
        esp = mbr and any(head[446 + 16 * i + 4] == 0xEF for i in range(4))
        if not (gpt or esp):
            return ("it has neither a GPT nor an MBR partition of type 0xEF (EFI system "
                    "partition), so UEFI firmware cannot boot it")
        return None
    if not (gpt or mbr):
        return ("its first sector has no MBR boot signature (0x55AA) and there is no GPT: "
                "it has no bootloader, and it names no kernel_id to boot directly")
    return None
