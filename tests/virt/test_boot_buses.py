"""Booting from the disk through the firmware, on every disk bus and both machines.

The disk is a hand-assembled MBR boot sector (``tests.bootimages``): it reaches the
console only if SeaBIOS found the disk on that bus and ran its code, so each case
proves the bus, its controller and the boot order.  No kernel anywhere.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

import pytest

from strato.virt.qemu import CdromSpec, DiskSpec, GuestSpec, QemuDriver
from strato.virt.qemu.errors import VirtError
from tests.bootimages import MBR_MARKER, UEFI_MARKER, blank_disk, boot_iso, mbr_disk, uefi_disk

TIMEOUT = 90.0


def _raw(path: Path, node: str, read_only: bool = False) -> dict:
    return {"driver": "raw", "node-name": node, "read-only": read_only,
            "file": {"driver": "file", "filename": str(path), "node-name": f"{node}-file"}}


def _spec(disk: Path, bus: str = "virtio", machine: str = "pc", **kw) -> GuestSpec:
    uuid = uuidlib.uuid4().hex
    return GuestSpec(uuid=uuid, name=f"boot-{uuid[:6]}", memory_mb=64, vcpus=1, kernel=None,
                     initramfs=None, cmdline="", machine=machine,
                     disks=(DiskSpec("vda", _raw(disk, "vda"), bus=bus),), **kw)


def _boot(driver: QemuDriver, spec: GuestSpec, marker: str = MBR_MARKER) -> str:
    driver.spawn(spec)
    driver.wait_for_console(spec.uuid, marker, 1, TIMEOUT)
    return spec.uuid


@pytest.fixture()
def disk(tmp_path: Path) -> Path:
    return mbr_disk(tmp_path / "mbr.raw")


@pytest.mark.parametrize(("bus", "machine", "scsi_model"), [
    ("scsi", "pc", "virtio-scsi"), ("scsi", "pc", "lsilogic"), ("ide", "pc", "virtio-scsi"),
    ("sata", "pc", "virtio-scsi"), ("usb", "pc", "virtio-scsi"),
    ("virtio", "q35", "virtio-scsi"), ("ide", "q35", "virtio-scsi"),
    ("sata", "pc-q35-7.2", "virtio-scsi"),
])
def test_boots_from_bus(driver: QemuDriver, disk: Path, bus: str, machine: str,
                        scsi_model: str) -> None:
    uuid = _boot(driver, _spec(disk, bus, machine, scsi_model=scsi_model))
    try:
        tree = json.dumps(driver.qmp(uuid, "qom-get", {
            "path": "/machine/peripheral/vda", "property": "type"}))
        want = {"virtio": "virtio-blk-pci", "scsi": "scsi-hd", "ide": "ide-hd",
                "sata": "ide-hd", "usb": "usb-storage"}[bus]
        assert want in tree
    finally:
        driver.destroy(uuid)


def test_virtio_pc_command_unchanged(driver: QemuDriver, disk: Path) -> None:
    """The plain case keeps its old command line: the disk at slot 4 of pci.0."""
    spec = _spec(disk)
    uuid = _boot(driver, spec)
    try:
        argv = Path(f"/proc/{driver.pid(uuid)}/cmdline").read_bytes().split(b"\0")
        assert b"virtio-blk-pci,id=vda,drive=vda,bus=pci.0,addr=0x4,bootindex=0" in argv
        assert not any(a.startswith((b"virtio-scsi", b"pcie-root-port")) for a in argv)
    finally:
        driver.destroy(uuid)


def test_cdrom_boots_after_a_blank_disk(driver: QemuDriver, tmp_path: Path) -> None:
    """The root disk is first in the boot order; when it cannot boot, the first CD-ROM
    does (El Torito ISOs on every CD-ROM bus at once, each seen with its type)."""
    blank = blank_disk(tmp_path / "blank.raw")
    cds = []
    for bus in ("sata", "scsi", "usb", "ide"):
        cds.append(CdromSpec(f"cd{bus}", boot_iso(tmp_path / f"{bus}.iso",
                                                  marker=f"CD-{bus.upper()}"), bus))
    spec = _spec(blank, cdroms=tuple(cds))
    uuid = _boot(driver, spec, "CD-SATA")
    try:
        for cd in cds:
            kind = json.dumps(driver.qmp(uuid, "qom-get", {
                "path": f"/machine/peripheral/{cd.device_id}", "property": "type"}))
            assert ("scsi-cd" if cd.bus in ("scsi", "usb") else "ide-cd") in kind
    finally:
        driver.destroy(uuid)


def test_rng_and_windows_clock(driver: QemuDriver, disk: Path) -> None:
    uuid = _boot(driver, _spec(disk, rng="virtio", os_type="windows"))
    try:
        argv = Path(f"/proc/{driver.pid(uuid)}/cmdline").read_bytes().split(b"\0")
        assert b"base=localtime" in argv
        devs = json.dumps(driver.qmp(uuid, "qom-list", {"path": "/machine/peripheral-anon"}))
        pci = json.dumps(driver.qmp(uuid, "query-pci"))
        assert "child<virtio-rng-pci>" in devs or '"device": 4101' in pci  # 1af4:1005
        assert "rng" in json.dumps(driver.qmp(uuid, "qom-list", {"path": "/objects"}))
    finally:
        driver.destroy(uuid)


def test_q35_hotplug_goes_to_a_root_port(driver: QemuDriver, disk: Path,
                                         tmp_path: Path) -> None:
    uuid = _boot(driver, _spec(disk, machine="q35"))
    try:
        extra = blank_disk(tmp_path / "extra.raw")
        driver.attach_disk(uuid, DiskSpec("vdb", _raw(extra, "vdb"), serial="hot1"))
        state = json.loads(driver.paths(uuid).state.read_text())
        assert state["ports"] == {"vdb": 0}
        bus = driver.qmp(uuid, "qom-get", {"path": "/machine/peripheral/vdb",
                                           "property": "parent_bus"})
        assert "rp0" in bus
        with pytest.raises(VirtError, match="cannot be hot-plugged"):
            driver.attach_disk(uuid, DiskSpec("sdc", _raw(extra, "sdc", True), bus="ide"))
        driver.stop(uuid, timeout=0)  # a restart keeps it on its root port
        driver.start(uuid)
        bus = driver.qmp(uuid, "qom-get", {"path": "/machine/peripheral/vdb",
                                           "property": "parent_bus"})
        assert "rp0" in bus
    finally:
        driver.destroy(uuid)


def test_scsi_hotplug_and_unplug(driver: QemuDriver, disk: Path, tmp_path: Path) -> None:
    uuid = _boot(driver, _spec(disk, bus="scsi"))
    try:
        extra = blank_disk(tmp_path / "extra.raw")
        driver.attach_disk(uuid, DiskSpec("sdb", _raw(extra, "sdb"), bus="scsi"))
        state = json.loads(driver.paths(uuid).state.read_text())
        assert state["units"] == {"vda": 0, "sdb": 1}
        driver.detach_disk(uuid, "sdb", timeout=30)
        state = json.loads(driver.paths(uuid).state.read_text())
        assert "sdb" not in state["units"]
    finally:
        driver.destroy(uuid)


def test_uefi_boots_grub_from_the_esp(driver: QemuDriver, tmp_path: Path) -> None:
    spec = _spec(uefi_disk(tmp_path / "uefi.raw"), firmware="uefi")
    uuid = _boot(driver, spec, UEFI_MARKER)
    try:
        assert driver.paths(uuid).efivars.exists()
    finally:
        driver.destroy(uuid)
