"""Images with a bootloader boot (no kernel_id), with the ``hw_*`` properties honoured;
what cannot boot is refused with a 400 before the 202.

The disks are built here (``tests.bootimages``): an MBR boot sector that prints a
marker on COM1, the same disk as qcow2, and a GPT disk whose ESP holds GRUB for UEFI.
Seeing the marker through ``openstack console log show`` proves the firmware found
and ran the disk on the bus and machine asked for.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import open_engine
from tests.bootimages import (
    MBR_MARKER,
    UEFI_MARKER,
    blank_disk,
    boot_iso,
    mbr_disk,
    to_qcow2,
    uefi_disk,
)
from tests.compute.conftest import BOOT_TIMEOUT, Nova, wait_volume
from tests.support import Server

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _image(srv: Server, path: Path, fmt: str, *props: str) -> str:
    args = [a for p in props for a in ("--property", p)]
    image = srv.openstack_json("image", "create", "--file", str(path), "--disk-format", fmt,
                               "--container-format", "bare", *args,
                               f"boot-{uuid.uuid4().hex[:6]}")
    return str(image["id"])  # type: ignore[index]


def _console(srv: Server, sid: str, marker: str) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    text = ""
    while time.monotonic() < deadline:
        text = srv.openstack("console", "log", "show", sid).stdout
        if marker in text:
            return text
        time.sleep(1)
    raise AssertionError(f"{marker!r} not in the console of {sid}: {text[-2000:]!r}")


@pytest.fixture(scope="module")
def images(compute_server: Server, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, str]]:
    d = tmp_path_factory.mktemp("bootimg")
    raw = mbr_disk(d / "mbr.raw")
    out = {
        "mbr": _image(compute_server, raw, "raw"),
        "mbr_q35_scsi": _image(compute_server, to_qcow2(raw, d / "mbr.qcow2"), "qcow2",
                               "hw_disk_bus=scsi", "hw_machine_type=q35",
                               "hw_rng_model=virtio"),
        "uefi": _image(compute_server, uefi_disk(d / "uefi.raw"), "raw",
                       "hw_firmware_type=uefi"),
        "blank": _image(compute_server, blank_disk(d / "blank.raw"), "raw"),
        "blank_qcow2": _image(compute_server, to_qcow2(d / "blank.raw", d / "blank.qcow2"),
                              "qcow2"),
    }
    yield out
    for image_id in out.values():
        compute_server.openstack("image", "delete", image_id, check=False)


def _boot(srv: Server, image_id: str, marker: str) -> str:
    created = srv.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", "none",
                                 "--image", image_id, "--wait",
                                 f"disk-{uuid.uuid4().hex[:6]}")
    sid = str(created["id"])  # type: ignore[index]
    _console(srv, sid, marker)
    return sid


def test_bios_raw_image_boots_from_its_mbr(compute_server: Server, nova: Nova,
                                           images: dict[str, str]) -> None:
    sid = _boot(compute_server, images["mbr"], MBR_MARKER)
    try:
        out = nova.action(sid, {"os-getConsoleOutput": {"length": 5}}, expect=200).json()
        assert MBR_MARKER in out["output"]
        server = nova.server(sid)
        assert server["status"] == "ACTIVE" and server["image"]["id"] == images["mbr"]
    finally:
        compute_server.openstack("server", "delete", "--wait", sid)


def test_qcow2_image_on_scsi_and_q35(compute_server: Server, images: dict[str, str]) -> None:
    """The same boot sector as qcow2, with hw_disk_bus=scsi on a q35 machine and a
    virtio RNG: the QEMU command line has each, and the disk still boots."""
    sid = _boot(compute_server, images["mbr_q35_scsi"], MBR_MARKER)
    try:
        from strato.virt.qemu import QemuDriver

        drv = QemuDriver(compute_server.state / "instances")
        spec = drv.spec(sid)
        assert (spec.machine, spec.disks[0].bus, spec.rng, spec.kernel) == \
            ("q35", "scsi", "virtio", None)
        argv = Path(f"/proc/{drv.pid(sid)}/cmdline").read_bytes().split(b"\0")
        assert b"q35" in argv and b"virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x1b" in argv
        assert any(a.startswith(b"scsi-hd,id=vda,") and b"bootindex=0" in a for a in argv)
        assert any(a.startswith(b"virtio-rng-pci,") for a in argv)
    finally:
        compute_server.openstack("server", "delete", "--wait", sid)


def test_uefi_image_boots_grub(compute_server: Server, images: dict[str, str]) -> None:
    sid = _boot(compute_server, images["uefi"], UEFI_MARKER)
    compute_server.openstack("server", "delete", "--wait", sid)


def test_iso_boots_as_a_cdrom_behind_a_blank_disk(compute_server: Server, nova: Nova,
                                                  tmp_path: Path) -> None:
    """An El Torito iso (Nova's behaviour): a CD-ROM on the cdrom bus (sata, asked
    for here) after a blank root disk of the flavor's size; the firmware falls through
    the blank disk to the CD."""
    srv = compute_server
    image_id = _image(srv, boot_iso(tmp_path / "boot.iso", "STRATO-ISO-BOOT-OK"), "iso",
                      "hw_cdrom_bus=sata")
    sid = ""
    try:
        sid = _boot(srv, image_id, "STRATO-ISO-BOOT-OK")
        from strato.virt.qemu import QemuDriver

        spec = QemuDriver(srv.state / "instances").spec(sid)
        assert [(c.device_id, c.bus) for c in spec.cdroms] == [("cdrom0", "sata")]
        assert [d.device_id for d in spec.disks] == ["vda"]
        flavor = nova.req("GET", "/flavors/1").json()["flavor"]
        blocks = open_engine("local", root=srv.state / "blocks", repair=False)
        with blocks.open("vms", f"{sid}_disk") as disk:
            assert disk.size() == max(flavor["disk"], 1) << 30
    finally:
        if sid:
            srv.openstack("server", "delete", "--wait", sid)
        srv.openstack("image", "delete", image_id)


def test_boot_from_volume_keeps_the_image_properties(compute_server: Server, nova: Nova,
                                                     images: dict[str, str]) -> None:
    """A volume made from the scsi/q35 image carries its properties
    (volume_image_metadata); a server booted from it gets them."""
    srv = compute_server
    vol = srv.openstack_json("volume", "create", "--size", "1", "--image",
                             images["mbr_q35_scsi"], f"bootvol-{uuid.uuid4().hex[:6]}")
    vid = str(vol["id"])  # type: ignore[index]
    wait_volume(nova, vid, "available")
    r = nova.req("POST", "/servers", json={"server": {
        "name": "bfv-boot", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": vid, "source_type": "volume",
                                     "destination_type": "volume"}]}})
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    try:
        nova.wait(sid, "ACTIVE")
        _console(srv, sid, MBR_MARKER)
        from strato.virt.qemu import QemuDriver

        spec = QemuDriver(srv.state / "instances").spec(sid)
        assert (spec.machine, spec.disks[0].bus) == ("q35", "scsi")
    finally:
        nova.req("DELETE", f"/servers/{sid}")
        nova.wait(sid, "gone")
        srv.openstack("volume", "delete", vid)


# ----------------------------------------------------------------- refusals
def _usage(nova: Nova) -> tuple[list[str], dict]:
    ids = sorted(s["id"] for s in nova.req("GET", "/servers").json()["servers"])
    quota = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail").json()["quota_set"]
    return ids, {k: quota[k] for k in ("instances", "cores", "ram")}


def _refused(nova: Nova, image_id: str, *needles: str) -> None:
    before = _usage(nova)
    r = nova.req("POST", "/servers", json={"server": {
        "name": "refused", "flavorRef": "1", "networks": "none", "imageRef": image_id}})
    assert r.status_code == 400, r.text
    message = r.json()["badRequest"]["message"]
    for needle in needles:
        assert needle in message, message
    assert _usage(nova) == before


def _set_prop(nova: Nova, image_id: str, key: str, value: str | None) -> None:
    op = [{"op": "add", "path": f"/{key}", "value": value}] if value is not None \
        else [{"op": "remove", "path": f"/{key}"}]
    r = nova.c.patch(f"/image/v2/images/{image_id}", content=json.dumps(op), headers=PATCH)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("hw_firmware_type", "coreboot", "hw_firmware_type 'coreboot' is not supported"),
    ("hw_disk_bus", "floppy", "hw_disk_bus 'floppy' is not supported"),
    ("hw_cdrom_bus", "virtio", "hw_cdrom_bus 'virtio' is not supported"),
    ("hw_scsi_model", "buslogic", "hw_scsi_model 'buslogic' is not supported"),
    ("hw_machine_type", "microvm", "hw_machine_type 'microvm' is not a machine type"),
    ("hw_machine_type", "pc-q35-99.9", "hw_machine_type 'pc-q35-99.9' is not a machine"),
    ("hw_rng_model", "egd", "hw_rng_model 'egd' is not supported"),
    ("os_type", "plan9", "os_type 'plan9' is not supported"),
])
def test_invalid_boot_property_is_400(nova: Nova, images: dict[str, str], key: str,
                                      value: str, needle: str) -> None:
    _set_prop(nova, images["mbr"], key, value)
    try:
        _refused(nova, images["mbr"], "Invalid image metadata", needle)
    finally:
        _set_prop(nova, images["mbr"], key, None)


def test_unbootable_disks_are_400(nova: Nova, images: dict[str, str]) -> None:
    for key in ("blank", "blank_qcow2"):
        _refused(nova, images[key], f"Image {images[key]} is unacceptable",
                 "no MBR boot signature")
    _set_prop(nova, images["mbr"], "hw_firmware_type", "uefi")  # an MBR disk, no ESP
    try:
        _refused(nova, images["mbr"], "neither a GPT nor an MBR partition of type 0xEF")
    finally:
        _set_prop(nova, images["mbr"], "hw_firmware_type", None)


def test_kernel_vmdk_plain_iso_and_inactive_images_are_400(compute_server: Server, nova: Nova,
                                                tmp_path: Path) -> None:
    srv = compute_server
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\0" * 4096)
    made = []
    try:
        for fmt in ("aki", "ari"):
            image = srv.openstack_json("image", "create", "--file", str(kernel),
                                       "--disk-format", fmt, "--container-format", fmt,
                                       f"k-{fmt}")
            made.append(str(image["id"]))  # type: ignore[index]
            kind = "kernel" if fmt == "aki" else "ramdisk"
            _refused(nova, made[-1], f"it is a {kind} image ({fmt})")
        plain = tmp_path / "plain.iso"
        subprocess.run(["genisoimage", "-quiet", "-o", str(plain), str(tmp_path)],
                       check=True)
        made.append(_image(srv, plain, "iso"))
        _refused(nova, made[-1], "the iso has no El Torito boot record")
        vmdk = tmp_path / "d.vmdk"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk",
                        str(mbr_disk(tmp_path / "m.raw")), str(vmdk)], check=True)
        made.append(_image(srv, vmdk, "vmdk"))
        _refused(nova, made[-1], "disk_format vmdk cannot be booted")
        # the CLI without --file uploads its (empty) stdin: active, no data
        empty = srv.openstack_json("image", "create", "--disk-format", "raw",
                                   "--container-format", "bare", "empty-boot")
        made.append(str(empty["id"]))  # type: ignore[index]
        _refused(nova, made[-1], f"Image {made[-1]} is unacceptable: it has no data.")
        r = nova.c.post("/image/v2/images", json={"name": "queued-boot", "disk_format": "raw",
                                                  "container_format": "bare"})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        _refused(nova, made[-1], f"Image {made[-1]} is not active.")
    finally:
        for image_id in made:
            srv.openstack("image", "delete", image_id, check=False)
